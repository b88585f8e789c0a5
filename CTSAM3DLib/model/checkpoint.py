"""Checkpoints: our format and the official release's ``params.pth``, loaded safely.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint can never run
code. The release's ``config.py`` (which holds the intensity window) is parsed with
``ast``, never executed.

Our format (``FORMAT_NAME``, version ``FORMAT_VERSION``) is a dict of plain types::

    {"format": "ctsam3d", "format_version": 1, "variant": "compact",
     "window_hu": [min, max], "model_state_dict": {...}, "provenance": {...},
     "cpp_mode": "geometric"}   # optional: the engine's CPP mode the weights are best with
"""

from __future__ import annotations

import ast
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from CTSAM3DLib.io.atomic import atomic_write
from CTSAM3DLib.model.build import VARIANTS, build_model
from CTSAM3DLib.model.ctsam3d import CTSAM3D
from CTSAM3DLib.model.decoder import GEODESIC_PROMPT_CHANNELS, PROMPT_CHANNELS

# Marker stored in our checkpoints.
FORMAT_NAME = "ctsam3d"
# Version of our checkpoint layout; bump on incompatible changes.
FORMAT_VERSION = 1
# Most self-refinement passes a checkpoint may recommend (`SessionConfig.refine_passes`); more is taken as damage.
MAX_REFINE_PASSES = 8
# Release keys that the model does not use (SAM-style Fourier matrix), ignored at load.
_UNUSED_RELEASE_PREFIXES = ("prompt_encoder.",)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (corrupt, unknown layout, bad checksum)."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``, turning failures into ``CheckpointError``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Checkpoint not found: {p}. Give the path of a .pt/.pth file.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means unusable
        raise CheckpointError(
            f"Cannot read checkpoint {p}: the file is corrupt, truncated or not a PyTorch "
            f"checkpoint, or it needs code execution to load, which is refused ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})."
        ) from exc
    if not isinstance(obj, Mapping) or "model_state_dict" not in obj:
        raise CheckpointError(
            f"Checkpoint {p} has an unknown layout: expected a dict with 'model_state_dict' "
            "(our format or the official CT-SAM3D params.pth)."
        )
    return dict(obj)


