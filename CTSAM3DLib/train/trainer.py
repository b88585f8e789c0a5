"""The training loop: Algorithm 1 of CT-SAM3D with AdamW, warm-up + step decay, DDP and exact resume.

One optimiser step, per process (`algorithm.Algorithm1.forward`):

1. Encode all U and V patches once (``[2S, 1, 64^3]``).
2. Round 1: the prompt is the first click only (``[Y=0, P, N]``); the decoder gives logits.
3. CPP, on round 1's binarised predictions (inference expands with CPP after one click):
   heatmap for V from ``(U, U's mask, V)`` and for U from ``(V, V's mask, U)``, MSE to a
   Gaussian at the centroid of the structure inside V (resp. U).
4. Rounds 2..N: one corrective click per patch from the shared simulator
   (`CTSAM3DLib.prompts.simulate.next_click`, the deepest point of the error, positive in a
   false negative, negative in a false positive) on the detached prediction; the prompt holds
   all clicks so far and the previous probabilities as Y.
5. Loss = mean over rounds of L_seg (0.2 focal + 0.8 Dice) + ``cpp_weight`` * L_cpp. Gradients of
   every round flow into the shared encoder features; there is one optimiser step per sample
   (the paper's Algorithm 1 steps the optimiser inside the click loop; one step over the
   summed rounds costs one encoder pass instead of N and trains the same objective).

Outputs in ``output_dir``: ``model.pt`` (our checkpoint format, `load_network` / `load_model`),
``train_state.pt`` (everything needed to resume; plain types and tensors, loadable with
``weights_only=True``), ``metrics.jsonl``, ``config.yaml``, ``data_issues.txt`` and, if asked,
TensorBoard events. Only global rank 0 writes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import platform
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from CTSAM3DLib.io.atomic import atomic_write_text
from CTSAM3DLib.io.datasets import DataIssue, log_issues, scan_datasets, scan_unlabeled
from CTSAM3DLib.model.build import build_model, grown
from CTSAM3DLib.model.checkpoint import atomic_torch_save, load_network, save_checkpoint
from CTSAM3DLib.model.ctsam3d import CTSAM3D
from CTSAM3DLib.model.predictor import resolve_device
from CTSAM3DLib.train import distributed as D
from CTSAM3DLib.train.algorithm import Algorithm1
from CTSAM3DLib.train.cache import build_cache
from CTSAM3DLib.train.config import TrainConfig
from CTSAM3DLib.train.data import PairBatch, PairSampler

logger = logging.getLogger(__name__)

# Marker and version of train_state.pt.
STATE_FORMAT = "ctsam3d-train-state"
STATE_VERSION = 1
# Config fields that may change between a run and its resumption (they do not change the maths).
_RESUMABLE_CHANGES = {"steps", "log_every", "checkpoint_every", "tensorboard", "threads"}


# ---------------------------------------------------------------------------------------
# Schedule, optimiser, RNG and checkpoint state
# ---------------------------------------------------------------------------------------
def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then x factor at each milestone."""
    factor = 1.0
    if step < config.warmup_steps:
        factor = config.warmup_start_factor + (1.0 - config.warmup_start_factor) * step / config.warmup_steps
    factor *= config.lr_decay_factor ** sum(1 for m in config.lr_decay_steps if step >= m)
    return config.lr * factor


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms, biases and other 1-D parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr_at(0, config), betas=config.betas)


