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
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
import SimpleITK as sitk

from CTSAM3DLib.aliases import IJK, BBox3D
from CTSAM3DLib.engine import planning
from CTSAM3DLib.engine.history import History
from CTSAM3DLib.engine.runner import PatchRunner
from CTSAM3DLib.geometry import affine
from CTSAM3DLib.geometry.model_space import PATCH_SIZE, ModelGrid, resample_to_input
from CTSAM3DLib.io.readers import sitk_geometry_matrix, volume_to_sitk
from CTSAM3DLib.io.volume import Volume
from CTSAM3DLib.model.predictor import Predictor
from CTSAM3DLib.prompts.click import Click

logger = logging.getLogger(__name__)

Frame = Literal["ijk", "lps", "ras"]


@dataclass(frozen=True)
class SessionConfig:
    """Engine settings.

    Attributes:
        use_cpp: expand a click into neighbouring patches with the CPP predictor.
        max_patches: most patches one click may create (the clicked one included).
        cpp_min_peak: a neighbour whose CPP heatmap peaks below this gets no click.
        cache_bytes: memory budget of the encoder-feature cache.
        batch_size: patches per forward pass during CPP expansion.
    """

    use_cpp: bool = True
    max_patches: int = 27
    cpp_min_peak: float = 0.3
    cache_bytes: int = 1 << 30
    batch_size: int = 8


@dataclass(frozen=True)
class PatchState:
    """One patch of a target: its clicks (local voxel x, y, z) and probabilities (z, y, x)."""

    points: np.ndarray
    labels: np.ndarray
    prob: np.ndarray


