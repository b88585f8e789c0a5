"""``ctsam3d evaluate``: the paper's simulated-click evaluation on a labelled dataset.

Reads the dataset layouts training reads (``CTSAM3DLib.io.datasets``), runs
``CTSAM3DLib.eval.protocol.evaluate`` and writes ``CTSAM3DLib.eval.report`` files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from CTSAM3DLib.api import load_model
from CTSAM3DLib.cli.errors import USER_ERRORS
from CTSAM3DLib.cli.segment import add_cpp_args, add_model_args, cpp_settings
from CTSAM3DLib.engine.session import CPP_MODES, SessionConfig
from CTSAM3DLib.eval.growcut import grow_from_seeds
from CTSAM3DLib.eval.protocol import (BASELINES, CLICK_RULES, DEFAULT_CLICKS, NSD_TOLERANCE_MM, EvalResult,
                                      dataset_cases, evaluate, validate_clicks, validate_seeds)
from CTSAM3DLib.eval.report import check_output_dir, summarize, write_report
from CTSAM3DLib.io.datasets import TOTALSEG_CT, DataIssue, Subject, log_issues, scan_datasets
from CTSAM3DLib.prompts.click import Click

logger = logging.getLogger(__name__)

_DESCRIPTION = (
    "Simulated-click evaluation as in the CT-SAM3D paper. Per case and structure, the first click is a random "
    "foreground voxel (seeded); each next click is the point of the current error region farthest (in mm) from that "
    "region's boundary, positive in a false negative, negative in a false positive (the click simulator training "
    "uses). DSC and NSD are measured on the CT's own grid after each requested click count, and reported as the mean "
    "over structures, per subject group (meta.csv's group column, else the id's leading letters: hn_kbp_12 -> hn), "
    "as the area under the curve over the click counts and at the last count. Writes per_click.csv, summary.json, "
    "summary.md and dsc_vs_clicks.png into --output."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate``."""
    p = subparsers.add_parser("evaluate", help="simulated-click evaluation (DSC/NSD vs clicks) on a labelled dataset",
                              description=_DESCRIPTION)
    p.add_argument("--data", required=True, action="append", metavar="DIR",
                   help="dataset folder: TotalSegmentator (<subject>/ct.nii.gz + segmentations/), nnU-Net/MSD "
                        "(dataset.json + imagesTr/labelsTr) or multilabel (labels.csv + images/ + labels/); also a "
                        "single TotalSegmentator subject folder. Repeat to merge label-only folders (as in training)")
    p.add_argument("--output", required=True, metavar="OUT_DIR", help="folder for the report files")
    add_model_args(p)
    p.add_argument("--clicks", default=",".join(map(str, DEFAULT_CLICKS)), metavar="N,N,...",
                   help="click counts at which to measure (default: %(default)s); runs up to the largest")
    p.add_argument("--structures", metavar="A,B,...", help="evaluate only these structures (default: all)")
    p.add_argument("--max-structures", type=int, metavar="N",
                   help="per case, keep only the N largest structures by physical volume (mm^3), after --structures")
    p.add_argument("--split", help="only subjects of this split (e.g. test) in meta.csv; subjects without a split "
                                   "are then left out (default: all subjects)")
    p.add_argument("--baseline", choices=BASELINES,
                   help="also run 3D Slicer's Grow from seeds, with its own simulated clicks (needs the growcut "
                        "extra: pip install 'CTSAM3DLib[growcut]')")
    p.add_argument("--baseline-only", action="store_true",
                   help="run only the --baseline, not the model (its numbers do not depend on the weights)")
    p.add_argument("--click-rule", choices=CLICK_RULES, default="paper",
                   help="paper: random first click, then the deepest voxel of the whole error; cvpr25: the CVPR 2025 "
                        "interactive 3-D challenge's rule, every click (the first too) at the deepest voxel of the "
                        "largest 26-connected error component, NSD at 2 mm (default: %(default)s)")
    add_cpp_args(p)
    p.add_argument("--cpp-mode", choices=CPP_MODES, default="auto",
                   help="how CPP picks a neighbour's click: the CPP network's heatmap peak (the paper), or, with no "
                        "network, the deepest point of the clicked patch's mask in the slab both share; auto: the "
                        "mode the checkpoint recommends, else network (default: %(default)s)")
    p.add_argument("--cpp-min-agreement", type=float, default=None, metavar="DICE",
                   help="drop a CPP neighbour whose mask agrees with its source patch's on their shared slab "
                        "less than this (Dice, 0-1; 0 keeps every non-empty neighbour; default: the threshold the "
                        "checkpoint records, else 0)")
    p.add_argument("--first-click", choices=("random", "deepest"), default="random",
                   help="first click: a random voxel of the structure (the paper) or its deepest voxel "
                        "(default: %(default)s)")
    p.add_argument("--seed", default="0", metavar="SEED[,SEED...]",
                   help="seed of the random first clicks; several (e.g. 0,1,2) run every structure once per seed "
                        "and report the mean over them and each seed's mean (default: %(default)s)")
    p.add_argument("--nsd-tolerance", type=float, default=None, metavar="MM",
                   help="NSD (surface Dice) tolerance in mm (default: the click rule's: "
                        + ", ".join(f"{rule} {mm:g}" for rule, mm in NSD_TOLERANCE_MM.items()) + ")")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``; returns the exit code (2 with a one-paragraph message on user errors)."""
    try:
        return _run(args)
    except USER_ERRORS as exc:
        print(f"ctsam3d evaluate: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    clicks = validate_clicks(_parse_ints(args.clicks, "--clicks", "1,3,5,7,9"))
    seeds = validate_seeds(_parse_ints(args.seed, "--seed", "0 or 0,1,2"))
    structures = _parse_names(args.structures)
    settings = cpp_settings(args)
    if args.cpp_min_agreement is not None and not 0.0 <= args.cpp_min_agreement <= 1.0:
        raise ValueError(f"--cpp-min-agreement is a Dice between 0 and 1, got {args.cpp_min_agreement}.")
    out = Path(args.output)
    check_output_dir(out, args.overwrite)
    if args.baseline_only and not args.baseline:
        raise ValueError("--baseline-only needs --baseline growcut.")
    if args.baseline:
        _check_baseline_installed()
    subjects, issues = _scan(args.data, args.split)
    _check_structures(subjects, structures)
    predictor = load_model(args.checkpoint, device=args.device, window_hu=args.window)
    config = SessionConfig(**settings, cpp_mode=args.cpp_mode, cpp_min_agreement=args.cpp_min_agreement)
    result = evaluate(predictor, dataset_cases(subjects, issues), clicks, structures=structures,
                      max_structures=args.max_structures, baseline=args.baseline, session_config=config,
                      seed=seeds, nsd_tolerance_mm=args.nsd_tolerance, progress=True,
                      first_click_mode=args.first_click, click_rule=args.click_rule, run_model=not args.baseline_only)
    log_issues(issues, logger)
    if not result.records:
        raise ValueError("Nothing was evaluated: every selected structure was missing or empty "
                         f"({'; '.join(result.skipped[:5]) or 'no structures'}). Nothing was written.")
    paths = write_report(result, out, overwrite=args.overwrite)
    _print_summary(result, predictor.variant, paths)
    return 0


def _check_baseline_installed() -> None:
    """Run Grow from seeds on a tiny image, so that a missing slicer-core is reported before any work."""
    image = np.zeros((3, 3, 3), dtype=np.float32)
    try:
        grow_from_seeds(image, (1.0, 1.0, 1.0), [Click((1.0, 1.0, 1.0), True)])
    except ImportError as exc:
        raise ImportError(f"--baseline growcut runs 3D Slicer's Grow from seeds, which comes with the optional "
                          f"slicer-core package, and that is not available here ({exc}). Install the extra with: "
                          "pip install 'CTSAM3DLib[growcut]' (from a checkout: pip install -e '.[growcut]').") from None


def _parse_ints(text: str, option: str, example: str) -> list[int]:
    """Integers separated by commas (``option`` and ``example`` name them in the error)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"{option} must be integers separated by commas, such as {example}; got {text!r}.")
    return values


