"""Training data cache: every subject preprocessed once into model space.

Each subject is preprocessed once onto the 1.5 mm model grid of its CT
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
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from tqdm import tqdm

from CTSAM3DLib.geometry.model_space import MODEL_SPACING_MM, ModelGrid
from CTSAM3DLib.geometry.resample import model_box_of_index_box, resample_to_grid
from CTSAM3DLib.io.datasets import DataIssue, Subject, iter_label_images, structure_mask
from CTSAM3DLib.io.readers import ImageReadError, read_image
from CTSAM3DLib.train import pseudo

logger = logging.getLogger(__name__)

# Bump when the cache layout or preprocessing changes (invalidates every cache folder).
CACHE_VERSION = 1
# Bump when the pseudo-structure generator changes (its files carry this number in their names).
PSEUDO_VERSION = 4


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
        structures: the non-empty labelled structures.
        pseudo: the class-agnostic pseudo-structures (`pseudo`), when built for ``pseudo_seed``.
        issues: data issues found while preprocessing (re-reported on every run).
        group: the subject's group (`Subject.group`), which ``group_weights`` draws by.
    """

    def __init__(self, folder: Path, pseudo_seed: int | None = None, supervoxel_mm: Sequence[float] = (),
                 group: str = "") -> None:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        self.folder = folder
        self.group = group
        self.subject_id: str = index["subject_id"]
        self.grid = ModelGrid(tuple(index["grid"]["origin_lps"]), tuple(index["grid"]["shape_xyz"]),
                              float(index["grid"]["spacing_mm"]))
        self.image: np.ndarray = np.load(folder / "image.npy", mmap_mode="r")
        self.bits: np.ndarray = np.load(folder / "masks.npy", mmap_mode="r")
        self.structures = _structure_infos(index["structures"])
        self.issues = _issues_from(index)
        self.pseudo: list[StructureInfo] = []
        self.pseudo_bits = np.zeros(0, dtype=np.uint8)
        if pseudo_seed is not None:
            bits_path, index_path = pseudo_paths(folder, pseudo_seed, supervoxel_mm)
            if index_path.is_file():
                self.pseudo = _structure_infos(json.loads(index_path.read_text(encoding="utf-8"))["structures"])
                self.pseudo_bits = np.load(bits_path, mmap_mode="r")

    def mask(self, k: int, is_pseudo: bool = False) -> np.ndarray:
        """Bool mask of structure ``k`` (of `pseudo` if ``is_pseudo``) over its bounding box, (z, y, x)."""
        s, bits = (self.pseudo[k], self.pseudo_bits) if is_pseudo else (self.structures[k], self.bits)
        n = int(np.prod(s.shape_zyx))
        flat = np.unpackbits(np.asarray(bits[s.offset:s.offset + s.nbytes]), count=n)
        return flat.view(bool).reshape(s.shape_zyx)


def _structure_infos(entries: list[dict[str, Any]]) -> list[StructureInfo]:
    return [StructureInfo(s["name"], tuple(s["lo_zyx"]), tuple(s["shape_zyx"]), int(s["offset"]), int(s["nbytes"]),
                          int(s["voxels"])) for s in entries]


