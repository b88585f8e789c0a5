"""``ctsam3d train``: train or fine-tune a network from a recipe file.

Usage::

    ctsam3d train --config configs/compact_cpu.yaml --data DIR [DIR ...] [--unlabeled DIR ...] --output RUN_DIR \\
        [--max-steps N] [--device cpu|cuda] [--resume] [--cache DIR] [--set KEY=VALUE ...]

Multi-process / multi-node runs go through ``torchrun`` (see `CTSAM3DLib.train.distributed`),
e.g. ``torchrun --standalone --nproc_per_node=8 -m CTSAM3DLib.cli.train --config ... --device cuda``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from CTSAM3DLib.io.datasets import DatasetError
from CTSAM3DLib.model.checkpoint import CheckpointError
from CTSAM3DLib.model.predictor import resolve_device
from CTSAM3DLib.train.config import TrainConfig, parse_overrides


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("train", help="train or fine-tune a CT-SAM3D network (Algorithm 1)",
                              description="Train or fine-tune a CT-SAM3D network from a YAML/TOML recipe.")
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="recipe file (.yaml/.yml/.toml), e.g. configs/compact_cpu.yaml")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="dataset folders: TotalSegmentator, nnU-Net/MSD or multilabel layout; label-only folders "
                        "with the same subject ids add extra structures")
    p.add_argument("--unlabeled", nargs="+", default=[], metavar="DIR",
                   help="folders of CTs without labels (NIfTI/NRRD/MHA files or DICOM sub-folders), trained on "
                        "through class-agnostic pseudo-structures (needs pseudo_ratio > 0); a scan of a validation "
                        "or test subject of --data is refused")
    p.add_argument("--output", required=True, metavar="RUN_DIR", help="run folder (checkpoints, metrics, logs)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after N steps in total (smoke runs); the schedule still follows the config")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default: cpu")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR exactly where it stopped")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="preprocessing cache folder (default RUN_DIR/cache); share it between runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config value (repeatable), e.g. --set lr=3e-4")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    """Execute ``train``; returns the process exit code (0 ok, 2 bad input)."""
    rank = int(os.environ.get("RANK", "0"))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from CTSAM3DLib.train.trainer import train  # heavy import after argument parsing

    try:
        config = TrainConfig.from_file(args.config)
        overrides = parse_overrides(args.overrides)
        if overrides:
            config = config.replace(**overrides)
        resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        print(f"ctsam3d train: error: {exc}", file=sys.stderr)
        return 2
    try:
        path = train(config, args.data, args.output, max_steps=args.max_steps, device=args.device,
                     resume=args.resume, cache_dir=args.cache, progress=not args.no_progress,
                     unlabeled_dirs=args.unlabeled)
    except (ValueError, DatasetError, CheckpointError, FileNotFoundError, FloatingPointError) as exc:
        print(f"ctsam3d train: error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"Final checkpoint: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m CTSAM3DLib.cli.train``, used with torchrun)."""
    parser = argparse.ArgumentParser(prog="ctsam3d-train", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
