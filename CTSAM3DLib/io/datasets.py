"""Labelled CT dataset readers: TotalSegmentator, nnU-Net / MSD, and a multilabel map + table.

Used by training (``CTSAM3DLib.train``) and evaluation. Every dataset becomes a list of
`Subject` records (one CT, the label files that annotate it, an optional split). The models
are class-agnostic: every labelled structure of a subject is a target, named as in its dataset.

Layouts (`detect_layout` tells them apart):

``totalseg`` - the TotalSegmentator download::

    <root>/meta.csv                        image_id;split[;group]  (";"-separated, optional)
    <root>/<subject>/ct.nii.gz
    <root>/<subject>/segmentations/<structure>.nii.gz     binary masks (any non-zero = inside)
    <root>/<subject>/segmentations_<anything>/<structure>.nii.gz   extra label sets, merged

``nnunet`` - nnU-Net v1/v2 raw datasets and the Medical Segmentation Decathlon::

    <root>/dataset.json     "labels": {"liver": 1, ...} (nnU-Net v2, name -> value or list of values)
                                   or {"1": "liver", ...} (MSD / nnU-Net v1, value -> name)
                            optional "training": [{"image": ..., "label": ...}] (MSD / v1),
                            optional "file_ending" (default ".nii.gz")
    <root>/imagesTr/<case>_0000.nii.gz     (or <case>.nii.gz as in the original MSD)
    <root>/labelsTr/<case>.nii.gz          one multilabel map per case

``multilabel`` - our generic layout for any other dataset (one multilabel map per CT)::

    <root>/labels.csv                  header "value,name", one structure per row (0 = background)
    <root>/images/<case>.nii.gz        the CT (any SimpleITK format: .nii.gz .nii .nrrd .mha .mhd)
    <root>/labels/<case>.nii.gz        the label map on (or overlapping) the CT's grid
    <root>/meta.csv                    optional, "image_id;split[;group]" as in TotalSegmentator

Merging extra label sets (e.g. the paper's TotalSeg++ tissue classes skeletal_muscle,
subcutaneous_fat, torso_fat): give a second dataset folder that holds only labels for the same
subject ids (a TotalSegmentator-layout folder without ``ct.nii.gz``, or a multilabel folder
without ``images/``). `scan_datasets` merges such label-only subjects into the subject with the
same id that has the image. Inside one TotalSegmentator subject, every ``segmentations*``
folder is merged the same way.

Bad data never stops a scan: each problem becomes a `DataIssue` naming the subject and the
path (missing image or label file, label without image, unreadable file, a label whose grid
differs from its image's, an empty mask), and the good subjects and structures are kept.

Groups: every subject belongs to one group (meta.csv's optional ``group`` column, else the
leading letters of its id, `subject_group`): training can draw groups in set shares
(``group_weights``) and ``ctsam3d evaluate`` reports the mean of each group beside the overall one.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from CTSAM3DLib.geometry.resample import GridMismatchError, check_label_grid, resample_label_like
from CTSAM3DLib.io.readers import ImageReadError, read_image

logger = logging.getLogger(__name__)

# Names of the supported layouts.
LAYOUTS = ("totalseg", "nnunet", "multilabel")
Layout = Literal["totalseg", "nnunet", "multilabel"]
# File endings recognised as images (longest first so ".nii.gz" wins over ".gz").
IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# TotalSegmentator CT file name inside a subject folder.
TOTALSEG_CT = "ct.nii.gz"


class DatasetError(ValueError):
    """A dataset folder that cannot be used at all (unknown layout, unreadable dataset.json ...)."""


@dataclass(frozen=True)
class LabelSource:
    """One label file and the structures it holds.

    Attributes:
        path: the label image file.
        structures: ``(name, values)`` pairs; a structure is the union of its label values,
            and an empty ``values`` means "any non-zero voxel" (binary mask files).
    """

    path: Path
    structures: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Structure names in this file."""
        return tuple(name for name, _ in self.structures)