def _parse_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--structures needs structure names separated by commas, got {text!r}.")
    return names


def _scan(data: list[str], split: str | None) -> tuple[list[Subject], list[DataIssue]]:
    """Subjects of the dataset folders, each once (TotalSegmentator subject folders are allowed).

    Subject folders of one dataset share their parent as one scanned root, which keeps only the
    subjects asked for; a whole dataset folder keeps all of its subjects.
    """
    picked: dict[Path, set[str] | None] = {}  # per scanned root: the subject folders asked for, None = all
    for d in map(Path, data):
        if not d.is_dir():
            raise FileNotFoundError(f"Data folder {d} does not exist (or is not a folder). Give a dataset folder "
                                    "in TotalSegmentator, nnU-Net/MSD or multilabel layout.")
        is_subject = (d / TOTALSEG_CT).is_file() and (d / "segmentations").is_dir()
        root = d.resolve().parent if is_subject else d.resolve()
        names = picked.setdefault(root, set())
        if not is_subject:
            picked[root] = None
        elif names is not None:
            names.add(d.resolve().name)

    def wanted(subject: Subject) -> bool:
        parents = subject.image_path.parents  # built under its (resolved) root; resolving would follow symlinks out
        return any(root in parents and (names is None or subject.subject_id in names) for root, names in picked.items())

    scan = scan_datasets(list(picked), [split] if split else None)
    subjects = [s for s in scan.subjects if wanted(s)]
    if split:
        subjects = [s for s in subjects if s.split == split]
    if not subjects:
        where = ", ".join(map(str, data))
        raise ValueError(f"No labelled subjects found in {where}" + (f" for split {split!r}" if split else "") +
                         ". Check the folder layout (see ctsam3d evaluate --help) and the split names in meta.csv.")
    return subjects, list(scan.issues)


