"""Training data: a model-space cache of the datasets and the U/V pair sampler of Algorithm 1.

Cache. Each subject is preprocessed once onto the 1.5 mm model grid of its CT
(`ModelGrid.for_image`; CT linear with -1024 HU padding, labels nearest neighbour by physical
coordinates) and stored in one folder::

    <cache>/<subject_id>-<hash of the CT path>/
        image.npy    int16 HU (z, y, x), memory-mapped when training
        masks.npy    uint8: every structure's mask cropped to its bounding box, bit-packed
        index.json   grid, structures (name, box, voxels, byte range), data issues, cache key

The key hashes the CT and label paths, their modification times and sizes, the label tables and
the cache version, so a changed file rebuilds that subject (stale folders are replaced, written
to a temporary folder first and renamed). Labels are resampled only over their bounding box, so
preprocessing takes seconds per subject. Under DDP each rank builds every ``world_size``-th
subject, then all ranks read the whole cache.

Sampler. Each step draws, per process, ``batch_size`` volumes (uniformly) and
``samples_per_volume`` structures in each: with probability ``size_bias`` proportional to
``voxels ** size_power`` (favouring large organs, which need CPP and many patches), otherwise
uniformly among the volume's structures. For a structure:

1. U's first click is `first_click` on the whole structure (the shared click simulator);
   U is centred on it, shifted by up to ``center_jitter`` voxels, as a first click at inference
   opens a patch centred on the click.
2. V is U's neighbour at 48 voxels (the engine's CPP stride) towards a random one of the 26
   directions in which the structure continues, plus up to ``neighbour_jitter`` voxels; a
   structure that stays inside U gets a V shifted by a few voxels instead. Both contain it.
3. Optional rotation/zoom (one transform for U and V) and intensity jitter (`augment`).
4. V's first click is `first_click` on V's mask.

The random stream of step ``s`` on rank ``r`` is ``numpy.random.default_rng([seed, r, s])``:
the sampler has no hidden state, so resuming at any step reproduces the batches exactly.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from CTSAM3DLib.geometry.model_space import MODEL_SPACING_MM, PATCH_SIZE, ModelGrid
from CTSAM3DLib.geometry.resample import model_box_of_index_box, resample_to_grid
from CTSAM3DLib.io.datasets import DataIssue, Subject, iter_label_images, structure_mask
from CTSAM3DLib.io.readers import ImageReadError, read_image
from CTSAM3DLib.model.predictor import scale_window
from CTSAM3DLib.prompts.simulate import first_click
from CTSAM3DLib.train import augment
from CTSAM3DLib.train.config import TrainConfig

logger = logging.getLogger(__name__)

# Bump when the cache layout or preprocessing changes (invalidates every cache folder).
CACHE_VERSION = 1
# Distance between a patch and its CPP neighbours (engine/planning.STRIDE).
NEIGHBOUR_STRIDE = 48
# The 26 neighbour directions (x, y, z).
_DIRECTIONS = np.array([d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)])


# ---------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StructureInfo:
    """One cached structure: its model-space bounding box and where its bits are."""

    name: str
    lo_zyx: tuple[int, int, int]
    shape_zyx: tuple[int, int, int]
    offset: int
    nbytes: int
    voxels: int


class CachedSubject:
    """A preprocessed subject, memory-mapped from its cache folder.

    Attributes:
        subject_id: the dataset id.
        folder: the cache folder.
        grid: the model grid of the CT.
        image: int16 HU ``(z, y, x)`` memory map.
        structures: the non-empty structures.
        issues: data issues found while preprocessing (re-reported on every run).
    """

    def __init__(self, folder: Path) -> None:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        self.folder = folder
        self.subject_id: str = index["subject_id"]
        self.grid = ModelGrid(tuple(index["grid"]["origin_lps"]), tuple(index["grid"]["shape_xyz"]),
                              float(index["grid"]["spacing_mm"]))
        self.image: np.ndarray = np.load(folder / "image.npy", mmap_mode="r")
        self.bits: np.ndarray = np.load(folder / "masks.npy", mmap_mode="r")
        self.structures = [StructureInfo(s["name"], tuple(s["lo_zyx"]), tuple(s["shape_zyx"]), int(s["offset"]),
                                         int(s["nbytes"]), int(s["voxels"])) for s in index["structures"]]
        self.issues = _issues_from(index)

    def mask(self, k: int) -> np.ndarray:
        """Bool mask of structure ``k`` over its bounding box, (z, y, x)."""
        s = self.structures[k]
        n = int(np.prod(s.shape_zyx))
        flat = np.unpackbits(np.asarray(self.bits[s.offset:s.offset + s.nbytes]), count=n)
        return flat.view(bool).reshape(s.shape_zyx)


def _fingerprint(path: Path) -> list[object]:
    try:
        st = path.stat()
        return [str(path.resolve()), st.st_mtime_ns, st.st_size]
    except OSError:
        return [str(path), None, None]


def cache_key(subject: Subject) -> str:
    """Hash of everything the cached arrays depend on (files, their mtimes and sizes, tables, version)."""
    payload = {
        "version": CACHE_VERSION, "spacing": MODEL_SPACING_MM, "image": _fingerprint(subject.image_path),
        "labels": [[_fingerprint(src.path), [[n, list(v)] for n, v in src.structures]] for src in subject.labels],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_folder(subject: Subject, cache_dir: Path) -> Path:
    """Cache folder of a subject (named by id and a hash of its CT path)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", subject.subject_id)[:80] or "subject"
    tag = hashlib.sha1(str(subject.image_path.resolve()).encode()).hexdigest()[:10]
    return cache_dir / f"{safe}-{tag}"