def detect_variant(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the variant whose shapes match ``state_dict`` (from its own tensor shapes)."""
    try:
        dims = tuple(int(state_dict[f"image_encoder.{k}"].shape[0]) for k in
                     ("stem.proj.6.weight", "patch_2.proj.weight", "patch_3.proj.weight", "patch_4.proj.weight"))
    except KeyError as exc:
        raise CheckpointError(f"Checkpoint has an unknown layout: no image encoder key {exc}.") from None
    depths = tuple(
        len({k.split(".")[2] for k in state_dict if k.startswith(f"image_encoder.stage{i}.")}) for i in range(1, 5)
    )
    mapped = int(state_dict.get("image_encoder.channel_mapper1.weight", torch.empty(0)).shape[0])
    prompt_channels = GEODESIC_PROMPT_CHANNELS if any(".mlp_geodesic." in k for k in state_dict) else PROMPT_CHANNELS
    skip = "mask_decoder.geodesic_skip" in state_dict
    for name, v in VARIANTS.items():
        if (v.encoder.embed_dims == dims and v.encoder.depths == depths and v.encoder.out_channels[0] == mapped
                and v.decoder.prompt_channels == prompt_channels and v.decoder.geodesic_skip == skip):
            return name
    raise CheckpointError(f"Checkpoint has an unknown layout: encoder widths {dims}, depths {depths} match no variant "
                          f"of {sorted(VARIANTS)}.")


def state_dict_into(model: CTSAM3D, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load ``state_dict`` strictly (release-only unused keys are dropped), with a clear error."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith(_UNUSED_RELEASE_PREFIXES)}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(
            "Checkpoint does not fit the model: "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} with wrong shapes {wrong[:3]}."
        )
    model.load_state_dict(sd, strict=True)


def parse_release_window(config_py: str | Path) -> tuple[float, float]:
    """Read ``normalization_params.min_value/max_value`` from a release ``config.py`` without executing it.

    Accepts attribute assignments (``cfg.dataset.normalization_params.min_value = -1000``),
    keyword calls (``dict(min_value=..., max_value=...)``) and dict literals.
    """
    try:
        tree = ast.parse(Path(config_py).read_text(encoding="utf-8", errors="replace"))
    except SyntaxError as exc:
        raise CheckpointError(f"Cannot parse {config_py}: {exc}") from exc
    found: dict[str, float] = {}

    def take(name: str | None, node: ast.AST) -> None:
        if name in ("min_value", "max_value"):
            try:
                found[name] = float(ast.literal_eval(node))
            except (ValueError, TypeError, SyntaxError):
                pass

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                take(t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", None), node.value)
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                take(kw.arg, kw.value)
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                take(k.value if isinstance(k, ast.Constant) and isinstance(k.value, str) else None, v)
    if set(found) != {"min_value", "max_value"}:
        raise CheckpointError(f"{config_py} has no usable normalization_params.min_value/max_value.")
    return check_window((found["min_value"], found["max_value"]), str(config_py))


def save_checkpoint(path: str | Path, model: CTSAM3D, variant: str, window_hu: tuple[float, float],
                    provenance: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> None:
    """Write our checkpoint format atomically (temporary file, then ``os.replace``)."""
    payload: dict[str, Any] = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "variant": variant,
        "window_hu": [float(window_hu[0]), float(window_hu[1])],
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": dict(provenance or {}),
    }
    payload.update(extra or {})
    atomic_torch_save(payload, Path(path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through `CTSAM3DLib.io.atomic` (never a half file; replaces ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp), overwrite=True)


def check_window(window_hu: Any, where: str) -> tuple[float, float]:
    """Return ``(min, max)`` HU as floats, refusing non-finite, inverted or malformed windows.

    Raises:
        CheckpointError: naming ``where`` (the checkpoint or option the window came from).
    """
    try:
        lo, hi = (float(v) for v in window_hu)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: the HU window must be two numbers [min, max], got {window_hu!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise CheckpointError(f"{where}: the HU window [{lo:g}, {hi:g}] is unusable; it needs finite values with "
                              "min below max (e.g. [-1000, 1000]).")
    return lo, hi


def load_network(path: str | Path, window_hu: tuple[float, float] | None = None
                 ) -> tuple[CTSAM3D, str, tuple[float, float], dict[str, Any]]:
    """Build the network stored in ``path`` (our format or the release's ``params.pth``).

    Returns:
        ``(model, variant, window_hu, info)``; ``info`` holds provenance and the format.

    Raises:
        CheckpointError: unreadable, unknown layout, or a release checkpoint whose window is
            neither given nor found in a ``config.py`` next to it.
    """
    ckpt = read_checkpoint_file(path)
    sd = ckpt["model_state_dict"]
    is_ours = ckpt.get("format") == FORMAT_NAME
    if is_ours and int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} uses checkpoint format v{ckpt['format_version']}; this CTSAM3DLib "
                              f"reads up to v{FORMAT_VERSION}. Upgrade CTSAM3DLib.")
    missing = [k for k in ("variant", "window_hu") if is_ours and k not in ckpt]
    if missing:
        raise CheckpointError(f"Checkpoint {path} lacks {' and '.join(repr(k) for k in missing)}: it is damaged or "
                              "was not written by CTSAM3DLib's save_checkpoint.")
    variant = str(ckpt["variant"]) if is_ours else detect_variant(sd)
    if variant not in VARIANTS:
        raise CheckpointError(f"{path} names unknown variant {variant!r}.")
    if window_hu is None:
        window = check_window(ckpt["window_hu"], f"Checkpoint {path}") if is_ours else _release_window(Path(path))
    else:
        window = check_window(window_hu, "window_hu")
    model = build_model(variant)
    state_dict_into(model, sd)
    info = {"format": FORMAT_NAME if is_ours else "release", "provenance": dict(ckpt.get("provenance", {}))}
    if is_ours and ckpt.get("cpp_mode") in ("network", "geometric"):
        info["cpp_mode"] = str(ckpt["cpp_mode"])  # the engine's CPP mode these weights were measured best with
    agreement = ckpt.get("cpp_min_agreement") if is_ours else None
    if isinstance(agreement, (int, float)) and not isinstance(agreement, bool) and 0.0 <= agreement <= 1.0:
        info["cpp_min_agreement"] = float(agreement)  # and the CPP slab-agreement threshold
    passes = ckpt.get("refine_passes") if is_ours else None
    if isinstance(passes, int) and not isinstance(passes, bool) and 0 <= passes <= MAX_REFINE_PASSES:
        info["refine_passes"] = passes  # and the self-refinement passes per network call
    return model.eval(), variant, window, info


def _release_window(path: Path) -> tuple[float, float]:
    cfg = path.with_name("config.py")
    if not cfg.is_file():
        raise CheckpointError(
            f"{path} is an official CT-SAM3D checkpoint, whose intensity window lives in a config.py next to it, "
            f"but {cfg} does not exist. Put the release's config.py beside params.pth, or give the window "
            "explicitly (CLI: --window MIN,MAX in HU; Python: load_model(path, window_hu=(min, max)))."
        )
    return parse_release_window(cfg)