def rng_state() -> dict[str, Any]:
    """torch (+CUDA), numpy and python global RNG states as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read ``train_state.pt`` (``weights_only=True``) and check its format."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Cannot resume: {p} does not exist (the run saved no training state yet).")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise ValueError(f"Cannot resume from {p}: the file is empty, truncated or damaged ({type(exc).__name__}). "
                         f"Its model.pt may still hold the weights: start a new run with init_checkpoint set to it."
                         ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{p} is not a CTSAM3DLib training state.")
    if int(state.get("format_version", 0)) > STATE_VERSION:
        raise ValueError(f"{p} was written by a newer CTSAM3DLib (train state v{state['format_version']}).")
    return state


def _hardware(device: torch.device, info: D.DistInfo) -> dict[str, Any]:
    hw: dict[str, Any] = {"device": device.type, "processes": info.world_size, "cpu": platform.processor() or
                          platform.machine(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def auto_threads(local_processes: int = 1) -> int:
    """CPU threads per process: the cores not busy with other work, shared by this node's processes.

    More OpenMP threads than free cores makes PyTorch's CPU kernels many times slower (threads
    spin waiting for descheduled partners), so the 1-minute load average of the machine is
    subtracted from the usable cores.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        busy = 0
    free = max(1, min(cores, cores - busy))
    return max(1, free // max(1, local_processes))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def train(config: TrainConfig, data_dirs: Sequence[str | Path], output_dir: str | Path, *,
          max_steps: int | None = None, device: str = "cpu", resume: bool = False,
          cache_dir: str | Path | None = None, progress: bool = True,
          unlabeled_dirs: Sequence[str | Path] = ()) -> Path:
    """Train (or fine-tune) a CT-SAM3D network; run it once per process under torchrun for DDP.

    Args:
        config: the recipe.
        data_dirs: dataset folders (any layout of `CTSAM3DLib.io.datasets`).
        output_dir: run folder (created); must not hold a run unless ``resume``.
        max_steps: stop after this many steps in total (the schedule still follows ``config.steps``).
        device: ``"cpu"`` or ``"cuda"`` (under torchrun, GPU ``LOCAL_RANK``).
        resume: continue the run in ``output_dir`` exactly where its ``train_state.pt`` left off.
        cache_dir: preprocessing cache (default ``output_dir/cache``); share it between runs.
        progress: show a tqdm progress bar (rank 0).
        unlabeled_dirs: folders of CTs without labels, trained on through pseudo-structures only
            (needs ``pseudo_ratio > 0``); a scan of a held-out (validation or test) subject of
            ``data_dirs`` is refused (`CTSAM3DLib.io.datasets.scan_unlabeled`).

    Returns:
        Path of the final checkpoint ``output_dir/model.pt``.

    Raises:
        ValueError: bad config, no usable data, a resume whose config differs, an output folder
            that already holds a run.
        RuntimeError: CUDA asked for but absent.
    """
    dev = resolve_device(device)
    info, dev = D.init_distributed(dev)
    is_new_folder = not Path(output_dir).exists()
    try:
        threads = config.threads or auto_threads(info.local_world_size)
        if info.is_main:
            logger.info("Using %d torch CPU thread(s) per process.", threads)
        with _torch_threads(threads):
            return _run(config, [Path(d) for d in data_dirs], Path(output_dir), max_steps, dev, resume,
                        Path(cache_dir) if cache_dir else None, progress, info, [Path(d) for d in unlabeled_dirs])
    except BaseException:
        if is_new_folder and info.is_main:
            _remove_empty_folders(Path(output_dir))
        raise
    finally:
        D.cleanup(info)