def preprocess_subject(subject: Subject, cache_dir: str | Path) -> tuple[Path | None, list[DataIssue]]:
    """Build (or reuse) the cache folder of one subject.

    Returns:
        ``(folder or None, issues)``; None when the CT is unusable (the issue says why). The
        issues are also stored in the folder's ``index.json`` (failures too, so a bad file is
        not re-read until it changes).
    """
    cache_dir = Path(cache_dir)
    folder = cache_folder(subject, cache_dir)
    key = cache_key(subject)
    index_path = folder / "index.json"
    if index_path.is_file():
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("key") == key:
            return (None if old.get("failed") else folder), _issues_from(old)
        logger.info("Cache of %s is stale or damaged; rebuilding %s", subject.subject_id, folder)
    try:
        image = read_image(subject.image_path)
    except ImageReadError as exc:
        problem = "image file missing" if not subject.image_path.exists() else f"unreadable image ({exc})"
        issue = DataIssue(subject.subject_id, subject.image_path, f"{problem}; subject skipped")
        _write_folder(folder, {"key": key, "version": CACHE_VERSION, "subject_id": subject.subject_id,
                               "failed": True, "issues": [_issue_dict(issue)]}, None, None)
        return None, [issue]
    grid = ModelGrid.for_image(image)
    ct = resample_to_grid(image, grid, is_label=False)
    ct_i16 = np.clip(np.rint(ct), -32768, 32767).astype(np.int16)
    del ct
    issues: list[DataIssue] = []
    infos: list[dict[str, object]] = []
    chunks: list[np.ndarray] = []
    offset = 0
    seen: set[str] = set()
    for src, label, src_issues in iter_label_images(subject, image):
        issues.extend(src_issues)
        if label is None:
            continue
        for name, lo_zyx, mask in _model_space_masks(subject, src.structures, label, grid, issues, src.path):
            if name in seen:
                continue
            seen.add(name)
            packed = np.packbits(mask.ravel())
            infos.append({"name": name, "lo_zyx": [int(v) for v in lo_zyx], "shape_zyx": list(mask.shape),
                          "offset": offset, "nbytes": int(packed.size), "voxels": int(mask.sum())})
            chunks.append(packed)
            offset += packed.size
    index = {
        "key": key, "version": CACHE_VERSION, "subject_id": subject.subject_id, "image_path": str(subject.image_path),
        "grid": {"origin_lps": list(grid.origin_lps), "shape_xyz": list(grid.shape_xyz), "spacing_mm": grid.spacing_mm},
        "structures": infos,
        "issues": [_issue_dict(i) for i in issues],
    }
    _write_folder(folder, index, ct_i16, np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))
    return folder, issues


def _issue_dict(issue: DataIssue) -> dict[str, object]:
    return {"subject_id": issue.subject_id, "path": str(issue.path), "problem": issue.problem, "skipped": issue.skipped}


def _issues_from(index: dict[str, Any]) -> list[DataIssue]:
    return [DataIssue(i["subject_id"], Path(i["path"]), i["problem"], bool(i["skipped"])) for i in index["issues"]]


