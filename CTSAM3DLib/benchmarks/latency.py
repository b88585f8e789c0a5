"""Latency, memory and training-throughput benchmark of CTSAM3D variants (``ctsam3d benchmark``).

Everything is measured through the code users run: ``read_image`` + ``Session.set_volume``
(open), ``Session.add_click`` (first click in a new patch, re-click in a cached patch, and the
organ case of `benchmarks.organ`: the default click on the sample's liver as users get it, its
correction click and the forced CPP ring), and a synthetic optimisation step for training. Warm-up
calls are timed but excluded from the statistics and reported apart (``warmup_ms``); on CUDA
the device is synchronised around every timer.

Random weights time everything except the CPP *policy* (how many patches an organ needs,
which depends on what the network predicts). A variant with random weights therefore runs
the worst case instead: every neighbour of the clicked patch is expanded (the full 27-patch
ring), and the entry says so in ``cpp_mode``.

Arrays are ``(z, y, x)``, points ``(x, y, z)`` input voxel indices (see ``CTSAM3DLib.io.volume``).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from CTSAM3DLib import bundled
from CTSAM3DLib.api import load_model
from CTSAM3DLib.benchmarks.organ import CppCase, default_cpp_case, load_cpp_case, organ_fields, repo_data_dir
from CTSAM3DLib.benchmarks.timing import MAX_SLOW_RUNS, slow_runs, stats, sync, timed
from CTSAM3DLib.engine import planning
from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.geometry.model_space import PATCH_SIZE, ModelGrid
from CTSAM3DLib.io.readers import read_image
from CTSAM3DLib.model.build import DEFAULT_VARIANT, VARIANTS, build_model
from CTSAM3DLib.model.predictor import Predictor, resolve_device

logger = logging.getLogger(__name__)

# Variants benchmarked when none is named: our CPU default and the release's tiny network.
DEFAULT_MODELS: tuple[str, ...] = (DEFAULT_VARIANT, "restv2_tiny")
# Speed-ups are reported relative to this variant (the release's smallest network).
REFERENCE_VARIANT = "restv2_tiny"
# HU window of randomly initialised models (timing does not depend on it).
RANDOM_WINDOW_HU = (-1000.0, 1000.0)
# Distance (mm) from a first click to its re-click: well inside the same patch's core.
RECLICK_OFFSET_MM = 6.0
# Patches per synthetic training step: one sample = the two overlapping patches U and V.
TRAIN_PATCHES = 2
# (device type, variant or None for all, metric, comparison, limit: number or another metric).
TARGETS: tuple[tuple[str, str | None, str, str, float | str], ...] = (
    ("cpu", "compact", "first_click_ms.p50", "<=", 100.0),
    ("cpu", "compact_geo", "first_click_ms.p50", "<=", 100.0),
    ("cpu", "compact_geo_skip", "first_click_ms.p50", "<=", 100.0),
    ("cpu", None, "reclick_ms.p50", "<", "first_click_ms.p50"),
    ("cpu", "compact", "cpp_organ_s", "<=", 1.5),
    ("cpu", "compact_geo", "cpp_organ_s", "<=", 1.5),
    ("cpu", "compact_geo_skip", "cpp_organ_s", "<=", 1.5),
    ("cpu", None, "open_s", "<=", 2.0),
    ("cuda", "restv2_tiny", "first_click_ms.p50", "<=", 15.0),
    ("cuda", None, "reclick_ms.p50", "<", "first_click_ms.p50"),
    ("cuda", "restv2_tiny", "cpp_organ_s", "<=", 0.1),
    ("cpu", None, "default_click_ms.p50", "<=", 1000.0),
    ("cpu", None, "correction_click_ms.p50", "<=", 300.0),
    ("cuda", None, "default_click_ms.p50", "<=", 100.0),
)
# Metrics only trained weights measure (`benchmarks.organ`): their targets skip random-weight entries.
TRAINED_ONLY_METRICS = ("default_click_ms", "correction_click_ms")


def default_image_path() -> Path:
    """The full-resolution thorax CT used for open and click latency."""
    return repo_data_dir() / "unlabeled" / "thorax_ct.nii.gz"


@dataclass(frozen=True)
class ModelSpec:
    """One model to benchmark: a registry variant or a checkpoint file, fp32 or bf16 autocast."""

    variant: str | None = None
    checkpoint: Path | None = None
    use_amp: bool = False
    use_random_weights: bool = False

    @property
    def label(self) -> str:
        base = str(self.variant) if self.checkpoint is None else self.checkpoint.name
        return f"{base}+bf16" if self.use_amp else base


def run_benchmark(image_path: str | Path | None = None, models: Sequence[str | Path] = DEFAULT_MODELS,
                  device: str = "cpu", repeats: int = 5, cpp_case: str | Path | None = None, *,
                  use_amp: bool = False, use_compile: bool = False, profile: bool = False,
                  window_hu: tuple[float, float] | None = None, use_random_weights: bool = False,
                  on_model: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Benchmark each model and return the report (see ``docs`` / ``ctsam3d benchmark --help``).

    Args:
        image_path: CT for open/click latency (default ``default_image_path()``).
        models: variant names (random weights; the bundled weights for the default variant when
            installed) or checkpoint paths (``Path`` or any string that is not a variant name).
        device: ``"cpu"`` or ``"cuda"``.
        repeats: timed first clicks and re-clicks per model (open: the median of as many).
        cpp_case: folder with ``ct.nii.gz`` and ``segmentations/liver.nii.gz``.
        use_amp: also run every model under bf16 autocast (CUDA only), as extra entries.
        use_compile: wrap encoder and decoder in ``torch.compile``; a failure is reported, not raised.
        profile: profile one first click per model (top-10 ops by self CPU time).
        window_hu: HU window for a release ``params.pth`` without its ``config.py``.
        use_random_weights: random weights for the default variant too (CPP then runs the forced ring).
        on_model: called with ``(label, entry)`` as each model finishes (e.g. to save partial results).

    Returns:
        ``{"device", "variants": {label: {...}}, "targets": [...], ...}`` (JSON-ready).

    Raises:
        DeviceError: CUDA asked for but absent.
        ValueError: bad repeats, unknown variant, ``use_amp`` off CUDA, unusable image or case.
        FileNotFoundError: missing image or CPP case.
    """
    dev = resolve_device(device)
    if int(repeats) < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    if use_amp and dev.type != "cuda":
        raise ValueError("bf16 autocast (--amp) runs on CUDA only; use --device cuda or drop --amp.")
    specs = _model_specs(models, use_amp, use_random_weights)
    image_path = Path(image_path) if image_path is not None else default_image_path()
    if not image_path.exists():
        raise FileNotFoundError(f"Benchmark image {image_path} does not exist; pass --image PATH (any CT).")
    case_dir = Path(cpp_case) if cpp_case is not None else default_cpp_case()
    case = load_cpp_case(case_dir)
    load_before = _load_average()
    entries: dict[str, dict[str, Any]] = {}
    for spec in specs:
        logger.info("benchmarking %s on %s", spec.label, dev)
        entries[spec.label] = _bench_model(spec, image_path, case, dev, int(repeats), use_compile, profile, window_hu)
        if on_model is not None:
            on_model(spec.label, _rounded(entries[spec.label]))
    _add_speedups(entries)
    host = {**_host_info(dev), "load_avg_1min": {"start": load_before, "end": _load_average()}}
    return _rounded({"device": dev.type, "host": host, "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "image": str(image_path), "cpp_case": str(case_dir),
                     "repeats": int(repeats), "variants": entries, "targets": evaluate_targets(dev.type, entries)})