@dataclass(frozen=True)
class Subject:
    """One CT with its labels.

    Attributes:
        subject_id: the dataset's id (TotalSegmentator ``image_id``, nnU-Net case name).
        image_path: the CT file (for a label-only record: where it was expected).
        labels: label files, in reading order (the first file naming a structure wins).
        split: the dataset's split (``"train"``, ``"test"`` ...) or None if it gives none.
        layout: the layout it was read from.
        root: the dataset folder.
        group: the subject group that training draws by and evaluation averages over: meta.csv's
            ``group`` column where it has one, else `subject_group` of the id (``hn_kbp_12`` -> ``hn``).
    """

    subject_id: str
    image_path: Path
    labels: tuple[LabelSource, ...]
    split: str | None = None
    layout: str = ""
    root: Path = field(default_factory=Path)
    group: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", subject_group(self.subject_id))

    @property
    def structure_names(self) -> list[str]:
        """All structure names, in reading order, without duplicates."""
        seen: dict[str, None] = {}
        for src in self.labels:
            for name in src.names:
                seen.setdefault(name, None)
        return list(seen)


@dataclass(frozen=True)
class DataIssue:
    """A problem with one file of one subject; the rest of the data is still used.

    Attributes:
        subject_id: the subject concerned.
        path: the file (or folder) concerned.
        problem: what is wrong and what was done about it.
        skipped: True if the subject or structure was left out, False if it was used anyway
            (e.g. a label resampled from another grid).
    """

    subject_id: str
    path: Path
    problem: str
    skipped: bool = True

    def __str__(self) -> str:
        return f"subject {self.subject_id!r}: {self.path}: {self.problem}"


@dataclass(frozen=True)
class DatasetScan:
    """Result of scanning one or more dataset folders: usable subjects plus reported issues."""

    subjects: tuple[Subject, ...]
    issues: tuple[DataIssue, ...]


