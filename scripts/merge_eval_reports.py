"""Merge the per_click.csv of several ``ctsam3d evaluate`` runs into one report.

For evaluations run in shards (one job per subject on a GPU machine, `scripts/eval_runs.py`):
the records of every given report folder are read back, each case gets its group by the
dataset rule (`io.datasets.subject_group` of its id), and ``summary.json``, ``summary.md`` and
the plot are written as one ``ctsam3d evaluate`` run over all of them would (the time table is
empty: per-click times of the shards are in their own reports).

    python scripts/merge_eval_reports.py OUT_DIR SHARD_DIR [SHARD_DIR ...] [--nsd-tolerance MM] [--click-rule R]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from CTSAM3DLib.eval.protocol import METHOD_CTSAM3D, ClickRecord, EvalResult
from CTSAM3DLib.eval.report import write_report
from CTSAM3DLib.io.datasets import subject_group
from CTSAM3DLib.prompts.click import Click


def read_records(path: Path) -> list[ClickRecord]:
    """The rows of one per_click.csv as records."""
    records = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            click = None if r["click_x"] == "" else Click(
                (float(r["click_x"]), float(r["click_y"]), float(r["click_z"])), r["click_positive"] == "1")
            records.append(ClickRecord(r["case"], r["structure"], r["method"], int(r["clicks"]), float(r["dsc"]),
                                       float(r["nsd"]), float(r["seconds"]), float(r["cumulative_seconds"]), click,
                                       int(r["seed"])))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("shards", type=Path, nargs="+")
    parser.add_argument("--nsd-tolerance", type=float, default=1.0)
    parser.add_argument("--click-rule", default="paper")
    a = parser.parse_args(argv)
    records = [r for shard in a.shards for r in read_records(shard / "per_click.csv")]
    methods = sorted({r.method for r in records}, key=lambda m: (m != METHOD_CTSAM3D, m))
    result = EvalResult(tuple(sorted({r.n_clicks for r in records})), a.nsd_tolerance, tuple(methods),
                        tuple(sorted({r.seed for r in records})), tuple(records),
                        groups={r.case_id: subject_group(r.case_id) for r in records}, click_rule=a.click_rule)
    for path in write_report(result, a.output, overwrite=True):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