def _model_specs(models: Sequence[str | Path], use_amp: bool, use_random_weights: bool) -> list[ModelSpec]:
    specs: list[ModelSpec] = []
    for m in models:
        if isinstance(m, str) and m in VARIANTS:
            spec = ModelSpec(variant=m, use_random_weights=use_random_weights)
        elif isinstance(m, Path) or os.sep in str(m) or Path(str(m)).suffix:
            if not Path(m).is_file():
                raise FileNotFoundError(f"Checkpoint {m} does not exist.")
            spec = ModelSpec(checkpoint=Path(m))
        else:
            raise ValueError(f"Unknown model variant {m!r}; choose one of {sorted(VARIANTS)} or a checkpoint path.")
        specs.append(spec)
    if not specs:
        raise ValueError("No model to benchmark: name at least one variant or checkpoint.")
    return specs + [dataclasses.replace(s, use_amp=True) for s in specs] if use_amp else specs


# ---- one model ---------------------------------------------------------------------------
def _bench_model(spec: ModelSpec, image_path: Path, case: CppCase, dev: torch.device, repeats: int,
                 use_compile: bool, profile: bool, window_hu: tuple[float, float] | None) -> dict[str, Any]:
    is_rss_per_model = _reset_peaks(dev)
    predictor, weights = _load(spec, dev, window_hu)
    compiled = compile_predictor(predictor) if use_compile else {"requested": False}
    warm: dict[str, float | None] = {}
    samples: dict[str, list[float]] = {}
    open_s, session, image = _time_open(image_path, predictor, repeats, warm)
    points = spread_points(image, repeats + 2)
    samples["first_click"], samples["reclick"] = _time_clicks(session, image, points[:repeats + 1], dev, warm)
    top = _profile_click(session, points[-1], dev) if profile else None
    del session
    cpp = organ_fields(predictor, case, dev, repeats, weights != "random", warm, samples)
    rss_mb, cuda_mb = _peak_rss_mb(), _peak_cuda_mb(dev)
    _reset_peaks(dev)
    samples["train_step"], train_note = _time_train(predictor.variant, dev, spec.use_amp, min(repeats, MAX_SLOW_RUNS),
                                                    warm)
    step_s = statistics.median(samples["train_step"]) / 1000
    entry: dict[str, Any] = {
        "variant": predictor.variant, "weights": weights, "precision": "bf16-autocast" if spec.use_amp else "fp32",
        "open_s": open_s, "first_click_ms": stats(samples["first_click"]), "reclick_ms": stats(samples["reclick"]),
        **cpp, "train_samples_per_s": 1.0 / step_s, "train_step_s": step_s, "train_steps": len(samples["train_step"]),
        "peak_rss_mb": rss_mb, "peak_cuda_mb": cuda_mb,
        "train_peak_rss_mb": _peak_rss_mb(), "train_peak_cuda_mb": _peak_cuda_mb(dev),
        "peak_scope": "per model and phase (inference; training)" if is_rss_per_model else "process (RSS)",
        "train_note": train_note, "warmup_ms": warm, "compile": compiled, "samples_ms": samples,
    }
    if top is not None:
        entry["profile_top10"] = top
    logger.info("%s: first click p50 %.0f ms, CPP organ %.2f s (%d patches, %s), train %.3f samples/s", spec.label,
                entry["first_click_ms"]["p50"], entry["cpp_organ_s"], entry["cpp_patches"], entry["cpp_mode"],
                entry["train_samples_per_s"])
    del predictor
    gc.collect()
    return entry