@dataclass(frozen=True)
class TargetSnapshot:
    """Immutable state of a target: patch start -> ``PatchState``, and the user's clicks."""

    patches: Mapping[IJK, PatchState] = field(default_factory=lambda: MappingProxyType({}))
    clicks: tuple[Click, ...] = ()


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

    # ---- image and targets -------------------------------------------------------------
    def set_volume(self, volume: Volume | sitk.Image) -> None:
        """Set the CT (HU) once; resets all targets. Patches are resampled lazily."""
        image = volume_to_sitk(volume) if isinstance(volume, Volume) else volume
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
                  frame: Frame = "ijk", target: str | None = None) -> BBox3D | None:
        """Add a click and update the target's mask.

        Args:
            point: ``(x, y, z)`` in ``frame``: input voxel indices, or LPS / RAS mm.
            is_positive: foreground (True) or background (False) click.
            frame: coordinate frame of ``point``.
            target: target name (default: the current target).

        Returns:
            The input-grid box ``((i0, j0, k0), (i1, j1, k1))`` (exclusive) that changed, or None.

        Raises:
            RuntimeError: no volume set.
            ValueError: point outside the image, or a negative click before any positive one.
        """
        t0 = time.perf_counter()
        vol, tgt = self._vol, self._target(target)
        ijk = self._to_ijk(point, frame)
        if not is_positive and not any(c.is_positive for c in tgt.snapshot.clicks):
            raise ValueError("No positive point yet: the first click on a target must be positive (foreground).")
        model_pt = vol.grid.lps_to_model(affine.ijk_to_lps(vol.ijk_to_lps, ijk))
        patches = dict(tgt.snapshot.patches)
        start = planning.patch_for_click(model_pt, list(patches))
        is_new = start is None
        start = start or planning.centred_start(model_pt)
        state = self._refine(vol, patches, start, model_pt, is_positive)
        patches[start] = state
        n_cpp = self._expand(vol, patches, start) if is_new and self.config.use_cpp else 0
        click = Click(tuple(float(v) for v in ijk), bool(is_positive))  # type: ignore[arg-type]
        box = self._commit(tgt, TargetSnapshot(MappingProxyType(patches), tgt.snapshot.clicks + (click,)))
        self.last_stats = {"seconds": time.perf_counter() - t0, "patches": 1 + n_cpp, "cpp_patches": n_cpp,
                           "new_patch": float(is_new)}
        return box

    def undo(self, target: str | None = None) -> bool:
        """Restore the state before the last click or reset; False if there is nothing to undo."""
        tgt = self._target(target)
        prev = tgt.history.undo(tgt.snapshot)
        return prev is not None and self._restore(tgt, prev)

    def redo(self, target: str | None = None) -> bool:
        """Re-apply the last undone change; False if there is nothing to redo."""
        tgt = self._target(target)
        nxt = tgt.history.redo(tgt.snapshot)
        return nxt is not None and self._restore(tgt, nxt)

    def reset(self, target: str | None = None) -> None:
        """Remove all clicks of the target (undoable); the image and feature cache stay."""
        tgt = self._target(target)
        self._commit(tgt, TargetSnapshot())

    def mask(self, target: str | None = None) -> np.ndarray:
        """Read-only uint8 mask ``(z, y, x)`` on the input image's grid."""
        view = self._target(target).mask.view()
        view.flags.writeable = False
        return view

    def clicks(self, target: str | None = None) -> tuple[Click, ...]:
        """User clicks of the target, in input voxel coordinates (x, y, z)."""
        return self._target(target).snapshot.clicks

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

    def _target(self, name: str | None) -> _Target:
        vol = self._vol
        name = self.current_target if name is None else str(name)
        if name not in vol.targets:
            shape = vol.image.GetSize()[::-1]
            vol.targets[name] = _Target(TargetSnapshot(), History(), np.zeros(shape, dtype=np.uint8))
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

    def _refine(self, vol: _VolumeState, patches: dict[IJK, PatchState], start: IJK, model_pt: np.ndarray,
                is_positive: bool) -> PatchState:
        old = patches.get(start)
        pts = np.asarray([model_pt - np.asarray(start)], dtype=np.float32)
        lab = np.asarray([1 if is_positive else 0], dtype=np.int64)
        if old is not None:
            pts, lab = np.concatenate([old.points, pts]), np.concatenate([old.labels, lab])
        prev = self._prev_mask(patches, start)
        prob = vol.runner.segment([start], [pts], [lab], [prev])[0]
        return PatchState(pts, lab, prob)

    @staticmethod
    def _prev_mask(patches: Mapping[IJK, PatchState], start: IJK) -> np.ndarray | None:
        probs = {s: p.prob for s, p in patches.items()}
        if not probs:
            return None
        return planning.blend(probs, start, (PATCH_SIZE,) * 3)  # type: ignore[arg-type]

    def _expand(self, vol: _VolumeState, patches: dict[IJK, PatchState], start: IJK) -> int:
        """CPP expansion ring by ring from ``start``; returns the number of patches added."""
        frontier, created = [start], 0
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
            frontier = self._cpp_ring(vol, patches, pairs)
            created += len(frontier)
        return created

    def _cpp_ring(self, vol: _VolumeState, patches: dict[IJK, PatchState], pairs: list[tuple[IJK, IJK]]) -> list[IJK]:
        """Prompt neighbours V from their source patches U with CPP; keep those that segment something."""
        heat = vol.runner.cpp_peaks([(u, patches[u].prob >= 0.5, v) for v, u in pairs])
        chosen = [(v, pk) for (v, _), (val, pk) in zip(pairs, heat) if val >= self.config.cpp_min_peak]
        if not chosen:
            return []
        starts = [v for v, _ in chosen]
        pts = [np.asarray([pk], dtype=np.float32) for _, pk in chosen]
        labs = [np.ones(1, dtype=np.int64) for _ in chosen]
        prevs = [self._prev_mask(patches, v) for v in starts]
        probs = vol.runner.segment(starts, pts, labs, prevs)
        kept = []
        for v, p, lab, prob in zip(starts, pts, labs, probs):
            if (prob >= 0.5).any():
                patches[v] = PatchState(p, lab, prob)
                kept.append(v)
        return kept

    def _commit(self, tgt: _Target, snapshot: TargetSnapshot) -> BBox3D | None:
        tgt.history.push(tgt.snapshot)
        return self._apply(tgt, snapshot)

    def _restore(self, tgt: _Target, snapshot: TargetSnapshot) -> bool:
        self._apply(tgt, snapshot)
        return True

    def _apply(self, tgt: _Target, snapshot: TargetSnapshot) -> BBox3D | None:
        """Make ``snapshot`` current and repaint the mask where patches changed."""
        old, new = tgt.snapshot.patches, snapshot.patches
        changed = [s for s in set(old) | set(new) if old.get(s) is not new.get(s)]
        tgt.snapshot = snapshot
        self.last_change = self._repaint(tgt, changed) if changed else None
        return self.last_change

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
        inside = np.isfinite(values)
        region[inside] = (values[inside] >= 0.5).astype(np.uint8)
        nk, nj, ni = values.shape
        return (i, j, k), (i + ni, j + nj, k + nk)


def _fmt(values: np.ndarray) -> str:
    return ", ".join(f"{float(v):.1f}" for v in values)