def _write_folder(folder: Path, index: dict[str, Any], image: np.ndarray | None, bits: np.ndarray | None) -> None:
    """Write a cache folder under a temporary name, then replace the old one."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if image is not None and bits is not None:
        np.save(tmp / "image.npy", image)
        np.save(tmp / "masks.npy", bits)
    (tmp / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _model_space_masks(subject: Subject, structures: tuple[tuple[str, tuple[int, ...]], ...], label: sitk.Image,
                       grid: ModelGrid, issues: list[DataIssue], path: Path):
    """Yield ``(name, lo_zyx, tight bool mask)`` in model space, resampling each structure's box only."""
    array = sitk.GetArrayViewFromImage(label)
    if len(structures) == 1 and not structures[0][1]:
        boxes: dict[int, tuple[slice, ...] | None] = {0: _bbox(array != 0)}
        keyed = [(structures[0][0], structures[0][1], [0])]
    else:
        ints = np.asarray(array)
        if not np.issubdtype(ints.dtype, np.integer):
            ints = np.rint(ints).astype(np.int64)
        wanted = sorted({v for _, vals in structures for v in vals if v > 0})
        top = max(wanted, default=0)
        sub = np.where((ints > 0) & (ints <= top), ints, 0) if ints.size and ints.max() > top else ints
        found = ndimage.find_objects(sub.astype(np.int32, copy=False), max_label=top) if top else []
        boxes = {v: found[v - 1] for v in wanted}
        keyed = [(name, vals, list(vals)) for name, vals in structures]
    for name, vals, keys in keyed:
        slabs = [b for b in (boxes.get(k) for k in keys) if b is not None]
        if not slabs:
            issues.append(DataIssue(subject.subject_id, path, f"structure {name!r} has an empty mask; skipped"))
            continue
        lo_zyx = np.min([[s.start for s in b] for b in slabs], axis=0)
        hi_zyx = np.max([[s.stop - 1 for s in b] for b in slabs], axis=0)
        box = model_box_of_index_box(label, grid, lo_zyx[::-1], hi_zyx[::-1])
        if box is None:
            issues.append(DataIssue(subject.subject_id, path, f"structure {name!r} lies outside its CT; skipped"))
            continue
        start_xyz, size_xyz = box
        mask = structure_mask(resample_to_grid(label, grid, is_label=True, region=(start_xyz, size_xyz)), vals)
        tight = _bbox(mask)
        if tight is None:
            issues.append(DataIssue(subject.subject_id, path,
                                    f"structure {name!r} vanishes at 1.5 mm (smaller than a model voxel); skipped"))
            continue
        yield name, start_xyz[::-1] + np.array([s.start for s in tight]), np.ascontiguousarray(mask[tight])


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    out = []
    for axis in range(3):
        hits = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        if hits.size == 0:
            return None
        out.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return out[0], out[1], out[2]