def _load(spec: ModelSpec, dev: torch.device, window_hu: tuple[float, float] | None) -> tuple[Predictor, str]:
    """The predictor and where its weights come from (``"random"``, ``"bundled"`` or the checkpoint path)."""
    if spec.checkpoint is not None:
        return load_model(spec.checkpoint, dev, window_hu=window_hu, use_amp=spec.use_amp), str(spec.checkpoint)
    if spec.variant == DEFAULT_VARIANT and not spec.use_random_weights and bundled.default_weights_path().is_file():
        return load_model(None, dev, use_amp=spec.use_amp), "bundled"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(str(spec.variant))
    return Predictor(model, str(spec.variant), RANDOM_WINDOW_HU, dev, use_amp=spec.use_amp), "random"


def compile_predictor(predictor: Predictor) -> dict[str, Any]:
    """Wrap the encoder and decoder in ``torch.compile`` and compile them on one dummy click.

    Returns:
        ``{"requested": True, "ok": bool, "seconds": ..., "error": ...}``; on failure the
        original modules are restored, so the benchmark goes on uncompiled.
    """
    model = predictor.model
    encoder, decoder = model.image_encoder, model.mask_decoder
    t0 = time.perf_counter()
    try:
        with _quiet("torch._subclasses.fake_tensor", "torch._dynamo"):
            model.image_encoder = torch.compile(encoder)  # type: ignore[assignment]
            model.mask_decoder = torch.compile(decoder)  # type: ignore[assignment]
            image = torch.rand(1, 1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE, device=predictor.device)
            centre = torch.full((1, 1, 3), PATCH_SIZE / 2)
            predictor.predict_patch(image, centre, torch.ones(1, 1, dtype=torch.long))
            sync(predictor.device)
    except Exception as exc:  # noqa: BLE001 - any compiler failure is reported, not fatal
        model.image_encoder, model.mask_decoder = encoder, decoder
        torch._dynamo.reset()
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][:2]
        return {"requested": True, "ok": False, "seconds": round(time.perf_counter() - t0, 2),
                "error": f"{type(exc).__name__}: {' / '.join(lines)}"[:400]}
    return {"requested": True, "ok": True, "seconds": round(time.perf_counter() - t0, 2)}


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence the named loggers (torch logs a compiler failure at length before raising it)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _time_open(path: Path, predictor: Predictor, repeats: int,
               warm: dict[str, float | None]) -> tuple[float, Session, sitk.Image]:
    """Median seconds from file to a session ready for its first click (one warm-up open first)."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        image = read_image(path)
        session = Session(predictor, SessionConfig(use_cpp=False))
        session.set_volume(image)
        times.append(time.perf_counter() - t0)
    warm["open"] = 1000 * times[0]
    return statistics.median(times[1:]), session, image


def spread_points(image: sitk.Image, n: int) -> list[np.ndarray]:
    """``n`` click points (x, y, z) far apart, each giving a distinct model-space patch.

    Farthest-point order over a 7^3 lattice spanning 15-85 % of each image axis.

    Raises:
        ValueError: the image is too small for ``n`` distinct patches.
    """
    size = np.asarray(image.GetSize(), dtype=np.float64)
    axes = [np.round(np.linspace(0.15, 0.85, 7) * (s - 1)) for s in size]
    cand = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    world = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in cand])
    grid = ModelGrid.for_image(image)
    chosen = [int(np.argmin(np.linalg.norm(world - world.mean(0), axis=1)))]
    dist = np.linalg.norm(world - world[chosen[0]], axis=1)
    starts = {planning.new_patch_start(grid.lps_to_model(world[chosen[0]]), grid.shape_xyz)}
    while len(chosen) < n and dist.max() > 0:
        best = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(world - world[best], axis=1))
        start = planning.new_patch_start(grid.lps_to_model(world[best]), grid.shape_xyz)
        if start not in starts:
            starts.add(start)
            chosen.append(best)
    if len(chosen) < n:
        raise ValueError(f"Image of {tuple(int(s) for s in size)} voxels is too small for {n} distinct patches.")
    return [cand[i] for i in chosen]


def _reclick_point(image: sitk.Image, point: np.ndarray) -> np.ndarray:
    """A point ``RECLICK_OFFSET_MM`` from ``point`` towards the image centre (same patch core)."""
    size = np.asarray(image.GetSize(), dtype=np.float64)
    step = np.maximum(1.0, np.round(RECLICK_OFFSET_MM / np.asarray(image.GetSpacing())))
    return np.clip(point + np.sign((size - 1) / 2 - point) * step, 0, size - 1)


def _time_clicks(session: Session, image: sitk.Image, points: list[np.ndarray], dev: torch.device,
                 warm: dict[str, float | None]) -> tuple[list[float], list[float]]:
    """First click (new patch, own target) and re-click per point, in ms; the first point is warm-up."""
    first, again = [], []
    for n, point in enumerate(points):
        session.select_target(f"bench-{n}")
        t_first = timed(functools.partial(session.add_click, point, True), dev)
        _check(session.last_stats.get("new_patch") == 1.0, "first click did not create a new patch")
        t_again = timed(functools.partial(session.add_click, _reclick_point(image, point), True), dev)
        _check(session.last_stats.get("new_patch") == 0.0, "re-click left its patch")
        first.append(1000 * t_first)
        again.append(1000 * t_again)
    warm["first_click"], warm["reclick"] = first[0], again[0]
    return first[1:], again[1:]


def _profile_click(session: Session, point: np.ndarray, dev: torch.device) -> list[dict[str, Any]]:
    """Top-10 ops by self CPU time of one first click (encoder + decoder + paste-back)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    session.select_target("bench-profile")
    with profile(activities=acts) as prof:
        session.add_click(point, True)
        sync(dev)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
             "cpu_total_ms": round(e.cpu_time_total / 1000, 2), "calls": int(e.count)} for e in events]


