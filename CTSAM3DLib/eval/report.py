"""Report files of an evaluation: per-click CSV, summary JSON and Markdown, DSC-vs-clicks plot.

Aggregation is organ-wise, as in the CT-SAM3D paper: each structure's value is the mean
over the cases that have it (and over the seeds, when several were run), and a method's
mean is the mean over structures of those values (equal to the plain mean when every
structure appears in every case). Standard deviations are population standard deviations
(``ddof=0``) over the same values.

Files written into the output folder (:data:`REPORT_FILES`):

* ``per_click.csv``: one row per case, structure, method, seed and click count;
* ``summary.json``: ``{"clicks": [...], "nsd_tolerance_mm": t, "click_rule": r, "seeds": [...],
  "methods": {name: {"mean_dsc": {"1": ...}, "mean_nsd": {"1": ...}, "auc_dsc": a, "auc_nsd": a,
  "final_dsc": d, "final_nsd": d, "subject_mean_dsc": {"1": ...}, "mean_dsc_by_seed": {"0": {"1": ...}},
  "n_structures": n}},
  "groups": {group: {"cases": [...], "methods": {name: {the same keys but by seed}}}}}`` with click
  counts and seeds as string keys;
* ``summary.md``: mean ± std per click count and method with the AUC and final values, the mean
  per subject group, the mean per seed (several seeds), time per click, and per structure;
* ``dsc_vs_clicks.png``: mean DSC against the number of clicks, one line per method
  (the paper's Fig. 4).

Subject mean: each case's mean over its structures (and seeds), then the mean over cases: every
patient counts once, where the organ-wise mean lets a structure found in one case weigh as much
as one found in twenty.

Groups: each case's subject group (`io.datasets.Subject.group`) gets the same organ-wise mean
over its own cases, so a validation split of head-and-neck patients and a few chest CTs shows
both. AUC: the area under the mean DSC (NSD) curve over the measured click counts, trapezoids
divided by the span of the counts (so it lies in [0, 1] and equals the value itself for a
single count); final: the mean at the largest count.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from CTSAM3DLib.eval.protocol import EvalResult
from CTSAM3DLib.io.atomic import atomic_write_bytes

# Output file names, in the order they are written.
REPORT_FILES = ("per_click.csv", "summary.json", "summary.md", "dsc_vs_clicks.png")
# Columns of per_click.csv.
CSV_COLUMNS = ("case", "structure", "method", "seed", "clicks", "dsc", "nsd", "seconds", "cumulative_seconds",
               "click_x", "click_y", "click_z", "click_positive")
# Metrics in summary.json, named as ClickRecord attributes.
_METRICS = ("dsc", "nsd")

# (method, structure, click count) -> metric values over cases.
_Values = dict[tuple[str, str, int], list[float]]


def check_output_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an output folder that already holds report files, unless ``overwrite``.

    Raises:
        FileExistsError: a report file exists and ``overwrite`` is False.
        FileExistsError: also when ``out_dir`` is an existing file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"The output path {out} is an existing file, not a folder; choose a folder for the "
                              "report.")
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds evaluation results ({', '.join(existing)}); pass --overwrite "
                              "(Python: overwrite=True) to replace them, or choose another output folder.")


def write_report(result: EvalResult, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write all report files (see the module docstring) into ``out_dir`` (created if needed).

    Returns:
        The written paths, in :data:`REPORT_FILES` order.

    Raises:
        FileExistsError: results already there and ``overwrite`` is False.
    """
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in REPORT_FILES]
    contents = (per_click_csv(result).encode(), (json.dumps(summarize(result), indent=2) + "\n").encode(),
                summary_markdown(result).encode(), dsc_plot_png(result))
    for path, data in zip(paths, contents):
        atomic_write_bytes(path, data, overwrite=overwrite)
    return paths


