"""Variant registry: the release's four ResT-v2 sizes and our compact CPU variant."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monai.networks.layers import Norm
from monai.networks.nets import UNet

from CTSAM3DLib.model.ctsam3d import CTSAM3D
from CTSAM3DLib.model.decoder import GEODESIC_PROMPT_CHANNELS, DecoderConfig, PSAPDecoder
from CTSAM3DLib.model.encoder import EncoderConfig, ResTEncoder

# Channel widths of the decoder inputs (channel mappers) in the release.
_RELEASE_MAPPED = (128, 128, 128, 256)
# Heads per stage shared by the release's 96-wide variants.
_HEADS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Variant:
    """Everything needed to build one network variant."""

    encoder: EncoderConfig
    decoder: DecoderConfig
    cpp_channels: tuple[int, ...]
    cpp_res_units: int
    cpp_scale: int


def _release(dims: tuple[int, int, int, int], depths: tuple[int, int, int, int],
             heads: tuple[int, int, int, int] = _HEADS) -> Variant:
    return Variant(EncoderConfig(dims, depths, heads, _RELEASE_MAPPED), DecoderConfig.release(),
                   (16, 32, 64, 128, 256), 2, 1)


_COMPACT_ENCODER = EncoderConfig((32, 64, 128, 256), (1, 1, 2, 1), _HEADS, (16, 32, 64, 128))

# Name -> variant. "compact" is ours: same interfaces, ~30x cheaper decoder, CPP at half resolution;
# "compact_geo" is "compact" whose decoder also reads geodesic click maps (`prompts.geodesic`);
# "compact_geo_skip" also adds them, weighted, to its output logits (`decoder.PSAPDecoder`).
VARIANTS: dict[str, Variant] = {
    "restv2_tiny": _release((96, 192, 384, 768), (1, 2, 6, 2)),
    "restv2_small": _release((96, 192, 384, 768), (1, 2, 12, 2)),
    "restv2_base": _release((96, 192, 384, 768), (1, 3, 16, 3)),
    "restv2_large": _release((128, 256, 512, 1024), (2, 3, 16, 2), (2, 4, 8, 16)),
    "compact": Variant(_COMPACT_ENCODER, DecoderConfig.compact(), (8, 16, 32, 64), 1, 2),
    "compact_geo": Variant(_COMPACT_ENCODER, DecoderConfig.compact(GEODESIC_PROMPT_CHANNELS), (8, 16, 32, 64), 1, 2),
    "compact_geo_skip": Variant(_COMPACT_ENCODER, DecoderConfig.compact(GEODESIC_PROMPT_CHANNELS, geodesic_skip=True),
                                (8, 16, 32, 64), 1, 2),
}
# The variant used by the bundled default weights.
DEFAULT_VARIANT = "compact_geo_skip"


def build_model(variant: str = DEFAULT_VARIANT) -> CTSAM3D:
    """Return a randomly initialised ``CTSAM3D`` of the named variant.

    Raises:
        ValueError: unknown variant name.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    v = VARIANTS[variant]
    cpp = UNet(spatial_dims=3, in_channels=3, out_channels=1, channels=v.cpp_channels,
               strides=(2,) * (len(v.cpp_channels) - 1), num_res_units=v.cpp_res_units, norm=Norm.INSTANCE)
    return CTSAM3D(ResTEncoder(v.encoder), PSAPDecoder(v.decoder), cpp, cpp_scale=v.cpp_scale)


# New weights that `grown` keeps at their built value rather than zero: a measured prior
# (`decoder.GEODESIC_SKIP_START`), which the training loss alone did not find from zero.
PRIOR_STARTED = frozenset({"mask_decoder.geodesic_skip"})


def grown(model: CTSAM3D, variant: str) -> CTSAM3D:
    """A ``variant`` network holding ``model``'s weights, for a variant that only adds layers.

    The added layers (the geodesic-map convolutions of ``compact_geo`` on a ``compact`` network)
    start at zero, so the new network predicts exactly what ``model`` did until training teaches
    it to use them; the weights in `PRIOR_STARTED` (the logit skip of ``compact_geo_skip`` on a
    ``compact_geo`` network) start at their measured prior instead.

    Raises:
        ValueError: ``variant`` lacks one of ``model``'s weights or has it in another shape.
    """
    target = build_model(variant)
    own, src = target.state_dict(), model.state_dict()
    missing = sorted(set(src) - set(own))
    wrong = sorted(k for k in set(src) & set(own) if src[k].shape != own[k].shape)
    if missing or wrong:
        raise ValueError(f"variant {variant!r} is not this network plus new layers: "
                         f"{len(missing)} of its weights are missing ({missing[:2]}), {len(wrong)} differ in shape "
                         f"({wrong[:2]})")
    state = {k: src[k] if k in src else v if k in PRIOR_STARTED else torch.zeros_like(v) for k, v in own.items()}
    target.load_state_dict(state, strict=True)
    return target
