"""Training data: the U/V pair sampler of Algorithm 1, over the model-space cache (`cache`).

Each step draws, per process, ``batch_size`` volumes (uniformly) and
``samples_per_volume`` structures in each: with probability ``size_bias`` proportional to
``voxels ** size_power`` (favouring large organs, which need CPP and many patches), otherwise
uniformly among the volume's structures. For a structure:

1. U's first click is `first_click` on the whole structure (the shared click simulator);
   U is centred on it, shifted by up to ``center_jitter`` voxels, as a first click at inference
   opens a patch centred on the click (moved by up to 16 voxels near the scan's edge,
   `planning.new_patch_start`).
2. V is U's neighbour at 48 voxels (the engine's CPP stride) towards a random one of the 26
   directions in which the structure continues, plus up to ``neighbour_jitter`` voxels; a
   structure that stays inside U gets a V shifted by a few voxels instead. Both contain it.
3. Optional rotation/zoom (one transform for U and V), intensity jitter, blur, thick slices
   and gamma, then mirror flips and axis swaps (`augment`), the same for U, V and W.
4. V's first click is `first_click` on V's mask.
5. Optionally (``cpp_negative_prob``) a negative neighbour W: the patch at 48 voxels from U in a
   direction the structure does not reach, which CPP must leave without a click.

The random stream of step ``s`` on rank ``r`` is ``numpy.random.default_rng([seed, r, s])``:
the sampler has no hidden state, so resuming at any step reproduces the batches exactly.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from CTSAM3DLib.geometry.model_space import MODEL_SPACING_MM, PATCH_SIZE
from CTSAM3DLib.model.predictor import scale_window
from CTSAM3DLib.prompts.simulate import first_click
from CTSAM3DLib.train import augment
from CTSAM3DLib.train.cache import CachedSubject, StructureInfo
from CTSAM3DLib.train.config import TrainConfig

logger = logging.getLogger(__name__)

# Distance between a patch and its CPP neighbours (engine/planning.STRIDE).
NEIGHBOUR_STRIDE = 48
# The 26 neighbour directions (x, y, z).
_DIRECTIONS = np.array([d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)])


@dataclass
class PairBatch:
    """One step's samples on one process (``S`` samples, ``2S`` patches: all U first, then all V).

    Attributes:
        images: float32 ``[2S, 1, 64, 64, 64]`` (z, y, x) in [0, 1] (window applied).
        gts: bool ``[2S, 64, 64, 64]`` ground-truth masks.
        first_points: float32 ``[2S, 3]`` voxel (x, y, z) of each patch's first (positive) click.
        names: ``"subject/structure"`` per sample (length S).
        offsets: int64 ``[S, 3]``: V's first voxel minus U's, (x, y, z) in patch voxels.
        images_w: float32 ``[K, 1, 64, 64, 64]``: negative neighbours W (K may be 0).
        gts_w: bool ``[K, 64, 64, 64]``: the structure inside W (empty unless augmentation moved it in).
        w_of: int64 ``[K]``: the sample (index into the U patches) each W neighbours.
        v_prior: bool ``[S]``: V's first round sees U's round-1 prediction (``v_prior_prob``).
        u_starts: int64 ``[S, 3]``: U's first voxel (x, y, z) in its subject's model grid, before any
            spatial augmentation (with none, U is exactly that box of the model-space CT).
    """

    images: torch.Tensor
    gts: np.ndarray
    first_points: np.ndarray
    names: list[str]
    offsets: np.ndarray
    images_w: torch.Tensor
    gts_w: np.ndarray
    w_of: np.ndarray
    v_prior: np.ndarray
    u_starts: np.ndarray


@dataclass
class _Sample:
    """One U/V pair (HU float32 and bool masks (z, y, x), clicks voxel (x, y, z)) and its optional W."""

    hu_u: np.ndarray
    hu_v: np.ndarray
    gt_u: np.ndarray
    gt_v: np.ndarray
    click_u: np.ndarray
    click_v: np.ndarray
    offset: np.ndarray
    name: str
    start_u: np.ndarray
    hu_w: np.ndarray | None = None
    gt_w: np.ndarray | None = None


class PairSampler:
    """Draws the U/V pairs of Algorithm 1 from cached subjects (see the module docstring).

    Args:
        subjects: cached subjects.
        config: the training config (sampling, augmentation, window, seed).
    """

    def __init__(self, subjects: Sequence[CachedSubject], config: TrainConfig) -> None:
        self.config = config
        self.subjects: list[CachedSubject] = []
        self.choices: list[np.ndarray] = []  # eligible labelled structure indices per subject
        self.probs: list[np.ndarray] = []
        self.pseudo_choices: list[np.ndarray] = []  # eligible pseudo-structure indices per subject
        self.pseudo_probs: list[np.ndarray] = []
        for s in subjects:
            keep, p = self._eligible(s.structures)
            pkeep, pp = self._eligible(s.pseudo) if config.pseudo_ratio > 0 else ([], None)
            if not keep and not pkeep:
                continue
            self.subjects.append(s)
            self.choices.append(np.array(keep, dtype=np.int64))
            self.probs.append(p)
            self.pseudo_choices.append(np.array(pkeep, dtype=np.int64))
            self.pseudo_probs.append(pp)
        if not self.subjects:
            raise ValueError("No training structure left: every subject failed to load, or all structures are "
                             "smaller than min_structure_voxels or excluded.")
        self.subject_probs = self._group_probs()

    def _group_probs(self) -> np.ndarray | None:
        """Draw probability of each subject under ``group_weights`` (None: uniform over subjects)."""
        weights = self.config.group_weights
        if not weights:
            return None
        groups = [s.group for s in self.subjects]
        sizes = {g: groups.count(g) for g in set(groups)}
        missing = sorted(set(weights) - set(sizes))
        if missing:
            logger.warning("group_weights names group(s) %s that no training subject belongs to (groups: %s).",
                           ", ".join(missing), ", ".join(f"{g} ({n})" for g, n in sorted(sizes.items())))
        p = np.array([weights.get(g, 0.0) / sizes[g] for g in groups], dtype=np.float64)
        if p.sum() <= 0:
            raise ValueError(f"group_weights {weights} draws none of the training groups: "
                             f"{', '.join(f'{g} ({n} subjects)' for g, n in sorted(sizes.items()))}.")
        return p / p.sum()

    def _eligible(self, structures: Sequence[StructureInfo]) -> tuple[list[int], np.ndarray | None]:
        """Indices large enough (and not excluded) and their draw probabilities (size-biased, emphasised)."""
        cfg = self.config

        def matches(name: str, patterns: Sequence[str]) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in patterns)

        keep = [k for k, st in enumerate(structures) if st.voxels >= cfg.min_structure_voxels
                and not matches(st.name, cfg.exclude_structures)]
        if not keep:
            return keep, None
        sized = np.array([structures[k].voxels for k in keep], dtype=np.float64) ** cfg.size_power
        p = cfg.size_bias * sized / sized.sum() + (1.0 - cfg.size_bias) / len(keep)
        p *= [cfg.emphasis_factor if matches(structures[k].name, cfg.emphasis_structures) else 1.0 for k in keep]
        return keep, p / p.sum()

    @property
    def num_structures(self) -> int:
        """Number of (subject, structure) pairs that can be drawn (pseudo-structures included)."""
        return int(sum(len(c) for c in self.choices) + sum(len(c) for c in self.pseudo_choices))

    def rng(self, step: int, rank: int) -> np.random.Generator:
        """The random stream of one step on one rank."""
        return np.random.default_rng([self.config.seed, rank, step])

    def batch(self, step: int, rank: int = 0) -> PairBatch:
        """All samples of optimiser step ``step`` on process ``rank`` (a pure function of both)."""
        cfg = self.config
        rng = self.rng(step, rank)
        samples: list[_Sample] = []
        for _ in range(cfg.batch_size):
            n = (int(rng.integers(len(self.subjects))) if self.subject_probs is None
                 else int(rng.choice(len(self.subjects), p=self.subject_probs)))
            for _ in range(cfg.samples_per_volume):
                has_pseudo = len(self.pseudo_choices[n]) > 0
                if has_pseudo and (len(self.choices[n]) == 0 or rng.random() < cfg.pseudo_ratio):
                    k = int(rng.choice(self.pseudo_choices[n], p=self.pseudo_probs[n]))
                    samples.append(self.pair(self.subjects[n], k, rng, is_pseudo=True))
                else:
                    k = int(rng.choice(self.choices[n], p=self.probs[n]))
                    samples.append(self.pair(self.subjects[n], k, rng))
        window = cfg.window_hu
        images = torch.stack([scale_window(x.hu_u, window) for x in samples]
                             + [scale_window(x.hu_v, window) for x in samples])[:, None]
        with_w = [(i, x) for i, x in enumerate(samples) if x.hu_w is not None]
        images_w = (torch.stack([scale_window(x.hu_w, window) for _, x in with_w])[:, None] if with_w
                    else torch.zeros((0, 1) + (PATCH_SIZE,) * 3))
        gts_w = np.stack([x.gt_w for _, x in with_w]) if with_w else np.zeros((0,) + (PATCH_SIZE,) * 3, bool)
        v_prior = (rng.random(len(samples)) < cfg.v_prior_prob if cfg.v_prior_prob > 0
                   else np.zeros(len(samples), dtype=bool))
        return PairBatch(images, np.stack([x.gt_u for x in samples] + [x.gt_v for x in samples]),
                         np.stack([x.click_u for x in samples] + [x.click_v for x in samples]).astype(np.float32),
                         [x.name for x in samples], np.stack([x.offset for x in samples]).astype(np.int64),
                         images_w, gts_w, np.array([i for i, _ in with_w], dtype=np.int64), v_prior,
                         np.stack([x.start_u for x in samples]).astype(np.int64))

    def group_shares(self) -> str:
        """The expected share of draws per subject group, as text for the log (``hn 60% (170), ...``)."""
        groups = [s.group for s in self.subjects]
        probs = self.subject_probs if self.subject_probs is not None else np.full(len(groups), 1 / len(groups))
        share = {g: float(sum(p for p, h in zip(probs, groups) if h == g)) for g in sorted(set(groups))}
        return ", ".join(f"{g} {100 * share[g]:.0f}% ({groups.count(g)} subjects)" for g in share)

    def batches(self, start: int, end: int, rank: int = 0, workers: int = 0) -> Iterator[PairBatch]:
        """The batches of steps ``start`` .. ``end - 1`` in order, prepared ``workers`` processes ahead.

        Batches depend only on (seed, rank, step), so workers change nothing but the speed.
        """
        if workers == 0:
            yield from (self.batch(step, rank) for step in range(start, end))
            return
        loader = torch.utils.data.DataLoader(_StepBatches(self, start, end, rank), batch_size=None, shuffle=False,
                                             num_workers=workers, collate_fn=_as_is, prefetch_factor=4,
                                             multiprocessing_context="fork")
        yield from loader

    def pair(self, subject: CachedSubject, k: int, rng: np.random.Generator, is_pseudo: bool = False) -> _Sample:
        """One sample of structure ``k`` (a pseudo-structure if ``is_pseudo``): U, V, their masks and
        first clicks, and optionally W."""
        cfg = self.config
        info = (subject.pseudo if is_pseudo else subject.structures)[k]
        mask = subject.mask(k, is_pseudo)
        lo = np.asarray(info.lo_zyx)
        click = first_click(mask, rng)
        anchor = np.rint(click.point_xyz).astype(np.int64) + lo[::-1]
        j = cfg.center_jitter
        anchor_in_u = PATCH_SIZE // 2 + rng.integers(-j, j + 1, size=3)
        start_in_u = anchor_in_u.copy()  # before flips
        offset = self._neighbour_offset(mask, lo, anchor - anchor_in_u, rng)
        affine = None
        if cfg.aug_prob > 0 and rng.random() < cfg.aug_prob:
            affine = augment.random_affine(rng, cfg.rotate_deg, cfg.scale_range)
        hu_u, hu_v, gt_u, gt_v = augment.sample_pair(subject.image, mask, lo, anchor, anchor_in_u, offset, affine)
        if affine is not None and not gt_v.any():  # the transform pushed the structure out of V
            affine = None
            hu_u, hu_v, gt_u, gt_v = augment.sample_pair(subject.image, mask, lo, anchor, anchor_in_u, offset, None)
        hus, gts = [hu_u, hu_v], [gt_u, gt_v]
        if cfg.cpp_negative_prob > 0 and rng.random() < cfg.cpp_negative_prob:
            w = self._empty_neighbour(mask, lo, anchor - anchor_in_u, rng)
            if w is not None:
                _, hu_w, _, gt_w = augment.sample_pair(subject.image, mask, lo, anchor, anchor_in_u, w, affine)
                hus.append(hu_w)
                gts.append(gt_w)
        hus = self._acquisition(hus, rng)
        if cfg.flip_prob > 0 or cfg.swap_prob > 0:
            flips, perm = augment.random_flip_swap(rng, cfg.flip_prob, cfg.swap_prob)
            hus = [augment.flip_swap_array(h, flips, perm) for h in hus]
            gts = [augment.flip_swap_array(g, flips, perm) for g in gts]
            anchor_in_u = np.rint(augment.flip_swap_point(anchor_in_u, flips, perm)).astype(np.int64)
            offset = augment.flip_swap_offset(offset, flips, perm)
        gts[0][tuple(anchor_in_u[::-1])] = True  # the click voxel is foreground by construction
        click_v = first_click(gts[1], rng) if gts[1].any() else None
        pt_v = np.asarray(click_v.point_xyz if click_v else anchor_in_u - offset, dtype=np.float32)
        sample = _Sample(hus[0], hus[1], gts[0], gts[1], anchor_in_u.astype(np.float32), pt_v,
                         np.asarray(offset, dtype=np.int64), f"{subject.subject_id}/{info.name}", anchor - start_in_u)
        if len(hus) == 3:
            sample.hu_w, sample.gt_w = hus[2], gts[2]
        return sample

    def _acquisition(self, hus: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """Intensity jitter, blur, thick slices and gamma: one draw, applied to every patch of a sample."""
        cfg = self.config
        if cfg.intensity_prob > 0 and rng.random() < cfg.intensity_prob:
            a, b, std = augment.intensity_params(rng, cfg.intensity_scale, cfg.intensity_shift_hu, cfg.noise_std_hu)
            hus = [augment.apply_intensity(h, a, b, std, rng) for h in hus]
        if cfg.blur_prob > 0 and rng.random() < cfg.blur_prob:
            sigma = float(rng.uniform(*cfg.blur_sigma))
            hus = [augment.blur(h, sigma) for h in hus]
        if cfg.thickness_prob > 0 and rng.random() < cfg.thickness_prob:
            mm = float(rng.uniform(*cfg.thickness_mm))
            hus = [augment.slice_thickness(h, mm, MODEL_SPACING_MM) for h in hus]
        if cfg.gamma_prob > 0 and rng.random() < cfg.gamma_prob:
            g = float(rng.uniform(*cfg.gamma_range))
            hus = [augment.gamma_hu(h, g, cfg.window_hu) for h in hus]
        return hus

    @staticmethod
    def _empty_neighbour(mask: np.ndarray, lo_zyx: np.ndarray, start_u_xyz: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray | None:
        """Offset (x, y, z) to a neighbour of U at the CPP stride that holds none of the structure."""
        empty = [d for d in _DIRECTIONS if _count_in_box(mask, lo_zyx, start_u_xyz + NEIGHBOUR_STRIDE * d) == 0]
        return NEIGHBOUR_STRIDE * empty[int(rng.integers(len(empty)))] if empty else None

    def _neighbour_offset(self, mask: np.ndarray, lo_zyx: np.ndarray, start_u_xyz: np.ndarray,
                          rng: np.random.Generator) -> np.ndarray:
        """Offset (x, y, z) from U to V: a neighbour direction where the structure continues."""
        cfg = self.config
        need = max(1, min(cfg.min_structure_voxels, int(mask.sum()) // 20))
        valid = []
        for d in _DIRECTIONS:
            start_v = start_u_xyz + NEIGHBOUR_STRIDE * d
            if _count_in_box(mask, lo_zyx, start_v) >= need:
                valid.append(d)
        j = cfg.neighbour_jitter
        if valid:
            offset = NEIGHBOUR_STRIDE * valid[int(rng.integers(len(valid)))]
            jittered = offset + rng.integers(-j, j + 1, size=3)
            return jittered if _count_in_box(mask, lo_zyx, start_u_xyz + jittered) >= need else offset
        for _ in range(8):  # the structure stays inside U: V is a shifted copy that still holds it
            shift = rng.integers(-12, 13, size=3)
            if _count_in_box(mask, lo_zyx, start_u_xyz + shift) >= need:
                return shift
        return np.zeros(3, dtype=np.int64)


class _StepBatches(torch.utils.data.Dataset):
    """Steps ``start`` .. ``end - 1`` of a sampler as a map-style dataset (item i = step start + i)."""

    def __init__(self, sampler: PairSampler, start: int, end: int, rank: int) -> None:
        self.sampler, self.start, self.end, self.rank = sampler, start, end, rank

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __getitem__(self, i: int) -> PairBatch:
        return self.sampler.batch(self.start + i, self.rank)


def _as_is(batch: PairBatch) -> PairBatch:
    """DataLoader collate function: a sampler batch is already collated."""
    return batch


def _count_in_box(mask: np.ndarray, lo_zyx: np.ndarray, start_xyz: np.ndarray) -> int:
    """Foreground voxels of ``mask`` (placed at ``lo_zyx``) inside the patch starting at ``start_xyz``."""
    a = np.maximum(start_xyz[::-1] - lo_zyx, 0)
    b = np.minimum(start_xyz[::-1] + PATCH_SIZE - lo_zyx, mask.shape)
    if np.any(b <= a):
        return 0
    return int(np.count_nonzero(mask[a[0]:b[0], a[1]:b[1], a[2]:b[2]]))
