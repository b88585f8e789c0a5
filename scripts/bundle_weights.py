"""Turn a training run's final checkpoint into the bundled default weights.

Floating-point tensors are stored as float16 (half the size: the compact model fits the
20 MB budget) and loaded back into the float32 network; provenance is kept and extended.
Prints the SHA-256 to record in ``CTSAM3DLib/bundled.py``.

Usage: python scripts/bundle_weights.py RUN_DIR/model.pt Resources/weights/ctsam3d_compact.pt
    [--cpp-mode MODE] [--cpp-min-agreement DICE]

``--cpp-mode network|geometric`` records the engine CPP mode the weights were measured best
with, ``--cpp-min-agreement`` the CPP slab-agreement threshold; sessions with the defaults
(``SessionConfig(cpp_mode="auto", cpp_min_agreement=None)``) then use them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from CTSAM3DLib.model.checkpoint import atomic_torch_save, read_checkpoint_file, sha256_of


def main(src: str, dst: str, cpp_mode: str | None = None, cpp_min_agreement: float | None = None) -> None:
    ckpt = read_checkpoint_file(src)
    if cpp_mode is not None:
        ckpt["cpp_mode"] = cpp_mode
    if cpp_min_agreement is not None:
        if not 0.0 <= cpp_min_agreement <= 1.0:
            raise SystemExit(f"--cpp-min-agreement is a Dice between 0 and 1, got {cpp_min_agreement}.")
        ckpt["cpp_min_agreement"] = cpp_min_agreement
    ckpt["model_state_dict"] = {k: v.half() if v.is_floating_point() else v
                                for k, v in ckpt["model_state_dict"].items()}
    ckpt["provenance"] = dict(ckpt.get("provenance", {}), stored_dtype="float16", bundled_from=Path(src).name)
    atomic_torch_save(ckpt, Path(dst))
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB, sha256 {sha256_of(dst)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--cpp-mode", choices=("network", "geometric"))
    parser.add_argument("--cpp-min-agreement", type=float)
    args = parser.parse_args()
    main(args.src, args.dst, args.cpp_mode, args.cpp_min_agreement)