# ---------------------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------------------
def detect_layout(root: str | Path) -> Layout:
    """Tell which supported layout a dataset folder uses.

    Raises:
        DatasetError: the folder is missing or matches no layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset folder {root} does not exist.")
    if (root / "dataset.json").is_file() and ((root / "labelsTr").is_dir() or (root / "imagesTr").is_dir()):
        return "nnunet"
    if (root / "labels.csv").is_file() and (root / "labels").is_dir():
        return "multilabel"
    if (root / "meta.csv").is_file() or any(
        d.is_dir() and ((d / TOTALSEG_CT).exists() or any(d.glob("segmentations*"))) for d in root.iterdir()
    ):
        return "totalseg"
    raise DatasetError(
        f"{root} matches no supported dataset layout: expected TotalSegmentator (<subject>/ct.nii.gz + "
        "<subject>/segmentations/*.nii.gz), nnU-Net/MSD (dataset.json + imagesTr/ + labelsTr/), or a multilabel "
        "map (labels.csv + images/ + labels/). See CTSAM3DLib.io.datasets."
    )


def scan_dataset(root: str | Path, layout: Layout | None = None) -> DatasetScan:
    """Scan one dataset folder (no merging, no split filtering; see `scan_datasets`).

    Subjects whose image file is missing are kept as label-only records (see `scan_datasets`).

    Args:
        root: the dataset folder.
        layout: force a layout; default `detect_layout`.

    Raises:
        DatasetError: unusable folder (no layout, unreadable dataset.json or labels.csv).
    """
    root = Path(root)
    layout = layout or detect_layout(root)
    if layout == "totalseg":
        return _scan_totalseg(root)
    if layout == "nnunet":
        return _scan_nnunet(root)
    if layout == "multilabel":
        return _scan_multilabel(root)
    raise DatasetError(f"Unknown layout {layout!r}; choose one of {LAYOUTS}.")


def scan_datasets(roots: Sequence[str | Path], splits: Sequence[str] | None = None) -> DatasetScan:
    """Scan dataset folders, merge label-only records into their subjects, filter splits.

    Args:
        roots: dataset folders, any supported layouts.
        splits: keep subjects whose split is one of these, plus those without a split;
            None or empty keeps all.

    Returns:
        Subjects that have an image file and at least one label file, and all issues.

    Raises:
        DatasetError: a folder is unusable as a whole.
    """
    subjects: list[Subject] = []
    issues: list[DataIssue] = []
    for root in roots:
        scan = scan_dataset(root)
        subjects.extend(scan.subjects)
        issues.extend(scan.issues)
    with_image = [s for s in subjects if s.image_path.is_file()]
    label_only = [s for s in subjects if not s.image_path.is_file()]
    by_id: dict[str, int] = {}
    for n, s in enumerate(with_image):
        by_id.setdefault(s.subject_id, n)
    for extra in label_only:
        n_target = by_id.get(extra.subject_id)
        if n_target is None:
            issues.append(DataIssue(extra.subject_id, extra.image_path, "image file missing; subject skipped"))
            continue
        target = with_image[n_target]
        merged, dup = _merge_labels(target.labels, extra.labels)
        for src, name in dup:
            issues.append(DataIssue(target.subject_id, src.path, f"structure {name!r} is already labelled by "
                                    "an earlier file; this copy is ignored"))
        with_image[n_target] = replace(target, labels=merged)
    kept: list[Subject] = []
    for s in with_image:
        if splits and s.split is not None and s.split not in splits:
            continue
        if not s.labels:
            issues.append(DataIssue(s.subject_id, s.image_path, "no label files; subject skipped"))
            continue
        kept.append(s)
    return DatasetScan(tuple(kept), tuple(issues))


# Endings of CT files in an unlabelled folder (a sub-folder holding DICOM files counts too).
UNLABELED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def scan_unlabeled(roots: Sequence[str | Path], held_out: Sequence[Subject] = ()) -> DatasetScan:
    """CTs without labels (for class-agnostic pseudo-structures), never a held-out subject's scan.

    Each CT file with one of `UNLABELED_ENDINGS` in a folder, and each sub-folder holding ``.dcm``
    files, is one subject ``"<folder name>/<file stem>"`` with no label sources. A CT whose grid
    (size, spacing, origin, direction) equals a ``held_out`` subject's is the same scan and is left
    out with an issue, so a validation image cannot leak into training without its labels.

    Raises:
        DatasetError: a folder does not exist.
    """
    blocked = {_grid_key(s.image_path): s.subject_id for s in held_out if s.image_path.is_file()}
    subjects: list[Subject] = []
    issues: list[DataIssue] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise DatasetError(f"Unlabelled CT folder {root} does not exist or is not a folder.")
        for path in sorted(root.iterdir()):
            is_ct = path.is_file() and path.name.lower().endswith(UNLABELED_ENDINGS)
            if not (is_ct or (path.is_dir() and any(path.glob("*.dcm")))):
                continue
            sid = f"{root.name}/{_strip_ending(path.name) or path.name}"
            key = _grid_key(path)
            if key is not None and key in blocked:
                issues.append(DataIssue(sid, path, f"same scan as held-out subject {blocked[key]!r} (validation "
                                        "or test); never trained on, not even unlabelled; skipped"))
                continue
            subjects.append(Subject(sid, path, (), None, "unlabeled", root))
    return DatasetScan(tuple(subjects), tuple(issues))


def _grid_key(path: Path) -> tuple[object, ...] | None:
    """The image grid read from the header only (no voxels), or None if the header is unreadable."""
    try:
        reader = sitk.ImageFileReader()
        if path.is_dir():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
            if not files:
                return None
            reader.SetFileName(files[0])
        else:
            reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize() if not path.is_dir() else ()
    return (size, tuple(round(v, 4) for v in reader.GetSpacing()[:2]), tuple(round(v, 3) for v in reader.GetOrigin()),
            tuple(round(v, 4) for v in reader.GetDirection()))


def _merge_labels(first: tuple[LabelSource, ...], extra: tuple[LabelSource, ...]
                  ) -> tuple[tuple[LabelSource, ...], list[tuple[LabelSource, str]]]:
    """Append label files, dropping structures that an earlier file already names."""
    names = {n for src in first for n in src.names}
    out: list[LabelSource] = list(first)
    dup: list[tuple[LabelSource, str]] = []
    for src in extra:
        keep = tuple((n, v) for n, v in src.structures if n not in names)
        dup.extend((src, n) for n in src.names if n in names)
        names.update(n for n, _ in keep)
        if keep:
            out.append(LabelSource(src.path, keep))
    return tuple(out), dup


def subject_group(subject_id: str) -> str:
    """The group of a subject id without a meta.csv ``group``: its leading letters, lower case.

    ``hn_kbp_12`` -> ``hn``, ``chest_nsclc_002`` -> ``chest``, ``s0011`` -> ``s`` (a TotalSegmentator
    download is one group); an id that starts with no letter -> ``other``.
    """
    match = re.match(r"[A-Za-z]+", subject_id)
    return match.group(0).lower() if match else "other"


def _read_meta_csv(path: Path, issues: list[DataIssue]) -> dict[str, tuple[str, str]]:
    """``image_id;split[;group]`` (or comma-separated) -> {id: (split, group)}; unreadable rows become issues.

    The optional ``group`` column names each subject's group (empty: `subject_group` of the id).
    """
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    delimiter = ";" if text.splitlines()[0].count(";") >= text.splitlines()[0].count(",") else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or "image_id" not in rows[0] or "split" not in rows[0]:
        issues.append(DataIssue("-", path, "needs columns 'image_id' and 'split'; splits ignored", skipped=False))
        return {}
    return {r["image_id"].strip(): ((r["split"] or "").strip(), (r.get("group") or "").strip())
            for r in rows if r.get("image_id")}


def _strip_ending(name: str) -> str | None:
    for ending in IMAGE_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return None


def _scan_totalseg(root: Path) -> DatasetScan:
    issues: list[DataIssue] = []
    meta = _read_meta_csv(root / "meta.csv", issues)
    subjects: list[Subject] = []
    folders = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    for sid in meta:
        if sid not in folders:
            issues.append(DataIssue(sid, root / sid, "listed in meta.csv but the subject folder is missing; skipped"))
    for sid, folder in folders.items():
        label_dirs = sorted(d for d in folder.glob("segmentations*") if d.is_dir())
        label_dirs.sort(key=lambda d: d.name != "segmentations")  # the main set first
        if not label_dirs and not (folder / TOTALSEG_CT).exists():
            continue  # not a subject folder
        sources: list[LabelSource] = []
        seen: set[str] = set()
        for d in label_dirs:
            for f in sorted(d.iterdir()):
                name = _strip_ending(f.name)
                if name is None or not f.is_file():
                    continue
                if name in seen:
                    issues.append(DataIssue(sid, f, f"structure {name!r} is already labelled by an earlier file; "
                                            "this copy is ignored"))
                    continue
                seen.add(name)
                sources.append(LabelSource(f, ((name, ()),)))
        split, group = meta.get(sid, (None, ""))
        subjects.append(Subject(sid, folder / TOTALSEG_CT, tuple(sources), split, "totalseg", root, group))
    return DatasetScan(tuple(subjects), tuple(issues))


def _nnunet_labels(labels: Mapping[str, object], path: Path) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """dataset.json ``labels`` (either direction) -> ``(name, values)`` without background."""
    if not isinstance(labels, Mapping) or not labels:
        raise DatasetError(f"{path}: 'labels' must be a non-empty mapping.")
    out: list[tuple[str, tuple[int, ...]]] = []
    value_to_name = all(str(k).strip().lstrip("-").isdigit() for k in labels) and all(
        isinstance(v, str) for v in labels.values())
    try:
        if value_to_name:  # MSD / nnU-Net v1: {"0": "background", "1": "liver"}
            for k, v in labels.items():
                if int(k) != 0:
                    out.append((str(v), (int(k),)))
        else:  # nnU-Net v2: {"background": 0, "liver": 1, "tumour region": [1, 2]}
            for k, v in labels.items():
                items: list[Any] = list(v) if isinstance(v, (list, tuple)) else [v]
                values = tuple(int(x) for x in items)
                if values and any(values) and str(k).lower() != "background":
                    out.append((str(k), tuple(x for x in values if x != 0)))
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read 'labels' ({exc}); expected name -> int (nnU-Net v2) "
                           "or \"int\" -> name (MSD / nnU-Net v1).") from None
    return tuple(out)


def _scan_nnunet(root: Path) -> DatasetScan:
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"Cannot read {meta_path}: {exc}") from None
    structures = _nnunet_labels(meta.get("labels"), meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    issues: list[DataIssue] = []
    pairs: list[tuple[str, Path, Path]] = []  # (case, image, label)
    training = meta.get("training")
    if isinstance(training, list) and training and isinstance(training[0], Mapping):
        for entry in training:
            img, lab = root / str(entry.get("image", "")), root / str(entry.get("label", ""))
            case = _strip_ending(lab.name) or lab.name
            if not img.is_file():  # v1 lists "imagesTr/x.nii.gz" while the file is x_0000.nii.gz
                alt = img.with_name(f"{_strip_ending(img.name) or img.stem}_0000{ending}")
                img = alt if alt.is_file() else img
            pairs.append((case, img, lab))
    else:
        for lab in sorted((root / "labelsTr").glob(f"*{ending}")):
            case = lab.name[: -len(ending)]
            img = root / "imagesTr" / f"{case}_0000{ending}"
            if not img.is_file() and (root / "imagesTr" / f"{case}{ending}").is_file():
                img = root / "imagesTr" / f"{case}{ending}"
            pairs.append((case, img, lab))
        labelled = {c for c, _, _ in pairs}
        for img in sorted((root / "imagesTr").glob(f"*{ending}")):
            stem = img.name[: -len(ending)]
            if re.fullmatch(r".+_\d{4}", stem) and not stem.endswith("_0000"):
                continue  # another channel of a multi-channel case; CT uses channel 0000
            case = stem[:-5] if stem.endswith("_0000") else stem
            if case not in labelled:
                issues.append(DataIssue(case, root / "labelsTr" / f"{case}{ending}",
                                        "label file missing; case skipped"))
    subjects: list[Subject] = []
    for case, img, lab in pairs:
        if not lab.is_file():
            issues.append(DataIssue(case, lab, "label file missing; case skipped"))
            continue
        subjects.append(Subject(case, img, (LabelSource(lab, structures),), None, "nnunet", root))
    return DatasetScan(tuple(subjects), tuple(issues))


def _read_label_table(path: Path) -> tuple[tuple[str, tuple[int, ...]], ...]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    delimiter = ";" if lines and lines[0].count(";") > lines[0].count(",") else ","
    rows = list(csv.DictReader(lines, delimiter=delimiter))
    if not rows or not {"value", "name"} <= set(rows[0]):
        raise DatasetError(f"{path} needs a header 'value,name' and one row per structure.")
    out: dict[str, list[int]] = {}
    for row in rows:
        try:
            value = int(str(row["value"]).strip())
        except ValueError:
            raise DatasetError(f"{path}: label value {row['value']!r} is not an integer.") from None
        name = str(row["name"]).strip()
        if value != 0 and name:
            out.setdefault(name, []).append(value)
    return tuple((n, tuple(v)) for n, v in out.items())


def _scan_multilabel(root: Path) -> DatasetScan:
    structures = _read_label_table(root / "labels.csv")
    issues: list[DataIssue] = []
    meta = _read_meta_csv(root / "meta.csv", issues)

    def cases(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                case = _strip_ending(f.name)
                if case is not None and f.is_file():
                    found.setdefault(case, f)
        return found

    images, labels = cases(root / "images"), cases(root / "labels")
    subjects = []
    for case, lab in labels.items():
        img = images.get(case, root / "images" / f"{case}.nii.gz")
        split, group = meta.get(case, (None, ""))
        subjects.append(Subject(case, img, (LabelSource(lab, structures),), split, "multilabel", root, group))
    for case in images:
        if case not in labels:
            issues.append(DataIssue(case, root / "labels" / f"{case}.nii.gz", "label file missing; case skipped"))
    return DatasetScan(tuple(subjects), tuple(issues))


# ---------------------------------------------------------------------------------------
# Reading labels
# ---------------------------------------------------------------------------------------
def structure_mask(label_zyx: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """Bool mask of a structure in a label array: any non-zero if ``values`` is empty, else the union."""
    if not values:
        return label_zyx != 0
    if len(values) == 1:
        return label_zyx == values[0]
    return np.isin(label_zyx, values)


def iter_label_images(subject: Subject, image: sitk.Image
                      ) -> Iterator[tuple[LabelSource, sitk.Image | None, list[DataIssue]]]:
    """Read each label file of a subject and check it against the subject's CT.

    Args:
        subject: the subject.
        image: its CT, already read.

    Yields:
        ``(source, label image or None, issues)``: None when the file is missing, unreadable or
        cannot be placed on the CT; a label on another grid is yielded with a non-skipping issue
        (resample it by physical coordinates).
    """
    for src in subject.labels:
        issues: list[DataIssue] = []
        try:
            label = read_image(src.path)
        except ImageReadError as exc:
            problem = "label file missing" if not src.path.exists() else f"unreadable label ({exc})"
            yield src, None, [DataIssue(subject.subject_id, src.path, f"{problem}; its structures are skipped")]
            continue
        try:
            note = check_label_grid(label, image)
        except GridMismatchError as exc:
            yield src, None, [DataIssue(subject.subject_id, src.path, f"{exc}; its structures are skipped")]
            continue
        if note is not None:
            issues.append(DataIssue(subject.subject_id, src.path, note, skipped=False))
        yield src, label, issues


def read_structures(subject: Subject, image: sitk.Image | None = None, names: Iterable[str] | None = None
                    ) -> tuple[sitk.Image, dict[str, np.ndarray], list[DataIssue]]:
    """Read a subject's CT and its structure masks on the CT's own grid (e.g. for evaluation).

    Args:
        subject: the subject.
        image: its CT if already read (default: read ``subject.image_path``).
        names: only these structures (default all).

    Returns:
        ``(image, {name: bool mask (z, y, x) on the CT grid}, issues)``; empty masks, unreadable
        or misplaced labels are left out and reported.

    Raises:
        ImageReadError: the CT itself is missing or unreadable.
    """
    image = read_image(subject.image_path) if image is None else image
    wanted = None if names is None else set(names)
    masks: dict[str, np.ndarray] = {}
    issues: list[DataIssue] = []
    for src, label, src_issues in iter_label_images(subject, image):
        issues.extend(src_issues)
        if label is None or (wanted is not None and not wanted & set(src.names)):
            continue
        array = resample_label_like(label, image)
        for name, values in src.structures:
            if (wanted is not None and name not in wanted) or name in masks:
                continue
            mask = structure_mask(array, values)
            if not mask.any():
                issues.append(DataIssue(subject.subject_id, src.path, f"structure {name!r} has an empty mask; skipped"))
                continue
            masks[name] = mask
    return image, masks, issues


def log_issues(issues: Sequence[DataIssue], log: logging.Logger = logger, limit: int = 20) -> None:
    """Log data issues as warnings, the first ``limit`` one by one, then a count per kind."""
    for issue in issues[:limit]:
        log.warning("%s", issue)
    if len(issues) > limit:
        log.warning("... and %d more data issues (all listed in the run's data_issues.txt)", len(issues) - limit)
