"""``Session``: the interactive engine (set an image once, then click per target).

State per target is an immutable ``TargetSnapshot`` (patch predictions + user clicks);
each click replaces it and pushes the old one on the target's ``History``, so undo/redo
are exact and cheap. Encoder features are cached per patch and shared by all targets.
The mask lives on the input image's own grid and is updated only inside the box a change
touches (see ``planning`` for the patch, CPP and blending policy).

Arrays are ``(z, y, x)``; points ``(x, y, z)``; world frame LPS (``frame="ras"`` converts).
"""

from __future__ import annotations

import logging
import math
import mmap
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
import SimpleITK as sitk

from CTSAM3DLib.aliases import IJK, BBox3D
from CTSAM3DLib.engine import planning, seeding
from CTSAM3DLib.engine.config import CPP_MODES, SessionConfig  # the settings' home; imported from here too
from CTSAM3DLib.engine.history import History, trim
from CTSAM3DLib.engine.progress import ClickMonitor, ProgressCallback, Stage
from CTSAM3DLib.engine.runner import PatchRunner
from CTSAM3DLib.geometry import affine
from CTSAM3DLib.geometry.model_space import PATCH_SIZE, ModelGrid, resample_to_input
from CTSAM3DLib.io.readers import check_image, sitk_geometry_matrix, volume_to_sitk
from CTSAM3DLib.io.volume import Volume
from CTSAM3DLib.model.predictor import Predictor
from CTSAM3DLib.prompts.click import Click
from CTSAM3DLib.prompts.simulate import interior_depth

logger = logging.getLogger(__name__)
__all__ = ["CPP_MODES", "Frame", "PatchState", "Session", "SessionConfig", "TargetSnapshot"]

Frame = Literal["ijk", "lps", "ras"]


@dataclass(frozen=True)
class PatchState:
    """One patch of a target: its clicks (local voxel x, y, z) and probabilities (z, y, x).

    The first ``n_auto`` clicks were placed by CPP expansion to open the patch; the later ones are
    the user's clicks and the clicks the engine spread from them (``spread_positive_depth``,
    ``spread_negative_depth``).
    """

    points: np.ndarray
    labels: np.ndarray
    prob: np.ndarray
    n_auto: int = 0


@dataclass(frozen=True)
class TargetSnapshot:
    """Immutable state of a target: patch start -> ``PatchState``, and the user's clicks."""

    patches: Mapping[IJK, PatchState] = field(default_factory=lambda: MappingProxyType({}))
    clicks: tuple[Click, ...] = ()
    seed: np.ndarray | None = None  # read-only mask the target started from (``set_target_mask``)


@dataclass
class _Target:
    snapshot: TargetSnapshot
    history: History[TargetSnapshot]
    mask: np.ndarray


@dataclass
class _VolumeState:
    image: sitk.Image
    ijk_to_lps: np.ndarray
    grid: ModelGrid
    runner: PatchRunner
    targets: dict[str, _Target] = field(default_factory=dict)