def _check_structures(subjects: list[Subject], structures: list[str] | None) -> None:
    available = {n for s in subjects for n in s.structure_names}
    if not available:
        raise ValueError("No structures found: the subjects have no label files.")
    if structures and not set(structures) & available:
        names = ", ".join(sorted(available)[:12]) + (" ..." if len(available) > 12 else "")
        raise ValueError(f"No structures found: none of {', '.join(structures)} is labelled in the data. "
                         f"Available: {names}.")


def _print_summary(result: EvalResult, variant: str, paths: list[Path]) -> None:
    summary = summarize(result)
    print(f"evaluated {len({(r.case_id, r.structure) for r in result.records})} structure(s) in "
          f"{len({r.case_id for r in result.records})} case(s), model {variant}")
    for method, entry in summary["methods"].items():
        seconds = [s for t in result.traces if t.method == method for s in t.seconds]
        print(f"  {method}: mean DSC by clicks {{{_by_clicks(entry['mean_dsc'])}}}, AUC {_num(entry['auc_dsc'])}; "
              f"NSD AUC {_num(entry['auc_nsd'])}; {sum(seconds) / max(len(seconds), 1):.2f} s/click")
        print(f"    mean over subjects: {_by_clicks(entry['subject_mean_dsc'])}")
        if len(result.seeds) > 1:
            for seed, means in entry["mean_dsc_by_seed"].items():
                print(f"    seed {seed}: {_by_clicks(means)}")
        if len(summary["groups"]) > 1:
            for group, part in summary["groups"].items():
                means = part["methods"][method]
                print(f"    group {group} ({len(part['cases'])} cases): {_by_clicks(means['mean_dsc'])}, "
                      f"AUC {_num(means['auc_dsc'])}; over subjects {_by_clicks(means['subject_mean_dsc'])}")
    if result.skipped:
        print(f"  skipped {len(result.skipped)} structure(s); see summary.md")
    print(f"wrote {', '.join(str(p) for p in paths)}")


def _by_clicks(means: dict[str, float | None]) -> str:
    return ", ".join(f"{n}: {_num(v)}" for n, v in means.items())


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