def build_cache(subjects: Sequence[Subject], cache_dir: str | Path, rank: int = 0, world_size: int = 1,
                barrier: Callable[[], None] | None = None) -> tuple[list[CachedSubject], list[DataIssue]]:
    """Preprocess subjects (rank ``r`` builds every ``world_size``-th) and load the whole cache.

    Args:
        subjects: scanned subjects.
        cache_dir: cache folder.
        rank: this process's global rank.
        world_size: number of processes.
        barrier: called between building and loading (``torch.distributed.barrier`` under DDP).

    Returns:
        ``(cached subjects with at least one structure, issues)``.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    issues: list[DataIssue] = []
    for n, subject in enumerate(subjects):
        if n % world_size == rank:
            preprocess_subject(subject, cache_dir)  # its issues are stored in the cache and read below
    if barrier is not None:
        barrier()
    cached: list[CachedSubject] = []
    for subject in subjects:
        folder = cache_folder(subject, cache_dir)
        try:
            index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            issues.append(DataIssue(subject.subject_id, folder, "preprocessing cache missing; subject skipped"))
            continue
        if index.get("failed"):  # the CT could not be read (reported by whichever rank built it)
            issues.extend(_issues_from(index))
            continue
        c = CachedSubject(folder)
        issues.extend(c.issues)
        if c.structures:
            cached.append(c)
        else:
            issues.append(DataIssue(c.subject_id, subject.image_path, "no usable structure; subject skipped"))
    return cached, issues


# ---------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------
@dataclass
class PairBatch:
    """One step's samples on one process (``S`` samples, ``2S`` patches: all U first, then all V).

    Attributes:
        images: float32 ``[2S, 1, 64, 64, 64]`` (z, y, x) in [0, 1] (window applied).
        gts: bool ``[2S, 64, 64, 64]`` ground-truth masks.
        first_points: float32 ``[2S, 3]`` voxel (x, y, z) of each patch's first (positive) click.
        names: ``"subject/structure"`` per sample (length S).
    """

    images: torch.Tensor
    gts: np.ndarray
    first_points: np.ndarray
    names: list[str]


class PairSampler:
    """Draws the U/V pairs of Algorithm 1 from cached subjects (see the module docstring).

    Args:
        subjects: cached subjects.
        config: the training config (sampling, augmentation, window, seed).
    """

    def __init__(self, subjects: Sequence[CachedSubject], config: TrainConfig) -> None:
        self.config = config
        self.subjects: list[CachedSubject] = []
        self.choices: list[np.ndarray] = []  # eligible structure indices per subject
        self.probs: list[np.ndarray] = []
        for s in subjects:
            keep = [k for k, st in enumerate(s.structures)
                    if st.voxels >= config.min_structure_voxels
                    and not any(fnmatch.fnmatchcase(st.name, p) for p in config.exclude_structures)]
            if not keep:
                continue
            voxels = np.array([s.structures[k].voxels for k in keep], dtype=np.float64)
            sized = voxels ** config.size_power
            p = config.size_bias * sized / sized.sum() + (1.0 - config.size_bias) / len(keep)
            self.subjects.append(s)
            self.choices.append(np.array(keep))
            self.probs.append(p / p.sum())
        if not self.subjects:
            raise ValueError("No training structure left: every subject failed to load, or all structures are "
                             "smaller than min_structure_voxels or excluded (see the data issues above).")

    @property
    def num_structures(self) -> int:
        """Number of (subject, structure) pairs that can be drawn."""
        return int(sum(len(c) for c in self.choices))

    def rng(self, step: int, rank: int) -> np.random.Generator:
        """The random stream of one step on one rank."""
        return np.random.default_rng([self.config.seed, rank, step])

    def batch(self, step: int, rank: int = 0) -> PairBatch:
        """All samples of optimiser step ``step`` on process ``rank`` (a pure function of both)."""
        cfg = self.config
        rng = self.rng(step, rank)
        samples = []
        for _ in range(cfg.batch_size):
            n = int(rng.integers(len(self.subjects)))
            for _ in range(cfg.samples_per_volume):
                k = int(rng.choice(self.choices[n], p=self.probs[n]))
                samples.append(self.pair(self.subjects[n], k, rng))
        hu_u, hu_v, gt_u, gt_v, pt_u, pt_v, names = zip(*samples)
        images = torch.stack([scale_window(h, cfg.window_hu) for h in hu_u + hu_v])[:, None]
        return PairBatch(images, np.stack(gt_u + gt_v), np.stack(pt_u + pt_v).astype(np.float32),
                         list(names))

    def pair(self, subject: CachedSubject, k: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
        """One sample: ``(hu_u, hu_v, gt_u, gt_v, click_u, click_v, name)``.

        HU are float32 ``(z, y, x)``, masks bool, clicks voxel ``(x, y, z)`` in their patch.
        """
        cfg = self.config
        info = subject.structures[k]
        mask = subject.mask(k)
        lo = np.asarray(info.lo_zyx)
        click = first_click(mask, rng)
        anchor = np.rint(click.point_xyz).astype(np.int64) + lo[::-1]
        j = cfg.center_jitter
        anchor_in_u = PATCH_SIZE // 2 + rng.integers(-j, j + 1, size=3)
        offset = self._neighbour_offset(mask, lo, anchor - anchor_in_u, rng)
        affine = None
        if cfg.aug_prob > 0 and rng.random() < cfg.aug_prob:
            affine = augment.random_affine(rng, cfg.rotate_deg, cfg.scale_range)
        hu_u, hu_v, gt_u, gt_v = augment.sample_pair(subject.image, mask, lo, anchor, anchor_in_u, offset, affine)
        if affine is not None and not gt_v.any():  # the transform pushed the structure out of V
            hu_u, hu_v, gt_u, gt_v = augment.sample_pair(subject.image, mask, lo, anchor, anchor_in_u, offset, None)
        if cfg.intensity_prob > 0 and rng.random() < cfg.intensity_prob:  # same jitter for U and V
            a, b, std = augment.intensity_params(rng, cfg.intensity_scale, cfg.intensity_shift_hu, cfg.noise_std_hu)
            hu_u = augment.apply_intensity(hu_u, a, b, std, rng)
            hu_v = augment.apply_intensity(hu_v, a, b, std, rng)
        gt_u[tuple(anchor_in_u[::-1])] = True  # the click voxel is foreground by construction
        click_v = first_click(gt_v, rng) if gt_v.any() else None
        pt_v = np.asarray(click_v.point_xyz if click_v else anchor_in_u - offset, dtype=np.float32)
        return (hu_u, hu_v, gt_u, gt_v, anchor_in_u.astype(np.float32), pt_v, f"{subject.subject_id}/{info.name}")

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


def _count_in_box(mask: np.ndarray, lo_zyx: np.ndarray, start_xyz: np.ndarray) -> int:
    """Foreground voxels of ``mask`` (placed at ``lo_zyx``) inside the patch starting at ``start_xyz``."""
    a = np.maximum(start_xyz[::-1] - lo_zyx, 0)
    b = np.minimum(start_xyz[::-1] + PATCH_SIZE - lo_zyx, mask.shape)
    if np.any(b <= a):
        return 0
    return int(np.count_nonzero(mask[a[0]:b[0], a[1]:b[1], a[2]:b[2]]))