def _time_train(variant: str, dev: torch.device, use_amp: bool, steps: int,
                warm: dict[str, float | None]) -> tuple[list[float], str]:
    """Milliseconds of real training steps (``Algorithm1`` + AdamW) on synthetic data, and their note.

    One sample (the U/V patch pair, batch 2) per step, the default recipe's click rounds, CPP
    loss and gradient clipping, fresh random weights; data loading is not included.
    """
    from CTSAM3DLib.train.algorithm import Algorithm1
    from CTSAM3DLib.train.config import TrainConfig
    from CTSAM3DLib.train.trainer import make_optimizer

    config = TrainConfig(variant=variant, batch_size=1, samples_per_volume=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(variant).to(dev).train()
        images = torch.rand(TRAIN_PATCHES, 1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE, device=dev)
    zz, yy, xx = np.ogrid[:PATCH_SIZE, :PATCH_SIZE, :PATCH_SIZE]
    sphere = (zz - 32) ** 2 + (yy - 28) ** 2 + (xx - 36) ** 2 < 16 ** 2
    gts = np.stack([sphere, np.roll(sphere, 8, axis=2)])
    first = np.full((TRAIN_PATCHES, 3), 32.0, dtype=np.float32)
    algo, opt = Algorithm1(model, config), make_optimizer(model, config)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = algo(images, gts, first)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()

    warm["train_step"], times = slow_runs(functools.partial(timed, step, dev), steps)
    times = [1000 * t for t in times]
    note = (f"synthetic-data estimate: one real training step (CTSAM3DLib.train Algorithm1: {config.rounds} click "
            "rounds, CPP loss, AdamW, grad clip) on 1 sample = a U/V pair of 64^3 patches (batch 2), random "
            "images and a sphere mask; data loading excluded")
    return times, note


# ---- targets and ratios ------------------------------------------------------------------
def _metric(entry: dict[str, Any], name: str) -> float | None:
    value: Any = entry
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def evaluate_targets(device_type: str, entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """PASS/FAIL of every target of ``TARGETS`` that applies to the device and the measured variants
    (``TRAINED_ONLY_METRICS`` only to entries with trained weights)."""
    out = []
    for dev_type, variant, metric, op, limit in TARGETS:
        if dev_type != device_type:
            continue
        for label, entry in entries.items():
            if variant is not None and entry.get("variant") != variant:
                continue
            if entry.get("weights") == "random" and metric.split(".")[0] in TRAINED_ONLY_METRICS:
                continue
            value = _metric(entry, metric)
            bound = _metric(entry, limit) if isinstance(limit, str) else float(limit)
            ok = value is not None and bound is not None and (value <= bound if op == "<=" else value < bound)
            out.append({"variant": label, "target": f"{metric} {op} {limit}", "value": value, "limit": bound,
                        "pass": bool(ok)})
    return out


# (metric, higher is better) pairs of the speed-up table.
_SPEEDUP_METRICS = (("open_s", False), ("first_click_ms.p50", False), ("reclick_ms.p50", False),
                    ("cpp_ring_s", False), ("train_samples_per_s", True))


def _add_speedups(entries: dict[str, dict[str, Any]]) -> None:
    """Add ``speedup_vs_restv2_tiny`` (x times faster than the fp32 reference run) to each entry."""
    ref = next((e for e in entries.values() if e["variant"] == REFERENCE_VARIANT and e["precision"] == "fp32"), None)
    if ref is None:
        return
    for entry in entries.values():
        ratios = {}
        for name, higher in _SPEEDUP_METRICS:
            a, b = _metric(entry, name), _metric(ref, name)
            if a and b:
                ratios[name] = round(a / b if higher else b / a, 3)
        entry[f"speedup_vs_{REFERENCE_VARIANT}"] = ratios


# ---- small helpers -----------------------------------------------------------------------
def _rounded(obj: Any, digits: int = 4) -> Any:
    """``obj`` with every float rounded (JSON-ready report)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark invariant broken: {message}")


def _reset_peaks(dev: torch.device) -> bool:
    """Reset the CUDA and (Linux) resident-set peaks; True when the RSS peak could be reset."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memorystats(dev)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the high-water mark that ru_maxrss reports
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def _peak_cuda_mb(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / (1 << 20), 1) if dev.type == "cuda" else None


def _load_average() -> float | None:
    """1-minute load average (other processes competing for the CPU make timings unreliable)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _host_info(dev: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu}
