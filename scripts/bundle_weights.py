"""Turn a training run's final checkpoint into the bundled default weights.

Floating-point tensors are stored as float16 (half the size: the compact model fits the
20 MB budget) and loaded back into the float32 network; provenance is kept and extended.
Prints the SHA-256 to record in ``CTSAM3DLib/bundled.py``.

Usage: python scripts/bundle_weights.py RUN_DIR/model.pt Resources/weights/ctsam3d_compact.pt
    [--cpp-mode MODE] [--cpp-min-agreement DICE] [--refine-passes N] [--geodesic-skip W_P,W_N]

``--cpp-mode network|geometric`` records the engine CPP mode the weights were measured best
with, ``--cpp-min-agreement`` the CPP slab-agreement threshold, ``--refine-passes`` the
self-refinement passes per network call; sessions with the defaults (``SessionConfig(cpp_mode=
"auto", cpp_min_agreement=None, refine_passes=None)``) then use them. A source that is itself
bundled (e.g. to record a new engine setting) keeps its ``bundled_from``.

``--geodesic-skip`` sets a ``compact_geo_skip`` network's two logit-skip weights (on Gp, Gn), a
calibration chosen on the validation split: training pulls ``w_p`` down, because the under-filled
voxels far from a click sit at saturated negative logits and give it no gradient (docs/experiments/,
stages 12 and 14). The trained values are kept in the provenance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from CTSAM3DLib.cli.segment import parse_number_pair
from CTSAM3DLib.model.checkpoint import (MAX_REFINE_PASSES, CheckpointError, atomic_torch_save, read_checkpoint_file,
                                         sha256_of)
from CTSAM3DLib.model.decoder import GEODESIC_SKIP_GAIN

SKIP_KEY = "mask_decoder.geodesic_skip"


def main(src: str, dst: str, cpp_mode: str | None = None, cpp_min_agreement: float | None = None,
         geodesic_skip: tuple[float, float] | None = None, refine_passes: int | None = None) -> None:
    try:
        ckpt = read_checkpoint_file(src)
    except CheckpointError as exc:
        raise SystemExit(str(exc)) from None
    calibrated: dict[str, list[float]] = {}
    if geodesic_skip is not None:
        trained = ckpt["model_state_dict"].get(SKIP_KEY)
        if trained is None:
            raise SystemExit(f"--geodesic-skip: {src} has no geodesic logit skip (variant "
                             f"{ckpt.get('variant', 'unknown')!r}; only compact_geo_skip has one).")
        ckpt["model_state_dict"][SKIP_KEY] = torch.tensor(geodesic_skip, dtype=trained.dtype) / GEODESIC_SKIP_GAIN
        calibrated = {"geodesic_skip_trained": [round(float(v) * GEODESIC_SKIP_GAIN, 4) for v in trained],
                      "geodesic_skip_set": [float(v) for v in geodesic_skip]}
    if cpp_mode is not None:
        ckpt["cpp_mode"] = cpp_mode
    if cpp_min_agreement is not None:
        if not 0.0 <= cpp_min_agreement <= 1.0:
            raise SystemExit(f"--cpp-min-agreement is a Dice between 0 and 1, got {cpp_min_agreement}.")
        ckpt["cpp_min_agreement"] = cpp_min_agreement
    if refine_passes is not None:
        if not 0 <= refine_passes <= MAX_REFINE_PASSES:
            raise SystemExit(f"--refine-passes must be between 0 and {MAX_REFINE_PASSES}, got {refine_passes}.")
        ckpt["refine_passes"] = refine_passes
    ckpt["model_state_dict"] = {k: v.half() if v.is_floating_point() else v
                                for k, v in ckpt["model_state_dict"].items()}
    provenance = ckpt.get("provenance", {})
    ckpt["provenance"] = dict(provenance, stored_dtype="float16",
                              bundled_from=provenance.get("bundled_from", Path(src).name), **calibrated)
    atomic_torch_save(ckpt, Path(dst))
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB, sha256 {sha256_of(dst)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--cpp-mode", choices=("network", "geometric"))
    parser.add_argument("--cpp-min-agreement", type=float)
    parser.add_argument("--refine-passes", type=int)
    parser.add_argument("--geodesic-skip", metavar="W_P,W_N",
                        type=lambda text: parse_number_pair(text, "skip weights W_P,W_N (e.g. 5,-1)"))
    args = parser.parse_args()
    main(args.src, args.dst, args.cpp_mode, args.cpp_min_agreement, args.geodesic_skip, args.refine_passes)