def _remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and its sub-folders where they hold no file (a run that failed before writing any)."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def _run(config: TrainConfig, data_dirs: list[Path], out: Path, max_steps: int | None, dev: torch.device,
         resume: bool, cache_dir: Path | None, progress: bool, info: D.DistInfo, unlabeled_dirs: list[Path]) -> Path:
    t_start = time.perf_counter()
    state_path, model_path = out / "train_state.pt", out / "model.pt"
    if not resume and state_path.exists():
        raise ValueError(f"{out} already holds a training run ({state_path.name}); pass resume=True (--resume) to "
                         "continue it, or choose another output folder.")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    D.barrier(info)
    state = load_train_state(state_path) if resume else None
    if state is not None:
        _check_resume_config(state, config)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)

    # ---- data ----
    scan = scan_datasets(data_dirs, splits=config.splits)
    subjects, scan_issues = list(scan.subjects), list(scan.issues)
    if unlabeled_dirs:
        if config.pseudo_ratio <= 0:
            raise ValueError("Unlabelled CT folders are trained on through pseudo-structures only: set pseudo_ratio "
                             "above 0 (e.g. --set pseudo_ratio=0.3).")
        held_out = [s for s in scan_datasets(data_dirs).subjects if s.split is not None and s.split not in config.splits]
        unlabeled = scan_unlabeled(unlabeled_dirs, held_out)
        subjects += unlabeled.subjects
        scan_issues += unlabeled.issues
    cached, cache_issues = build_cache(subjects, cache_dir or out / "cache", info.rank, info.world_size,
                                       barrier=lambda: D.barrier(info),
                                       pseudo_seed=config.seed if config.pseudo_ratio > 0 else None,
                                       supervoxel_mm=config.pseudo_supervoxel_mm, workers=config.data_workers)
    issues: list[DataIssue] = scan_issues + cache_issues
    if info.is_main:  # before the sampler, which refuses data with nothing usable left
        log_issues(issues, logger)
        atomic_write_text(out / "data_issues.txt", "".join(f"{i}\n" for i in issues), overwrite=True)
    try:
        sampler = PairSampler(cached, config)
    except ValueError as exc:
        raise ValueError(f"{exc} All {len(issues)} data issue(s) are listed in {out / 'data_issues.txt'}.") from None
    if info.is_main:
        atomic_write_text(out / "config.yaml", config.to_yaml(), overwrite=True)
        logger.info("Training data: %d subjects, %d structures (%d data issues) from %s; draws per group: %s",
                    len(sampler.subjects), sampler.num_structures, len(issues), ", ".join(map(str, data_dirs)),
                    sampler.group_shares())

    # ---- model and optimiser ----
    model = build_model(config.variant) if state is not None else _initial_model(config)
    if config.train_parts == "cpp":  # the segmenter stays exactly as loaded
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("cpp_predictor."))
    if config.freeze_geodesic_skip:
        skip = getattr(model.mask_decoder, "geodesic_skip", None)
        if skip is None:
            raise ValueError(f"freeze_geodesic_skip: variant {config.variant!r} has no geodesic logit skip "
                             "(only compact_geo_skip has one).")
        skip.requires_grad_(False)
    optimizer = make_optimizer(model, config)
    start, wall_before = 0, 0.0
    seen: collections.Counter[str] = collections.Counter()  # samples drawn per subject (this rank)
    if state is not None:
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start, wall_before = int(state["step"]), float(state["wall_time_s"])
        if info.is_main:  # the run's totals so far (every rank's), kept by rank 0
            seen.update(state.get("samples_per_subject", {}))
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:
            logger.warning("Resuming with %d processes instead of %d: global RNG states are re-seeded (batches are "
                           "still exact: they depend only on seed, rank and step).", info.world_size, len(rngs))
        if [str(d) for d in data_dirs] != state.get("data_dirs"):
            logger.warning("Resuming with data folders %s; the run started with %s.", data_dirs, state.get("data_dirs"))
    model.to(dev).train()
    if config.train_parts == "cpp":  # frozen means frozen: no norm statistics are updated either
        model.image_encoder.eval()
        model.mask_decoder.eval()
    for group_state in optimizer.state.values():  # optimizer tensors follow the model's device
        for k, v in group_state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                group_state[k] = v.to(dev)
    algo: nn.Module = Algorithm1(model, config)
    if info.enabled:
        algo = DistributedDataParallel(algo, device_ids=[dev] if dev.type == "cuda" else None)
    end = min(config.steps, max_steps) if max_steps is not None else config.steps

    writer = _Logger(out, config, start, info.is_main and progress, end, info) if info.is_main else None
    amp = config.amp and dev.type == "cuda"
    samples_per_step = config.batch_size * config.samples_per_volume * info.world_size
    step_times: list[float] = []
    clip_groups = [[p for n, p in model.named_parameters() if not n.startswith("cpp_predictor.")],
                   list(model.cpp_predictor.parameters())]
    try:
        stream = sampler.batches(start, end, info.rank, config.data_workers)
        for step in range(start, end):
            t0 = time.perf_counter()
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, config)
            batch: PairBatch = next(stream)
            seen.update(name.split("/", 1)[0] for name in batch.names)
            t_data = time.perf_counter() - t0
            with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
                result = algo(batch.images.to(dev, non_blocking=True), batch.gts, batch.first_points, batch.offsets,
                              batch.v_prior, batch.images_w, batch.gts_w, batch.w_of)
            loss = result["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"Loss became {loss.item()} at step {step + 1}; lower lr or check the data.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:  # the segmenter and the CPP sub-network are clipped separately
                for params in clip_groups:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            dt = time.perf_counter() - t0
            step_times.append(dt)
            done = step + 1
            log_now = done % config.log_every == 0 or done == end
            if log_now:
                keys = sorted(k for k in result if k != "loss")
                vals = D.all_reduce_mean(torch.stack([loss.detach().float()] + [result[k].float() for k in keys]).cpu(),
                                         info)
                if writer is not None:
                    window = step_times[-config.log_every:]
                    record = {"step": done, "loss": float(vals[0]), **{k: float(v) for k, v in zip(keys, vals[1:])},
                              "lr": lr_at(step, config), "samples_per_s": samples_per_step * len(window) / sum(window),
                              "step_time_s": sum(window) / len(window), "data_time_s": t_data,
                              "elapsed_s": wall_before + time.perf_counter() - t_start}
                    writer.log(record)
            if writer is not None:
                writer.tick(float(loss.detach()), samples_per_step / dt)
            if done == end or (config.checkpoint_every and done % config.checkpoint_every == 0):
                _save(out, model, optimizer, config, done, data_dirs, wall_before + time.perf_counter() - t_start,
                      dev, info, samples_per_step, seen)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    if writer is not None:
        writer.close()
        if len(step_times) > 1:
            rate = samples_per_step * (len(step_times) - 1) / sum(step_times[1:])
            logger.info("Finished %d steps (%d this run) in %.0f s: %.3f samples/s (%.2f s per step) on %s x%d.",
                        end, end - start, time.perf_counter() - t_start, rate, sum(step_times[1:]) /
                        (len(step_times) - 1), dev.type, info.world_size)
    if start >= end and info.is_main:
        logger.info("Nothing to do: the run is already at step %d of %d.", start, end)
    D.barrier(info)
    return model_path


def _initial_model(config: TrainConfig) -> CTSAM3D:
    if config.init_checkpoint is None:
        return build_model(config.variant)
    model, variant, _, _ = load_network(config.init_checkpoint, window_hu=config.window_hu)
    if variant != config.variant:
        try:
            model = grown(model, config.variant)
        except ValueError:
            raise ValueError(f"init_checkpoint {config.init_checkpoint} holds variant {variant!r} but the config says "
                             f"variant {config.variant!r}; set variant: {variant}.") from None
        logger.info("Fine-tuning from %s (variant %s, grown to %s: the new layers start at zero).",
                    config.init_checkpoint, variant, config.variant)
        return model
    logger.info("Fine-tuning from %s (variant %s).", config.init_checkpoint, variant)
    return model


def _check_resume_config(state: dict[str, Any], config: TrainConfig) -> None:
    saved, now = dict(state["config"]), config.to_dict()
    diffs = [k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diffs:
        raise ValueError("Cannot resume exactly: the config differs from the run's in "
                         + ", ".join(f"{k} ({saved.get(k)!r} -> {now[k]!r})" for k in diffs)
                         + ". Use the run's config.yaml, or start a new run (init_checkpoint to fine-tune).")


def _save(out: Path, model: CTSAM3D, optimizer: torch.optim.Optimizer, config: TrainConfig, step: int,
          data_dirs: list[Path], wall: float, dev: torch.device, info: D.DistInfo, samples_per_step: int,
          seen: collections.Counter[str]) -> None:
    """Rank 0 writes model.pt, train_state.pt and samples_per_subject.json atomically; every rank
    contributes its RNG state and its samples per subject."""
    rngs = D.gather_objects(rng_state(), info)
    per_subject: collections.Counter[str] = collections.Counter()
    for counts in D.gather_objects(dict(seen), info):
        per_subject.update(counts)
    if not info.is_main:
        return
    provenance = {
        "config": config.to_dict(), "data_dirs": [str(d) for d in data_dirs], "steps": step,
        "schedule_steps": config.steps, "samples_seen": step * samples_per_step, "wall_time_s": round(wall, 1),
        "hardware": _hardware(dev, info), "torch_version": str(torch.__version__),
        "init_checkpoint": config.init_checkpoint,
    }
    state = {
        "format": STATE_FORMAT, "format_version": STATE_VERSION, "step": step, "config": config.to_dict(),
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "scheduler": {"kind": "warmup_step", "next_step": step},
        "sampler": {"kind": "step-keyed", "seed": config.seed, "next_step": step},
        "rng": rngs, "data_dirs": [str(d) for d in data_dirs], "wall_time_s": wall, "world_size": info.world_size,
        "samples_per_subject": dict(sorted(per_subject.items())),
    }
    atomic_write_text(out / "samples_per_subject.json", json.dumps(state["samples_per_subject"], indent=1),
                      overwrite=True)
    atomic_torch_save(state, out / "train_state.pt")
    save_checkpoint(out / "model.pt", model, config.variant, config.window_hu, provenance=provenance)
    logger.info("Saved checkpoint at step %d: %s", step, out / "model.pt")


def _read_metrics(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` of each line of ``metrics.jsonl``; a cut-off last line (a crash mid-write) is dropped."""
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    records = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if n == len(lines):
                logger.warning("%s: dropping its incomplete last line (the run stopped while writing it).", path)
                break
            raise ValueError(f"Cannot resume: {path} line {n} is not a metrics record ({exc}); remove or repair "
                             "that line.") from None
        records.append((line, record))
    return records


class _Logger:
    """Rank-0 metrics: metrics.jsonl, optional TensorBoard, tqdm bar."""

    def __init__(self, out: Path, config: TrainConfig, start: int, progress: bool, end: int, info: D.DistInfo) -> None:
        self.path = out / "metrics.jsonl"
        if self.path.exists():  # drop lines past the resumed step (logged after the last checkpoint)
            kept = [ln for ln, record in _read_metrics(self.path) if record.get("step", 0) <= start]
            atomic_write_text(self.path, "".join(f"{ln}\n" for ln in kept), overwrite=True)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.tb = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start + 1)
            except ImportError:
                logger.warning("tensorboard: true, but the tensorboard package is not installed "
                               "(pip install tensorboard); logging to metrics.jsonl only.")
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=end, initial=start, unit="step", dynamic_ncols=True, desc="train")

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, record["step"])
        logger.debug("%s", record)

    def tick(self, loss: float, samples_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.2f}", refresh=False)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()