class Session:
    """Click-to-segment session on one CT volume.

    Args:
        predictor: a loaded model (``CTSAM3DLib.load_model``).
        config: engine settings.
    """

    def __init__(self, predictor: Predictor, config: SessionConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or SessionConfig()
        self._state: _VolumeState | None = None
        self.current_target = "default"
        self.last_change: BBox3D | None = None
        self.last_stats: dict[str, float] = {}
        self._seed_image: sitk.Image | None = None  # during a click on a seeded target: its mask, for prev masks
        self._cancel = threading.Event()
        self._monitor = ClickMonitor(None, self._cancel)  # the running click's
        if math.isfinite(self.config.cpp_reach_depth) and self.cpp_mode != "geometric":
            logger.warning("cpp_reach_depth %g is ignored: it moves geometric CPP clicks, and this session's CPP "
                           "mode is %r.", self.config.cpp_reach_depth, self.cpp_mode)

    @property
    def cpp_mode(self) -> str:
        """The CPP mode in use: ``config.cpp_mode``, with ``"auto"`` resolved from the checkpoint."""
        if self.config.cpp_mode != "auto":
            return self.config.cpp_mode
        # load_network records only a valid mode; checkpoints without one get the paper's network CPP
        return str(getattr(self.predictor, "info", {}).get("cpp_mode", "network"))

    @property
    def cpp_min_agreement(self) -> float:
        """The CPP slab-agreement threshold in use: ``config.cpp_min_agreement``, else the checkpoint's, else 0."""
        return float(self._setting("cpp_min_agreement", 0.0))

    @property
    def refine_passes(self) -> int:
        """Self-refinement passes per network call: ``config.refine_passes``, else the checkpoint's, else 0."""
        return int(self._setting("refine_passes", 0))

    def _setting(self, name: str, default: float) -> float:
        """``config.<name>`` if set, else the value the checkpoint records (``Predictor.info``), else ``default``."""
        value = getattr(self.config, name)
        return value if value is not None else getattr(self.predictor, "info", {}).get(name, default)

    # ---- image and targets -------------------------------------------------------------
    def set_volume(self, volume: Volume | sitk.Image) -> None:
        """Set the CT (HU) once; resets all targets. Patches are resampled lazily.

        Raises:
            ImageReadError: (a ValueError) the image is not one 3-D scalar volume with finite values.
        """
        image = volume_to_sitk(volume) if isinstance(volume, Volume) else volume
        check_image(image, "the image given to Session.set_volume")
        grid = ModelGrid.for_image(image)
        runner = PatchRunner(self.predictor, image, grid, self.config.cache_bytes, self.config.batch_size)
        self._state = _VolumeState(image, sitk_geometry_matrix(image), grid, runner)
        self.current_target = "default"

    @property
    def is_volume_set(self) -> bool:
        """Whether ``set_volume`` has been called."""
        return self._state is not None

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the targets with state."""
        return tuple(self._vol.targets)

    def select_target(self, name: str) -> None:
        """Make ``name`` the current target (created empty on first click)."""
        self.current_target = str(name)

    def remove_target(self, name: str) -> bool:
        """Forget a target (its mask, clicks and history); False if it had no state."""
        return self._vol.targets.pop(str(name), None) is not None

    # ---- clicks ------------------------------------------------------------------------
    def add_click(self, point: tuple[float, float, float] | np.ndarray, is_positive: bool = True, *,
                  frame: Frame = "ijk", target: str | None = None,
                  progress: ProgressCallback | None = None) -> BBox3D | None:
        """Add a click and update the target's mask.

        Args:
            point: ``(x, y, z)`` in ``frame``: input voxel indices, or LPS / RAS mm.
            is_positive: foreground (True) or background (False) click.
            frame: coordinate frame of ``point``.
            target: target name (default: the current target).
            progress: called with a `ClickProgress` (patch i of n, ring) as each ring is planned and
                after each network batch; it may raise to stop the click, as `cancel` does.

        Returns:
            The input-grid box ``((i0, j0, k0), (i1, j1, k1))`` (exclusive) that changed, or None.

        Raises:
            RuntimeError: no volume set.
            ValueError: point outside the image, or a negative click before any positive one.
            ClickCancelled: `cancel` was called while the click ran; the target is as before it.
        """
        t0 = time.perf_counter()
        self._cancel.clear()
        vol, tgt = self._vol, self._target(target)
        ijk = self._to_ijk(point, frame)
        seed = tgt.snapshot.seed
        if not is_positive and not any(c.is_positive for c in tgt.snapshot.clicks) and (seed is None or not seed.any()):
            raise ValueError("No positive point yet: the first click on a target must be positive (foreground).")
        model_pt = vol.grid.lps_to_model(affine.ijk_to_lps(vol.ijk_to_lps, ijk))
        patches = dict(tgt.snapshot.patches)
        start = planning.patch_for_click(model_pt, list(patches))
        if start is None and not is_positive:  # a correction: refine the patch that holds it, if one does
            start = planning.patch_for_click(model_pt, list(patches), margin=0)
        is_new = start is None
        start = start or planning.new_patch_start(model_pt, vol.grid.shape_xyz)
        self._seed_image = None if seed is None else seeding.mask_image(tgt.mask, vol.image)
        self._monitor = ClickMonitor(progress, self._cancel)
        try:
            n_spread = self._correct(vol, patches, start, model_pt, is_positive)
            n_cpp = self._expand(vol, patches, start) if is_positive and self.config.use_cpp else 0
        finally:
            self._seed_image = None
        click = Click(tuple(float(v) for v in ijk), bool(is_positive))  # type: ignore[arg-type]
        box = self._commit(tgt, TargetSnapshot(MappingProxyType(patches), tgt.snapshot.clicks + (click,), seed))
        self.last_stats = {"seconds": time.perf_counter() - t0, "patches": 1 + n_cpp + n_spread,
                           "cpp_patches": n_cpp, "spread_patches": n_spread, "new_patch": float(is_new)}
        return box

    def cancel(self) -> None:
        """Stop the click running now (from any thread) at its next network batch: ``add_click`` then
        raises `ClickCancelled` and leaves the target, its mask and its history as they were."""
        self._cancel.set()

    def undo(self, target: str | None = None) -> bool:
        """Restore the state before the last click or reset; False if there is nothing to undo."""
        tgt = self._peek(target)
        prev = tgt.history.undo(tgt.snapshot) if tgt is not None else None
        return prev is not None and self._restore(tgt, prev)  # type: ignore[arg-type]

    def redo(self, target: str | None = None) -> bool:
        """Re-apply the last undone change; False if there is nothing to redo."""
        tgt = self._peek(target)
        nxt = tgt.history.redo(tgt.snapshot) if tgt is not None else None
        return nxt is not None and self._restore(tgt, nxt)  # type: ignore[arg-type]

    def reset(self, target: str | None = None) -> None:
        """Remove all clicks of the target (undoable); the image and feature cache stay."""
        tgt = self._target(target)
        self._commit(tgt, TargetSnapshot())

    def set_target_mask(self, mask: np.ndarray, target: str | None = None) -> BBox3D | None:
        """Start the target from an existing mask, e.g. a segment drawn by hand or edited elsewhere.

        Its patches, clicks and undo history are dropped (undo never goes behind this mask); the mask
        becomes the previous-mask input of its next clicks, positive clicks only add to it and a
        negative click removes only what the model rejects connected to it (see ``seeding``).

        Args:
            mask: ``(z, y, x)`` on the input grid, nonzero = foreground (copied).
            target: target name (default: the current target).

        Returns:
            The input-grid box (exclusive) where the target's mask changed, or None.

        Raises:
            ValueError: the mask's shape is not the image's.
        """
        vol, name = self._vol, self.current_target if target is None else str(target)
        shape = vol.image.GetSize()[::-1]
        if np.shape(mask) != tuple(shape):
            raise ValueError(f"The mask has shape {np.shape(mask)} (z, y, x), but the image has {tuple(shape)}.")
        seed = (np.asarray(mask) != 0).astype(np.uint8)
        seed.flags.writeable = False
        old = vol.targets.get(name)
        box = seeding.changed_box(np.zeros(shape, np.uint8) if old is None else old.mask, seed)
        vol.targets[name] = _Target(TargetSnapshot(seed=seed), History(_snapshot_bytes), seed.copy())
        self.last_change = box
        return box

    def mask(self, target: str | None = None) -> np.ndarray:
        """The target's uint8 mask ``(z, y, x)`` on the input image's grid, as a read-only live view.

        The view follows later clicks, undo and redo of the target (no copy is made, so it is
        cheap to call per click); ``.copy()`` it to keep a result. A target without state (never
        clicked, or removed) gives an all-zero array and is not created.
        """
        found = self._peek(target)
        view = found.mask.view() if found is not None else np.zeros(self._vol.image.GetSize()[::-1], np.uint8)
        view.flags.writeable = False
        return view

    def clicks(self, target: str | None = None) -> tuple[Click, ...]:
        """User clicks of the target, in input voxel coordinates (x, y, z); () for a target without state."""
        found = self._peek(target)
        return found.snapshot.clicks if found is not None else ()

    def close(self) -> None:
        """Free the volume, the masks and the cached features (GPU memory included)."""
        self._state = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------
    @property
    def _vol(self) -> _VolumeState:
        if self._state is None:
            raise RuntimeError("No volume set: call Session.set_volume(volume) before clicking.")
        return self._state

    def _peek(self, name: str | None) -> _Target | None:
        """The target's state, without creating it."""
        return self._vol.targets.get(self.current_target if name is None else str(name))

    def _target(self, name: str | None) -> _Target:
        vol = self._vol
        name = self.current_target if name is None else str(name)
        if name not in vol.targets:
            shape = vol.image.GetSize()[::-1]
            vol.targets[name] = _Target(TargetSnapshot(), History(_snapshot_bytes), _zero_mask(shape))
        return vol.targets[name]

    def _to_ijk(self, point: tuple[float, float, float] | np.ndarray, frame: Frame) -> np.ndarray:
        vol = self._vol
        p = np.asarray(point, dtype=np.float64).reshape(3)
        if frame == "ijk":
            ijk = p
        elif frame in ("lps", "ras"):
            lps = affine.ras_to_lps(p) if frame == "ras" else p
            ijk = affine.lps_to_ijk(vol.ijk_to_lps, lps).reshape(3)
        else:
            raise ValueError(f"Unknown coordinate frame {frame!r}: use 'ijk', 'lps' or 'ras'.")
        size = np.asarray(vol.image.GetSize(), dtype=np.float64)
        if not np.all(np.isfinite(ijk)) or np.any(ijk < -0.5) or np.any(ijk > size - 0.5):
            raise ValueError(f"Point ({_fmt(p)}) in {frame.upper()} lies outside the image: it maps to voxel ({_fmt(ijk)}), "
                             f"but the image has {tuple(int(s) for s in size)} voxels (x, y, z).")
        return ijk

    def _correct(self, vol: _VolumeState, patches: dict[IJK, PatchState], start: IJK, model_pt: np.ndarray,
                 is_positive: bool) -> int:
        """Give the click to ``start`` and to every other patch that holds it and calls it wrongly.

        Overlapping patches blend, so a correction that reaches only one of them can be outvoted
        by another. A negative click that a CPP-opened patch still overrules (its own automatic
        click sits in the leak) retracts that automatic click; a patch left with no positive
        click is dropped. The correction first spreads to the patches it continues into
        (``spread_positive_depth``, ``spread_negative_depth``); returns how many it spread into.
        """
        starts = [start] + planning.disagreeing({s: p.prob for s, p in patches.items() if s != start},
                                                model_pt, is_positive)
        before = {s: patches[s].prob if s in patches else np.zeros((PATCH_SIZE,) * 3, np.float32) for s in starts}
        self._refine(vol, patches, starts, [model_pt] * len(starts), is_positive, ("click", 0))
        depth = self.config.spread_positive_depth if is_positive else self.config.spread_negative_depth
        n_spread = self._spread(vol, patches, before, is_positive, depth) if math.isfinite(depth) else 0
        if is_positive:
            return n_spread
        for s in [s for s in starts if patches[s].n_auto and planning.prob_at(patches[s].prob, s, model_pt) >= 0.5]:
            state = patches.pop(s)  # its leak must not come back as its own previous mask
            user = slice(state.n_auto, None)
            if state.labels[user].any():
                pts, labs = state.points[user], state.labels[user]
                prob = self._segment(vol, [s], [pts], [labs], [self._prev_mask(patches, s)], ("click", 0))[0]
                patches[s] = PatchState(pts, labs, prob)
        return n_spread

    def _spread(self, vol: _VolumeState, patches: dict[IJK, PatchState], before: Mapping[IJK, np.ndarray],
                is_positive: bool, depth: float) -> int:
        """Ring by ring, give each patch a click of the same sign where a correction continues into it
        (`planning.spread_clicks`; each patch once, at most ``max_patches - 1``); returns how many got one.

        ``before``: the clicked patches' probabilities before the click (zeros for a new patch).
        """
        def changed(old: np.ndarray, new: np.ndarray) -> np.ndarray:
            return (old < 0.5) & (new >= 0.5) if is_positive else (old >= 0.5) & (new < 0.5)

        changes = {u: changed(old, patches[u].prob) for u, old in before.items()}
        done, budget = set(before), self.config.max_patches - 1
        n = ring = 0
        while changes and budget > 0:
            jobs: dict[IJK, tuple[float, float, float]] = {}
            probs = {s: p.prob for s, p in patches.items()}
            for u, region in changes.items():
                for v, point in planning.spread_clicks(region, u, probs, done | set(jobs), depth, is_positive):
                    jobs.setdefault(v, point)
            starts = list(jobs)[:budget]
            if not starts:
                break
            budget -= len(starts)
            n += len(starts)
            done.update(starts)
            olds = {v: patches[v].prob for v in starts}
            ring += 1
            self._refine(vol, patches, starts, [np.asarray(v) + jobs[v] for v in starts], is_positive, ("spread", ring))
            changes = {v: changed(olds[v], patches[v].prob) for v in starts}
        return n

    def _refine(self, vol: _VolumeState, patches: dict[IJK, PatchState], starts: list[IJK],
                points_model: list[np.ndarray], is_positive: bool, step: tuple[Stage, int]) -> None:
        """Add a click to each patch at ``starts`` (at its model point; new patches are created) and re-run
        them as one batch (``step``: the stage and ring, for progress)."""
        pts, labs, autos = [], [], []
        for start, model_pt in zip(starts, points_model):
            old = patches.get(start)
            p = np.asarray([model_pt - np.asarray(start)], dtype=np.float32)
            lab = np.asarray([1 if is_positive else 0], dtype=np.int64)
            if old is not None:
                p, lab = np.concatenate([old.points, p]), np.concatenate([old.labels, lab])
            pts.append(p)
            labs.append(lab)
            autos.append(0 if old is None else old.n_auto)
        prevs = [self._prev_mask(patches, s) for s in starts]
        probs = self._segment(vol, starts, pts, labs, prevs, step)
        for start, p, lab, n_auto, prob in zip(starts, pts, labs, autos, probs):
            patches[start] = PatchState(p, lab, prob, n_auto)

    def _segment(self, vol: _VolumeState, starts: list[IJK], points: list[np.ndarray], labels: list[np.ndarray],
                 prevs: list[np.ndarray | None], step: tuple[Stage, int]) -> list[np.ndarray]:
        """`PatchRunner.segment` with the click's refine passes, reporting progress and stopping when cancelled."""
        self._monitor.plan(len(starts), *step)
        return vol.runner.segment(starts, points, labels, prevs, self.refine_passes, on_batch=self._monitor.finished)

    def _prev_mask(self, patches: Mapping[IJK, PatchState], start: IJK) -> np.ndarray | None:
        probs = {s: p.prob for s, p in patches.items()}
        blended = planning.blend(probs, start, (PATCH_SIZE,) * 3) if probs else None  # type: ignore[arg-type]
        if self._seed_image is None:
            return blended
        shown = seeding.prev_mask(self._seed_image, self._vol.grid, start)  # the seeded target's current mask
        return shown if blended is None else np.maximum(shown, blended)

    def _expand(self, vol: _VolumeState, patches: dict[IJK, PatchState], start: IJK) -> int:
        """CPP expansion ring by ring from ``start``; returns the number of patches added."""
        frontier, created, ring = [start], 0, 0
        budget = self.config.max_patches - 1
        while frontier and created < budget:
            cands: dict[IJK, IJK] = {}
            for u in frontier:
                mask_u = patches[u].prob >= 0.5
                for d in planning.NEIGHBOUR_OFFSETS:
                    v = planning.neighbour_start(u, d)
                    if v not in cands and not planning.is_covered(v, list(patches)) and planning.reaches(mask_u, d):
                        cands[v] = u
            pairs = list(cands.items())[: budget - created]
            if not pairs:
                break
            ring += 1
            frontier = self._cpp_ring(vol, patches, pairs, ring)
            created += len(frontier)
        return created

    def _cpp_ring(self, vol: _VolumeState, patches: dict[IJK, PatchState], pairs: list[tuple[IJK, IJK]],
                  ring: int) -> list[IJK]:
        """Prompt neighbours V from their source patches U with CPP (ring ``ring``); keep those that segment something."""
        if self.cpp_mode == "geometric":
            depths = {u: interior_depth(patches[u].prob >= 0.5) for u in {u for _, u in pairs}}  # once per U
            heat = [planning.slab_click(depths[u], u, v, self.config.cpp_reach_depth) for v, u in pairs]
            chosen = [(v, pk) for (v, _), (val, pk) in zip(pairs, heat) if val >= self.config.cpp_min_depth]
        else:
            self._monitor.check()
            heat = vol.runner.cpp_peaks([(u, patches[u].prob >= 0.5, v) for v, u in pairs])
            chosen = [(v, pk) for (v, _), (val, pk) in zip(pairs, heat) if val >= self.config.cpp_min_peak]
        if not chosen:
            return []
        starts = [v for v, _ in chosen]
        pts = [np.asarray([pk], dtype=np.float32) for _, pk in chosen]
        labs = [np.ones(1, dtype=np.int64) for _ in chosen]
        prevs = [self._prev_mask(patches, v) for v in starts]
        probs = self._segment(vol, starts, pts, labs, prevs, ("cpp", ring))
        kept = []
        sources = dict(pairs)
        for v, p, lab, prob in zip(starts, pts, labs, probs):
            if (prob >= 0.5).any() and self._agrees(patches[sources[v]], sources[v], prob, v):
                patches[v] = PatchState(p, lab, prob, n_auto=1)
                kept.append(v)
        return kept

    def _agrees(self, source: PatchState, start_u: IJK, prob_v: np.ndarray, start_v: IJK) -> bool:
        """Whether V's mask agrees with its source U's on their shared slab (``cpp_min_agreement``; off at 0)."""
        need = self.cpp_min_agreement
        return need <= 0 or planning.slab_agreement(source.prob >= 0.5, start_u, prob_v >= 0.5, start_v) >= need

    def _commit(self, tgt: _Target, snapshot: TargetSnapshot) -> BBox3D | None:
        tgt.history.push(tgt.snapshot, snapshot)
        box = self._apply(tgt, snapshot)
        trim((t.history for t in self._vol.targets.values()), self.config.history_bytes)
        return box

    def _restore(self, tgt: _Target, snapshot: TargetSnapshot) -> bool:
        self._apply(tgt, snapshot)
        return True

    def _apply(self, tgt: _Target, snapshot: TargetSnapshot) -> BBox3D | None:
        """Make ``snapshot`` current and repaint the mask where patches changed."""
        old, new = tgt.snapshot.patches, snapshot.patches
        changed = [s for s in set(old) | set(new) if old.get(s) is not new.get(s)]
        is_seeded = tgt.snapshot.seed is not None or snapshot.seed is not None
        tgt.snapshot = snapshot
        if is_seeded:  # the merge with the seed is not local to patches: repaint the whole target
            self.last_change = self._repaint_seeded(tgt)
        else:
            self.last_change = self._repaint(tgt, changed) if changed else None
        return self.last_change

    def _repaint_seeded(self, tgt: _Target) -> BBox3D | None:
        """Recompute a seeded target's mask from its seed, patches and negative clicks (``seeding.merge``)."""
        vol, snap = self._vol, tgt.snapshot
        new = np.zeros_like(tgt.mask) if snap.seed is None else np.array(snap.seed)
        if snap.patches:
            low, shape = planning.union_box(list(snap.patches))
            prob = planning.blend({s: p.prob for s, p in snap.patches.items()}, low, shape)
            (i, j, k), values = resample_to_input(prob, vol.grid, low, vol.image, default_value=np.nan)
            if values.size:
                region = new[k:k + values.shape[0], j:j + values.shape[1], i:i + values.shape[2]]
                clicks = [np.subtract(c.point_xyz, (i, j, k)) for c in snap.clicks]
                region[...] = seeding.merge(region, values, clicks, [c.is_positive for c in snap.clicks],
                                            vol.image.GetSpacing())
        box = seeding.changed_box(tgt.mask, new)
        if box is not None:
            (i0, j0, k0), (i1, j1, k1) = box
            tgt.mask[k0:k1, j0:j1, i0:i1] = new[k0:k1, j0:j1, i0:i1]
        return box

    def _repaint(self, tgt: _Target, changed: list[IJK]) -> BBox3D | None:
        vol = self._vol
        low, shape = planning.union_box(changed)
        pad = 2  # blend a margin so interpolation at the box edge sees true neighbours
        low = tuple(v - pad for v in low)
        shape = tuple(v + 2 * pad for v in shape)
        prob = planning.blend({s: p.prob for s, p in tgt.snapshot.patches.items()}, low, shape)  # type: ignore[arg-type]
        start_ijk, values = resample_to_input(prob, vol.grid, low, vol.image, default_value=np.nan)
        if values.size == 0:
            return None
        i, j, k = start_ijk
        region = tgt.mask[k:k + values.shape[0], j:j + values.shape[1], i:i + values.shape[2]]
        np.copyto(region, values >= 0.5, where=~np.isnan(values))  # NaN: beyond the blended box, kept
        nk, nj, ni = values.shape
        return (i, j, k), (i + ni, j + nj, k + nk)


def _zero_mask(shape_zyx: tuple[int, ...]) -> np.ndarray:
    """A zero uint8 mask whose memory is mapped on first write, in small pages.

    NumPy asks the kernel for transparent huge pages on large arrays, so the first click on a new
    target zeroed (and on a fragmented host compacted) 2 MiB pages across all slices it painted:
    2-20 ms of a first click on this project's VM, against a steady 2-3 ms with an anonymous map.
    """
    return np.frombuffer(mmap.mmap(-1, max(1, math.prod(shape_zyx))), dtype=np.uint8).reshape(shape_zyx)


def _snapshot_bytes(stored: TargetSnapshot, other: TargetSnapshot) -> int:
    """Bytes of the patch states ``stored`` holds that ``other`` does not share (what history keeps alive)."""
    return sum(p.prob.nbytes + p.points.nbytes + p.labels.nbytes for start, p in stored.patches.items()
               if other.patches.get(start) is not p)


def _fmt(values: np.ndarray) -> str:
    return ", ".join(f"{float(v):.1f}" for v in values)