def _pack(masks: Sequence[tuple[str, Sequence[int], np.ndarray]]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Bit-pack named, box-cropped bool masks: ``(index entries, concatenated bits)``."""
    infos: list[dict[str, Any]] = []
    chunks: list[np.ndarray] = []
    offset = 0
    for name, lo_zyx, mask in masks:
        packed = np.packbits(mask.ravel())
        infos.append({"name": name, "lo_zyx": [int(v) for v in lo_zyx], "shape_zyx": list(mask.shape),
                      "offset": offset, "nbytes": int(packed.size), "voxels": int(mask.sum())})
        chunks.append(packed)
        offset += packed.size
    return infos, (np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))


def pseudo_paths(folder: Path, seed: int, supervoxel_mm: Sequence[float] = ()) -> tuple[Path, Path]:
    """The bits and index files of a subject's pseudo-structures for ``seed`` (and supervoxel sizes)."""
    sizes = "".join(f"-sv{float(mm):g}" for mm in supervoxel_mm)
    stem = f"pseudo-v{PSEUDO_VERSION}-seed{seed}{sizes}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def ensure_pseudo(folder: Path, seed: int, supervoxel_mm: Sequence[float] = ()) -> int:
    """Generate a cached subject's pseudo-structures once (written atomically); returns how many."""
    bits_path, index_path = pseudo_paths(folder, seed, supervoxel_mm)
    if index_path.is_file():
        return len(json.loads(index_path.read_text(encoding="utf-8"))["structures"])
    image = np.load(folder / "image.npy", mmap_mode="r")
    found = pseudo.generate(np.asarray(image), seed, supervoxel_mm=supervoxel_mm)
    infos, bits = _pack([(p.name, p.lo_zyx, p.mask) for p in found])
    tmp = bits_path.with_name(f"{bits_path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, bits)
    os.replace(tmp, bits_path)
    tmp_index = index_path.with_name(f"{index_path.name}.tmp{os.getpid()}")
    tmp_index.write_text(json.dumps({"version": PSEUDO_VERSION, "seed": seed, "structures": infos}), encoding="utf-8")
    os.replace(tmp_index, index_path)  # the index is written last: it marks the pair complete
    return len(infos)


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
    masks: list[tuple[str, Sequence[int], np.ndarray]] = []
    seen: set[str] = set()
    for src, label, src_issues in iter_label_images(subject, image):
        issues.extend(src_issues)
        if label is None:
            continue
        for name, lo_zyx, mask in _model_space_masks(subject, src.structures, label, grid, issues, src.path):
            if name not in seen:
                seen.add(name)
                masks.append((name, lo_zyx, mask))
    infos, bits = _pack(masks)
    index = {
        "key": key, "version": CACHE_VERSION, "subject_id": subject.subject_id, "image_path": str(subject.image_path),
        "grid": {"origin_lps": list(grid.origin_lps), "shape_xyz": list(grid.shape_xyz), "spacing_mm": grid.spacing_mm},
        "structures": infos,
        "issues": [_issue_dict(i) for i in issues],
    }
    _write_folder(folder, index, ct_i16, bits)
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
                barrier: Callable[[], None] | None = None, pseudo_seed: int | None = None,
                supervoxel_mm: Sequence[float] = (), workers: int = 0) -> tuple[list[CachedSubject], list[DataIssue]]:
    """Preprocess subjects (rank ``r`` builds every ``world_size``-th) and load the whole cache.

    Args:
        subjects: scanned subjects (unlabelled CTs have no label sources).
        cache_dir: cache folder.
        rank: this process's global rank.
        world_size: number of processes.
        barrier: called between building and loading (``torch.distributed.barrier`` under DDP).
        pseudo_seed: also build (once) and load every subject's pseudo-structures for this seed.
        supervoxel_mm: the pseudo-structures' supervoxel sizes (`pseudo.generate`).
        workers: preprocess in this many processes (0: in this one); a cache already built is
            only read, so this matters for the first run over a dataset.

    Returns:
        ``(cached subjects with at least one structure or pseudo-structure, issues)``.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    issues: list[DataIssue] = []
    mine = [s for n, s in enumerate(subjects) if n % world_size == rank]
    job = functools.partial(_build_one, cache_dir=cache_dir, pseudo_seed=pseudo_seed, supervoxel_mm=tuple(supervoxel_mm))
    if workers > 0 and len(mine) > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_single_threaded) as pool:
            list(tqdm(pool.map(job, mine), total=len(mine), desc="Preprocessing", unit="subject", disable=len(mine) < 10))
    else:
        for subject in mine:
            job(subject)
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
        c = CachedSubject(folder, pseudo_seed, supervoxel_mm, subject.group)
        issues.extend(c.issues)
        if c.structures or c.pseudo:
            cached.append(c)
        else:
            issues.append(DataIssue(c.subject_id, subject.image_path, "no usable structure; subject skipped"))
    return cached, issues


def _build_one(subject: Subject, cache_dir: Path, pseudo_seed: int | None, supervoxel_mm: tuple[float, ...]) -> None:
    """Preprocess one subject (and its pseudo-structures); its issues are stored in its cache folder."""
    folder, _ = preprocess_subject(subject, cache_dir)
    if folder is not None and pseudo_seed is not None:
        count = ensure_pseudo(folder, pseudo_seed, supervoxel_mm)
        logger.info("Pseudo-structures of %s: %d", subject.subject_id, count)


def _single_threaded() -> None:
    """Worker start-up: one thread each, so ``workers`` processes use ``workers`` cores."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    torch.set_num_threads(1)
