"""``ctsam3d segment``: one image, a few clicks, one mask on the input grid."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from CTSAM3DLib.engine.planning import (DEFAULT_MAX_PATCHES, LARGE_ORGAN_REACH_DEPTH, SPREAD_NEGATIVE_DEPTH,
                                        SPREAD_POSITIVE_DEPTH)
from CTSAM3DLib.io.points import PointSpec, parse_point_arg, read_points_file

if TYPE_CHECKING:
    from CTSAM3DLib.engine.progress import ClickProgress
    from CTSAM3DLib.engine.session import Session

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``segment``."""
    p = subparsers.add_parser("segment", help="segment one structure from clicks",
                              description="Segment one structure of a CT from positive/negative clicks. Points are "
                                          "applied in order, as a user would click them.")
    p.add_argument("image", help="CT file (NIfTI, NRRD, MHA, ...) or DICOM series folder")
    p.add_argument("--point", action="append", default=[], metavar="X,Y,Z[,+|-]",
                   help="a click: mm in the --coords frame (voxel indices for ijk), negative numbers allowed; '+' "
                        "(default) foreground, '-' background; repeatable")
    p.add_argument("--points-file", help="Slicer .mrk.json / .fcsv, plain JSON or CSV file of clicks (formats: "
                                         "README.md, section 'Command line')")
    p.add_argument("--coords", choices=("ras", "lps", "ijk"), default="ras",
                   help="frame of --point values and of files without their own (default: ras, Slicer's world, mm)")
    add_model_args(p)
    add_cpp_args(p)
    p.add_argument("--output", required=True, help="output mask (uint8, input grid): .nii.gz, .nii, .nrrd, .seg.nrrd "
                                                   "or .mha")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a model."""
    p.add_argument("--checkpoint", help="our checkpoint or the authors' params.pth (default: bundled weights)")
    p.add_argument("--window", type=parse_window, metavar="MIN,MAX",
                   help="intensity window in HU, e.g. -1000,1000 (needed for a params.pth without config.py; "
                        "default: the checkpoint's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: %(default)s)")


def set_threads(threads: int | None) -> None:
    """Apply a ``--threads`` option: torch's CPU threads for this process (None: leave torch's default).

    Raises:
        ValueError: fewer than 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}.")
    import torch  # here, so that --help stays fast

    torch.set_num_threads(threads)


def add_cpp_args(p: argparse.ArgumentParser) -> None:
    """CPP expansion options shared by ``segment`` and ``evaluate`` (read back with `cpp_settings`)."""
    p.add_argument("--no-cpp", action="store_true", help="do not expand clicks into neighbouring patches")
    p.add_argument("--max-patches", type=int, default=DEFAULT_MAX_PATCHES, metavar="N",
                   help="most 64^3 patches (96 mm cubes) one click may create with CPP, at least 1 "
                        "(default: %(default)s)")
    p.add_argument("--cpp-reach-depth", type=parse_depth, default=math.inf, metavar="VOXELS",
                   help="geometric CPP: where the structure is at least this many 1.5 mm voxels deep in the slab "
                        "two patches share, click the neighbour as far inside as the structure reaches; fills large "
                        f"organs (liver, lungs) better, e.g. {LARGE_ORGAN_REACH_DEPTH:g} (default: off)")
    p.add_argument("--positive-spread-depth", type=parse_depth, default=SPREAD_POSITIVE_DEPTH, metavar="VOXELS",
                   help="a positive click also corrects the other patches its addition reaches at least this many "
                        "1.5 mm voxels deep into; 'off': only the patches that hold it (default: %(default)g)")
    p.add_argument("--negative-spread-depth", type=parse_depth, default=SPREAD_NEGATIVE_DEPTH, metavar="VOXELS",
                   help="the same for a negative click's removal (default: %(default)g)")
    p.add_argument("--refine-passes", type=int, default=None, metavar="N",
                   help="after each network call, decode N more times reading the patch's own answer as the previous "
                        "mask: fills structures a patch under-fills; each pass costs one decoder run (default: the "
                        "passes the checkpoint records, else 0)")