def summarize(result: EvalResult) -> dict[str, Any]:
    """The ``summary.json`` dict (module docstring): per method, and per subject group, the mean DSC / NSD
    per click count, their AUC and final values, and the mean DSC per seed (string keys; null if none)."""
    groups: dict[str, Any] = {}
    for group, cases in _cases_by_group(result).items():
        part = dataclasses.replace(result, records=tuple(r for r in result.records if r.case_id in cases))
        groups[group] = {"cases": sorted(cases), "methods": _method_entries(part)}
    return {"clicks": list(result.clicks), "nsd_tolerance_mm": float(result.nsd_tolerance_mm),
            "click_rule": result.click_rule, "seeds": list(result.seeds), "methods": _method_entries(result),
            "groups": groups}


def _method_entries(result: EvalResult) -> dict[str, Any]:
    """Per method: mean DSC / NSD per click count, AUC, final value, mean DSC per seed, structure count."""
    values = {metric: _structure_means(result, metric) for metric in _METRICS}
    by_seed = _dsc_by_seed(result)
    methods: dict[str, Any] = {}
    for method in result.methods:
        entry: dict[str, Any] = {}
        for metric in _METRICS:
            means = _means(values[metric], method, result.clicks)
            entry[f"mean_{metric}"] = means
            entry[f"auc_{metric}"] = curve_auc(means, result.clicks)
            entry[f"final_{metric}"] = means[str(result.clicks[-1])]
        entry["subject_mean_dsc"] = _subject_means(result, method)
        entry["mean_dsc_by_seed"] = {str(seed): _means(v, method, result.clicks) for seed, v in by_seed.items()}
        entry["n_structures"] = len(_structures(result, method))
        methods[method] = entry
    return methods


def _subject_means(result: EvalResult, method: str) -> dict[str, float | None]:
    """Mean DSC over cases of each case's mean over its structures and seeds, per click count."""
    per_case: _Values = defaultdict(list)
    for r in result.records:
        if r.method == method:
            per_case[(r.case_id, "", r.n_clicks)].append(r.dsc)
    out: dict[str, float | None] = {}
    for n in result.clicks:
        vals = [float(np.mean(v)) for (_, _, k), v in per_case.items() if k == n]
        out[str(n)] = float(np.mean(vals)) if vals else None
    return out


def curve_auc(means: dict[str, float | None], clicks: tuple[int, ...]) -> float | None:
    """Area under a mean-vs-clicks curve over the measured counts, divided by their span (module docstring)."""
    ys = [means[str(n)] for n in clicks]
    if any(y is None for y in ys):
        return None
    if len(clicks) == 1:
        return ys[0]
    area = sum((a + b) / 2 * (n1 - n0) for a, b, n0, n1 in zip(ys, ys[1:], clicks, clicks[1:]))
    return float(area / (clicks[-1] - clicks[0]))


def _cases_by_group(result: EvalResult) -> dict[str, set[str]]:
    """Subject group -> the evaluated case ids in it (a case without a group is its own group)."""
    out: dict[str, set[str]] = defaultdict(set)
    for case in {r.case_id for r in result.records}:
        out[result.groups.get(case, case)].add(case)
    return dict(sorted(out.items()))


def _means(values: dict[tuple[str, str, int], float], method: str, clicks: tuple[int, ...]) -> dict[str, float | None]:
    """A method's mean over structures per click count (string keys; None where it has no value)."""
    means = {str(n): _stats(values, method, n)[0] for n in clicks}
    return {k: (None if np.isnan(v) else v) for k, v in means.items()}


def _dsc_by_seed(result: EvalResult) -> dict[int, dict[tuple[str, str, int], float]]:
    """Per seed, (method, structure, clicks) -> mean DSC over the cases, from that seed's first clicks only."""
    return {seed: _structure_means(dataclasses.replace(result, records=tuple(r for r in result.records
                                                                             if r.seed == seed)), "dsc")
            for seed in result.seeds}


