"""Timing helpers shared by the benchmark's phases: device-synchronised timers, slow-phase run
counts, percentiles and Dice."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

# At most this many timed runs of a phase slower than a click (CPP ring, training step) ...
MAX_SLOW_RUNS = 3
# ... only one when the warm-up run took longer than this (seconds) ...
SLOW_PHASE_S = 10.0
# ... and none beyond the warm-up when it took longer than this: that one run is the measurement
# (a release variant on CPU; first-call overhead is then far below the run-to-run noise).
LONG_PHASE_S = 60.0


def sync(dev: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], T], dev: torch.device) -> float:
    """Seconds ``fn`` takes, with the device synchronised before and after."""
    sync(dev)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t0


def slow_runs(measure: Callable[[], float], runs: int) -> tuple[float | None, list[float]]:
    """Warm-up (ms) and timed runs (s) of a slow phase, after ``SLOW_PHASE_S`` / ``LONG_PHASE_S``.

    Returns ``(None, [first run])`` when the first run took over ``LONG_PHASE_S``: it is then kept
    as the measurement, and the warm-up is reported as null.
    """
    first_s = measure()
    if first_s > LONG_PHASE_S:
        return None, [first_s]
    return 1000 * first_s, [measure() for _ in range(runs if first_s <= SLOW_PHASE_S else 1)]


def stats(ms: list[float]) -> dict[str, float]:
    """``{"p50", "p95"}`` of the samples (ms), rounded to 0.01."""
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (nonzero = foreground), 1 when both are empty, rounded to 1e-4."""
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else round(2.0 * int((a & b).sum()) / total, 4)