def cpp_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``SessionConfig`` keywords from `add_cpp_args`'s options.

    Raises:
        ValueError: ``--max-patches`` below 1 (SessionConfig checks ``--refine-passes``).
    """
    if args.max_patches < 1:
        raise ValueError(f"--max-patches must be at least 1 (the clicked patch), got {args.max_patches}.")
    return {"use_cpp": not args.no_cpp, "max_patches": args.max_patches, "cpp_reach_depth": args.cpp_reach_depth,
            "refine_passes": args.refine_passes, "spread_positive_depth": args.positive_spread_depth,
            "spread_negative_depth": args.negative_spread_depth}


def parse_depth(text: str) -> float:
    """Parse ``--cpp-reach-depth`` and the ``--*-spread-depth`` options: a depth in voxels (>= 0) or ``off``."""
    if text.strip().lower() == "off":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a depth in voxels or 'off', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"the depth must be 0 or more voxels, got {text!r}")
    return value


def parse_number_pair(text: str, form: str) -> tuple[float, float]:
    """Parse ``A,B``: two finite numbers; ``form`` names them in the error (e.g. ``"window MIN,MAX in HU"``)."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise argparse.ArgumentTypeError(f"{form} must be finite numbers, got {text!r}")
    return a, b


def parse_window(text: str) -> tuple[float, float]:
    """Parse ``MIN,MAX`` HU (finite numbers, MIN below MAX)."""
    lo, hi = parse_number_pair(text, "window MIN,MAX in HU")
    if lo >= hi:
        raise argparse.ArgumentTypeError(f"window MIN must be below MAX, got {text!r}")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    """Run ``segment``; returns the exit code."""
    from CTSAM3DLib.api import load_model  # torch and the readers load here, so that --help stays fast
    from CTSAM3DLib.engine.session import Session, SessionConfig
    from CTSAM3DLib.io.readers import check_mask_path, read_image, write_mask

    points = [parse_point_arg(t, args.coords) for t in args.point]
    if args.points_file:
        points += read_points_file(args.points_file, default_frame=args.coords)
    if not any(p.is_positive for p in points):
        raise ValueError("No positive point: give at least one foreground click (--point X,Y,Z or X,Y,Z,+).")
    settings = cpp_settings(args)
    out = check_mask_path(args.output, args.overwrite)  # before any computation
    image = read_image(args.image)  # before the model: a bad image is refused at once
    predictor = load_model(args.checkpoint, device=args.device, window_hu=args.window)
    session = Session(predictor, SessionConfig(**settings))
    session.set_volume(image)
    _apply_points(session, points)
    mask = session.mask()
    write_mask(mask, image, out, overwrite=args.overwrite)
    voxels = int(np.count_nonzero(mask))
    volume_ml = voxels * float(np.prod(image.GetSpacing())) / 1000.0
    n_include = sum(p.is_positive for p in points)
    print(f"wrote {out}: {voxels} voxels = {volume_ml:.1f} ml, from {n_include} include (+) and "
          f"{len(points) - n_include} exclude (-) clicks, model {predictor.variant}")
    return 0


def _apply_points(session: Session, points: list[PointSpec]) -> None:
    """Click the points in order; on a terminal, a progress line per click on stderr (patch i of n, CPP ring)."""
    from tqdm import tqdm

    for n, p in enumerate(points, 1):
        with tqdm(total=1, desc=f"click {n}/{len(points)}", unit="patch", file=sys.stderr, disable=None,
                  leave=False, dynamic_ncols=True) as bar:
            def show(progress: ClickProgress) -> None:
                bar.total, bar.n = progress.total, progress.done
                bar.set_postfix_str(f"{progress.stage} ring {progress.ring}")  # refreshes the line

            session.add_click(p.position, p.is_positive, frame=p.frame, progress=show)  # type: ignore[arg-type]
        s = session.last_stats
        logger.info("click %d: %.3f s, %d patches", n, s["seconds"], s["patches"])