def per_click_csv(result: EvalResult) -> str:
    """``per_click.csv`` text: one row per case, structure, method and click count."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in result.records:
        point = r.click.point_xyz if r.click is not None else ("", "", "")
        positive = "" if r.click is None else int(r.click.is_positive)
        writer.writerow([r.case_id, r.structure, r.method, r.seed, r.n_clicks, f"{r.dsc:.6f}", f"{r.nsd:.6f}",
                         f"{r.seconds:.4f}", f"{r.cumulative_seconds:.4f}", *_fmt_point(point), positive])
    return buf.getvalue()


def summary_markdown(result: EvalResult) -> str:
    """``summary.md`` text (see the module docstring)."""
    dsc, nsd = _structure_means(result, "dsc"), _structure_means(result, "nsd")
    cases = sorted({r.case_id for r in result.records})
    head = "| method | metric | " + " | ".join(f"{n} click{'s' * (n > 1)}" for n in result.clicks) + " |"
    rule = "|---|---|" + "---:|" * len(result.clicks)
    lines = ["# CT-SAM3D simulated-click evaluation", "",
             f"{len(cases)} case(s), clicks {', '.join(map(str, result.clicks))}, NSD tolerance "
             f"{result.nsd_tolerance_mm:g} mm, seed{'s' * (len(result.seeds) > 1)} "
             f"{', '.join(map(str, result.seeds))}. Mean ± std over structures (each structure averaged over its "
             f"cases{' and seeds' * (len(result.seeds) > 1)} first).", "", "## Mean over structures", "", head, rule]
    entries = _method_entries(result)
    for method in result.methods:
        for label, values in (("DSC", dsc), ("NSD", nsd)):
            cells = [_pm(*_stats(values, method, n)) for n in result.clicks]
            lines.append(f"| {method} | {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Click rule: {result.click_rule}. Area under the curve over clicks {result.clicks[0]}-"
              f"{result.clicks[-1]} (normalised to [0, 1]) and value at {result.clicks[-1]} click(s):", ""]
    lines += [f"- {m}: AUC DSC {_num(e['auc_dsc'])}, NSD {_num(e['auc_nsd'])}; final DSC {_num(e['final_dsc'])}, "
              f"NSD {_num(e['final_nsd'])}; mean over subjects DSC "
              + ", ".join(f"@{n} {_num(v)}" for n, v in e["subject_mean_dsc"].items()) for m, e in entries.items()]
    lines += ["", "## Mean DSC per subject group", "", _group_table(result)]
    if len(result.seeds) > 1:
        lines += ["", "## Mean DSC per seed", "", _seed_table(result)]
    lines += ["", "## Time per click", "", _timing_table(result)]
    for label, metric in (("DSC", "dsc"), ("NSD", "nsd")):
        lines += ["", f"## {label} per structure (mean ± std over cases and seeds)", "", _structure_table(result, metric)]
    if result.skipped:
        lines += ["", "## Skipped", ""] + [f"- {msg}" for msg in result.skipped]
    return "\n".join(lines) + "\n"


def dsc_plot_png(result: EvalResult) -> bytes:
    """PNG bytes of mean DSC (± std band) against the number of clicks, one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = _structure_means(result, "dsc")
    fig = Figure(figsize=(5.0, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.asarray(result.clicks)
    for method in result.methods:
        stats = np.asarray([_stats(values, method, n) for n in result.clicks])
        ax.plot(x, 100 * stats[:, 0], marker="o", label=method)
        ax.fill_between(x, 100 * (stats[:, 0] - stats[:, 1]), 100 * (stats[:, 0] + stats[:, 1]), alpha=0.15)
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mean DSC (%)")
    ax.set_xticks(x)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(f"DSC vs clicks ({len(_structures(result))} structures)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _structure_means(result: EvalResult, attr: str) -> dict[tuple[str, str, int], float]:
    """(method, structure, clicks) -> mean of ``attr`` over the cases that have the structure."""
    per_case: _Values = defaultdict(list)
    for r in result.records:
        per_case[(r.method, r.structure, r.n_clicks)].append(float(getattr(r, attr)))
    return {k: float(np.mean(v)) for k, v in per_case.items()}


def _stats(values: dict[tuple[str, str, int], float], method: str, n: int) -> tuple[float, float]:
    """(mean, std) over structures of a method's values at ``n`` clicks; (nan, nan) if none."""
    vals = [v for (m, _, k), v in values.items() if m == method and k == n]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals))


def _structures(result: EvalResult, method: str | None = None) -> list[str]:
    return sorted({r.structure for r in result.records if method is None or r.method == method})


def _timing_table(result: EvalResult) -> str:
    lines = ["| method | clicks placed | mean s/click | median s/click | max s/click | first click mean s |",
             "|---|---:|---:|---:|---:|---:|"]
    for method in result.methods:
        traces = [t for t in result.traces if t.method == method]
        secs = np.asarray([s for t in traces for s in t.seconds], dtype=float)
        first = np.asarray([t.seconds[0] for t in traces if t.seconds], dtype=float)
        if secs.size == 0:
            lines.append(f"| {method} | 0 | - | - | - | - |")
            continue
        lines.append(f"| {method} | {secs.size} | {secs.mean():.3f} | {np.median(secs):.3f} | {secs.max():.3f} | "
                     f"{first.mean():.3f} |")
    return "\n".join(lines)


def _seed_table(result: EvalResult) -> str:
    """Rows seed x method, columns click counts: mean DSC over structures from that seed's first clicks."""
    lines = ["| seed | method | " + " | ".join(str(n) for n in result.clicks) + " |",
             "|---:|---|" + "---:|" * len(result.clicks)]
    for seed, values in _dsc_by_seed(result).items():
        for method in result.methods:
            cells = [_stats(values, method, n)[0] for n in result.clicks]
            lines.append(f"| {seed} | {method} | " + " | ".join("-" if np.isnan(c) else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def _structure_table(result: EvalResult, metric: str) -> str:
    """Rows structure x method, columns click counts: mean ± std of ``metric`` over the structure's runs (cases
    and seeds)."""
    per_case: _Values = defaultdict(list)
    for r in result.records:
        per_case[(r.method, r.structure, r.n_clicks)].append(float(getattr(r, metric)))
    lines = ["| structure | method | runs | " + " | ".join(str(n) for n in result.clicks) + " |",
             "|---|---|---:|" + "---:|" * len(result.clicks)]
    for structure in _structures(result):
        for method in result.methods:
            cells = [per_case.get((method, structure, n), []) for n in result.clicks]
            if not cells[0]:
                continue
            text = " | ".join(_pm(float(np.mean(c)), float(np.std(c))) for c in cells)
            lines.append(f"| {structure} | {method} | {len(cells[0])} | {text} |")
    return "\n".join(lines)


def _group_table(result: EvalResult) -> str:
    """Rows group x method: cases, mean DSC per click count (organ-wise over the group's cases), AUC."""
    lines = ["| group | cases | method | " + " | ".join(str(n) for n in result.clicks) + " | AUC | mean over subjects |",
             "|---|---:|---|" + "---:|" * (len(result.clicks) + 1) + "---|"]
    for group, entry in summarize(result)["groups"].items():
        for method, values in entry["methods"].items():
            cells = [_num(values["mean_dsc"][str(n)]) for n in result.clicks]
            subjects = " / ".join(_num(v) for v in values["subject_mean_dsc"].values())
            lines.append(f"| {group} | {len(entry['cases'])} | {method} | " + " | ".join(cells)
                         + f" | {_num(values['auc_dsc'])} | {subjects} |")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pm(mean: float, std: float) -> str:
    return "-" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _fmt_point(point: Iterable[Any]) -> list[str]:
    return [p if p == "" else f"{float(p):g}" for p in point]

