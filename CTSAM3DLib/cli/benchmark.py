"""``ctsam3d benchmark``: open / click / CPP latency, memory and training throughput per variant."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from CTSAM3DLib.benchmarks.latency import DEFAULT_MODELS, REFERENCE_VARIANT, run_benchmark
from CTSAM3DLib.cli.segment import parse_window, set_threads
from CTSAM3DLib.io.atomic import atomic_write_text
from CTSAM3DLib.model.build import VARIANTS

logger = logging.getLogger(__name__)

# Rows of the printed table: (label, metric path, format).
_ROWS = (
    ("weights", "weights", "{}"),
    ("open (s)", "open_s", "{:.3f}"),
    ("first click p50 (ms)", "first_click_ms.p50", "{:.1f}"),
    ("first click p95 (ms)", "first_click_ms.p95", "{:.1f}"),
    ("re-click p50 (ms)", "reclick_ms.p50", "{:.1f}"),
    ("re-click p95 (ms)", "reclick_ms.p95", "{:.1f}"),
    ("default click p50 (ms)", "default_click_ms.p50", "{:.0f}"),
    ("default click p95 (ms)", "default_click_ms.p95", "{:.0f}"),
    ("default click patches", "default_click_patches", "{}"),
    ("default click Dice", "default_click_dice", "{:.3f}"),
    ("correction p50 (ms)", "correction_click_ms.p50", "{:.0f}"),
    ("correction p95 (ms)", "correction_click_ms.p95", "{:.0f}"),
    ("correction patches", "correction_click_patches", "{}"),
    ("correction Dice", "correction_click_dice", "{:.3f}"),
    ("CPP organ (s)", "cpp_organ_s", "{:.3f}"),
    ("CPP patches", "cpp_patches", "{}"),
    ("CPP mode", "cpp_mode", "{}"),
    ("CPP organ Dice", "cpp_organ_dice", "{:.3f}"),
    ("CPP forced ring (s)", "cpp_ring_s", "{:.3f}"),
    ("CPP runs timed", "cpp_runs", "{}"),
    ("train samples/s", "train_samples_per_s", "{:.3f}"),
    ("train steps timed", "train_steps", "{}"),
    ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ("peak CUDA (MB)", "peak_cuda_mb", "{:.0f}"),
    ("train peak RSS (MB)", "train_peak_rss_mb", "{:.0f}"),
    ("train peak CUDA (MB)", "train_peak_cuda_mb", "{:.0f}"),
    ("warm-up 1st click (ms)", "warmup_ms.first_click", "{:.1f}"),
    ("warm-up CPP (ms)", "warmup_ms.cpp_organ", "{:.1f}"),
    ("warm-up default click (ms)", "warmup_ms.default_click", "{:.0f}"),
    ("compile", "compile", "{}"),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``benchmark``."""
    p = subparsers.add_parser(
        "benchmark", help="time open, clicks, CPP expansion and training per model variant",
        description="Time opening a CT, a first click in one patch (encoder + decoder), a re-click (decoder only), "
                    "the forced 27-patch CPP ring on the liver of the sample case, and a training step on synthetic "
                    f"data, for each variant (default: {', '.join(DEFAULT_MODELS)}); with trained weights also the "
                    "default click as users get it (default settings, one click at the liver's deepest voxel: time, "
                    "patches, Dice; p50 over --repeats fresh sessions) and the simulator's correction click after "
                    "it. Prints a table with the targets and writes JSON. Variants get random weights (the default "
                    "variant: the bundled weights when installed).")
    p.add_argument("--image", help="CT for open/click timings (default: ../shared/data/unlabeled/thorax_ct.nii.gz "
                                    "beside the repository)")
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="variant to time; repeatable")
    p.add_argument("--checkpoint", action="append", help="checkpoint to time (ours or params.pth); repeatable")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights for the default variant too (CPP then expands the forced 27-patch ring)")
    p.add_argument("--window", type=parse_window, help="HU window MIN,MAX for a params.pth without config.py")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed clicks per variant, default and correction clicks included (forced CPP ring and "
                        "training: up to 3) (default: %(default)s)")
    p.add_argument("--cpp-case", help="folder with ct.nii.gz and segmentations/liver.nii.gz (default: the sample)")
    p.add_argument("--amp", action="store_true", help="also run each model under bf16 autocast (CUDA only)")
    p.add_argument("--compile", action="store_true", help="wrap encoder and decoder in torch.compile")
    p.add_argument("--threads", type=int, help="torch CPU threads (torch.set_num_threads)")
    p.add_argument("--profile", action="store_true", help="profile one click and print the top-10 ops")
    p.add_argument("--json", required=True, help="write the results to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``benchmark``; returns the exit code."""
    set_threads(args.threads)
    models: list[str | Path] = [Path(c) for c in args.checkpoint or []] + list(args.variant or [])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, Any] = {}

    def save_partial(label: str, entry: dict[str, Any]) -> None:  # a long CPU run keeps what it measured
        done[label] = entry
        _write_json(out, {"partial": True, "device": args.device, "variants": done})

    result = run_benchmark(args.image, models or DEFAULT_MODELS, device=args.device, repeats=args.repeats,
                           cpp_case=args.cpp_case, use_amp=args.amp, use_compile=args.compile,
                           profile=args.profile, window_hu=args.window,
                           use_random_weights=args.random_weights, on_model=save_partial)
    _write_json(out, result)
    print(format_report(result))
    print(f"wrote {out}")
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", overwrite=True)


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report: metrics table, speed-ups, targets and profiles."""
    entries: dict[str, dict[str, Any]] = result["variants"]
    host = result.get("host", {})
    lines = [f"device {result['device']} ({host.get('gpu') or host.get('cpu', '?')}), torch {result.get('torch')}, "
             f"{result.get('threads')} threads, image {result.get('image')}"]
    lines += _table(["metric", *entries], [[label] + [_cell(e, path, fmt) for e in entries.values()]
                                           for label, path, fmt in _ROWS])
    key = f"speedup_vs_{REFERENCE_VARIANT}"
    if any(key in e for e in entries.values()):
        names = list(dict.fromkeys(m for e in entries.values() for m in e.get(key, {})))
        lines += ["", f"speed-up vs {REFERENCE_VARIANT} fp32 (x faster; >1 is better)"]
        lines += _table(["metric", *entries], [[m] + [_fmt(e.get(key, {}).get(m), "{:.2f}x") for e in entries.values()]
                                               for m in names])
    lines += ["", "targets"]
    lines += [f"  {'PASS' if t['pass'] else 'FAIL'}  {t['variant']:<20} {t['target']:<40} "
              f"value {_fmt(t['value'], '{:.3f}')}" for t in result.get("targets", [])] or ["  (none for this device)"]
    notes = dict.fromkeys([f"train samples/s: {e['train_note']}" for e in entries.values()]
                          + [f"peak memory scope: {e['peak_scope']}" for e in entries.values()]
                          + [f"compile failed ({k}): {e['compile'].get('error')}" for k, e in entries.items()
                             if e["compile"].get("requested") and not e["compile"].get("ok")])
    lines += ["", "notes", *(f"  {n}" for n in notes)]
    for label, e in entries.items():
        if "profile_top10" in e:
            lines += ["", f"profile of one first click, {label}: top-10 ops by self CPU time"]
            lines += _table(["op", "self CPU ms", "CPU total ms", "calls"],
                            [[r["op"], f"{r['self_cpu_ms']:.1f}", f"{r['cpu_total_ms']:.1f}", str(r["calls"])]
                             for r in e["profile_top10"]])
    return "\n".join(lines)


def _cell(entry: dict[str, Any], path: str, fmt: str) -> str:
    value: Any = entry
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if path == "compile" and isinstance(value, dict):
        if not value.get("requested"):
            return "off"
        return f"ok ({value.get('seconds')} s)" if value.get("ok") else "FAILED (see notes)"
    return _fmt(value, fmt)


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
