"""Run many ``ctsam3d evaluate`` jobs at once, each into its own report folder.

Used by ``scripts/gpu_stage.sh`` on the GPU machine: one job per (weights or setting, subject),
``PARALLEL`` at a time, in list order (most wanted first), so that whatever finished before the
machine goes back has a complete report. Each line of LIST is ``name|evaluate arguments``;
``--clicks 1,3,5`` and ``--device cuda`` are added where the line gives none. Writes
``OUT/<name>/`` (the evaluate report and its stdout.txt) and touches DONE at the end.

    python scripts/eval_runs.py LIST OUT DONE [--parallel 14]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run(name: str, args: list[str], out: Path) -> int:
    """One evaluate job; returns its exit code."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    if "--clicks" not in args:
        args += ["--clicks", "1,3,5"]
    if "--device" not in args:
        args += ["--device", "cuda"]
    cmd = [sys.executable, "-m", "CTSAM3DLib.cli.main", "evaluate", *args, "--overwrite", "--output", str(folder)]
    with (folder / "stdout.txt").open("w") as log:
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("done", type=Path)
    parser.add_argument("--parallel", type=int, default=14)
    a = parser.parse_args(argv)
    jobs = [line.split("|", 1) for line in a.jobs.read_text().splitlines() if "|" in line]
    with ThreadPoolExecutor(a.parallel) as pool:
        codes = list(pool.map(lambda job: run(job[0], shlex.split(job[1]), a.out), jobs))
    a.done.write_text(" ".join(map(str, codes)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
