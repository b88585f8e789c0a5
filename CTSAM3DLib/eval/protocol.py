"""Simulated-click evaluation: the CT-SAM3D paper's protocol driving ``engine.Session``.

Per case and structure:

1. the first click is a foreground voxel drawn uniformly at random
   (:func:`~CTSAM3DLib.prompts.simulate.first_click`), from a generator seeded by
   ``(seed, case id, structure name)``, so a structure gets the same first click
   whatever else is evaluated beside it; or, with ``first_click_mode="deepest"``, the
   structure's deepest voxel (farthest in mm from its boundary, what a user aims for);
2. every further click comes from :func:`~CTSAM3DLib.prompts.simulate.next_click`
   (the simulator training uses): the voxel of the current error region farthest,
   in mm, from that region's boundary; positive in a false negative, negative in a
   false positive. It stops early only when the mask equals the ground truth;
3. DSC and NSD are measured on the input image's own grid after each requested
   click count (1, 3, 5, 7, 9 in the paper).

``click_rule="cvpr25"`` swaps steps 1-2 for the rule of the CVPR 2025 interactive 3-D
challenge (`largest_component_click`: every click, the first included, at the deepest voxel
of the largest 26-connected error component; deterministic, so one seed), for numbers
comparable with that benchmark (which also measures NSD at 2 mm).

CT-SAM3D runs through the same ``Session`` as the GUI, one session per case
(``set_volume`` once, one target per structure, so cached encoder features serve
every structure). The optional ``growcut`` baseline (Slicer's "Grow from seeds")
gets the same first click and then its own corrective clicks from the same
simulator, computed on its own mask.

Arrays are ``(z, y, x)``; clicks are voxel ``(x, y, z)`` on the input grid; spacing is
``(x, y, z)`` in mm, as everywhere in CTSAM3DLib.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.eval.growcut import grow_from_seeds
from CTSAM3DLib.eval.metrics import dice, normalized_surface_dice
from CTSAM3DLib.io.datasets import DataIssue, LabelSource, Subject, read_structures
from CTSAM3DLib.io.readers import ImageReadError, read_image, volume_to_sitk
from CTSAM3DLib.io.volume import Volume
from CTSAM3DLib.model.predictor import Predictor
from CTSAM3DLib.prompts.click import Click
from CTSAM3DLib.prompts.simulate import deepest_click, first_click, largest_component_click, next_click

logger = logging.getLogger(__name__)

# Name of the CT-SAM3D method in results, reports and summary.json.
METHOD_CTSAM3D = "ctsam3d"
# Name of Slicer's "Grow from seeds" baseline.
METHOD_GROWCUT = "growcut"
# Baselines that ``evaluate`` can run beside CT-SAM3D.
BASELINES = (METHOD_GROWCUT,)
# The paper's click counts (Fig. 4).
DEFAULT_CLICKS = (1, 3, 5, 7, 9)
# Where simulated clicks go: "paper" (random first click, then the deepest error voxel) or
# "cvpr25" (the CVPR 2025 challenge: the largest error component's deepest voxel, every click).
CLICK_RULES = ("paper", "cvpr25")
# The NSD tolerance (mm) each click rule's benchmark reports.
NSD_TOLERANCE_MM = {"paper": 1.0, "cvpr25": 2.0}

# A mask, or a function that loads it: uint8/bool ``(z, y, x)`` on the case's image grid.
MaskSource = np.ndarray | Callable[[], np.ndarray]


@dataclass(frozen=True)
class EvalCase:
    """One labelled image.

    Attributes:
        case_id: unique name of the case (subject id).
        image: the CT (HU) as a SimpleITK image or ``Volume``, or a function returning one
            (called when the case is evaluated).
        masks: structure name -> ground-truth mask ``(z, y, x)`` on the image's grid
            (non-zero = structure), or a function loading it (read only when needed).
        group: the subject group the report also averages over (`Subject.group`).
    """

    case_id: str
    image: sitk.Image | Volume | Callable[[], sitk.Image | Volume]
    masks: Mapping[str, MaskSource]
    group: str = ""


@dataclass(frozen=True)
class ClickRecord:
    """Metrics of one method on one structure after ``n_clicks`` clicks.

    Attributes:
        seconds: time of the ``n_clicks``-th click (0 if the simulator stopped early).
        cumulative_seconds: total time of clicks ``1..n_clicks``.
        click: the ``n_clicks``-th click (voxel ``(x, y, z)``), None if it was not needed.
        seed: the seed of this run's first click.
    """

    case_id: str
    structure: str
    method: str
    n_clicks: int
    dsc: float
    nsd: float
    seconds: float
    cumulative_seconds: float
    click: Click | None
    seed: int = 0


@dataclass(frozen=True)
class ClickTrace:
    """Every click one method received on one structure (from one seed's first click), with the time each took."""

    case_id: str
    structure: str
    method: str
    clicks: tuple[Click, ...]
    seconds: tuple[float, ...]
    seed: int = 0


@dataclass(frozen=True)
class EvalResult:
    """Everything ``evaluate`` measured; ``eval.report`` turns it into files.

    Attributes:
        clicks: the click counts at which metrics were taken, ascending.
        nsd_tolerance_mm: NSD tolerance.
        methods: method names, CT-SAM3D first.
        seeds: the seeds of the first clicks, one run of every structure per seed.
        records: one per case, structure, method, seed and click count.
        traces: one per case, structure, method and seed (all clicks up to the largest count).
        skipped: one message per requested structure that could not be evaluated.
        groups: case id -> subject group, for every evaluated case.
        click_rule: the click rule (`CLICK_RULES`).
    """

    clicks: tuple[int, ...]
    nsd_tolerance_mm: float
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    records: tuple[ClickRecord, ...]
    traces: tuple[ClickTrace, ...] = ()
    skipped: tuple[str, ...] = ()
    groups: Mapping[str, str] = field(default_factory=dict)
    click_rule: str = "paper"


@dataclass
class _Collector:
    records: list[ClickRecord] = field(default_factory=list)
    traces: list[ClickTrace] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)


# How the first click is chosen (paper rule): uniformly at random (the paper) or at the structure's deepest voxel.
FIRST_CLICK_MODES = ("random", "deepest")

# A method on one structure: click -> (mask (z, y, x) after it, seconds it took).
_Segmenter = Callable[[Click], tuple[np.ndarray, float]]


def evaluate(predictor: Predictor, cases: Iterable[EvalCase], clicks: Sequence[int] = DEFAULT_CLICKS, *,
             structures: Sequence[str] | None = None, max_structures: int | None = None,
             baseline: str | None = None, session_config: SessionConfig | None = None,
             seed: int | Sequence[int] = 0, nsd_tolerance_mm: float | None = None, progress: bool = False,
             first_click_mode: str = "random", click_rule: str = "paper", run_model: bool = True) -> EvalResult:
    """Run the simulated-click protocol (module docstring) on every case.

    Args:
        predictor: the CT-SAM3D model (``CTSAM3DLib.load_model``).
        cases: labelled images; consumed one at a time (one image in memory).
        clicks: click counts at which to measure, e.g. ``(1, 3, 5, 7, 9)``; every method
            runs up to the largest.
        structures: names to evaluate (default: every structure of each case). Names a
            case lacks, or whose mask is empty there, are skipped with a message.
        max_structures: per case, keep only the N largest structures by physical volume
            (mm^3) among those selected by ``structures``.
        baseline: ``"growcut"`` to also run Slicer's Grow from seeds (needs slicer-core).
        run_model: False runs the baseline alone (its numbers do not depend on the weights).
        session_config: engine settings (default ``SessionConfig()``, CPP on).
        seed: seed of the random first clicks, or several: every structure is then run once per seed
            (a fresh target each time) and the report averages over them, which smooths out the luck
            of one random first click.
        nsd_tolerance_mm: NSD tolerance in mm (default: the click rule's, `NSD_TOLERANCE_MM`).
        progress: show a tqdm progress bar (stderr), one step per structure.
        first_click_mode: ``"random"`` (the paper) or ``"deepest"`` (the structure's deepest voxel).
        click_rule: ``"paper"`` or ``"cvpr25"`` (module docstring).

    Returns:
        The ``EvalResult``.

    Raises:
        ValueError: bad click counts, seeds, tolerance, structure count or baseline name.
        ImportError: ``baseline="growcut"`` without slicer-core.
    """
    counts = validate_clicks(clicks)
    seeds = validate_seeds(seed)
    if click_rule not in CLICK_RULES:
        raise ValueError(f"click_rule must be one of {CLICK_RULES}, got {click_rule!r}.")
    tol_mm = NSD_TOLERANCE_MM[click_rule] if nsd_tolerance_mm is None else float(nsd_tolerance_mm)
    _validate_options(max_structures, baseline, tol_mm)
    if first_click_mode not in FIRST_CLICK_MODES:
        raise ValueError(f"first_click_mode must be one of {FIRST_CLICK_MODES}, got {first_click_mode!r}.")
    if (first_click_mode == "deepest" or click_rule == "cvpr25") and len(seeds) > 1:
        raise ValueError("Several seeds only make sense with random first clicks: the deepest voxel and the "
                         "cvpr25 rule's clicks do not depend on the seed.")
    if not run_model and not baseline:
        raise ValueError("Nothing to run: the model is switched off and no baseline is chosen.")
    if baseline == METHOD_GROWCUT:
        _check_growcut_available()
    methods = ((METHOD_CTSAM3D,) if run_model else ()) + ((baseline,) if baseline else ())
    out = _Collector()
    config = session_config or SessionConfig()
    rule = (first_click_mode, click_rule)
    with tqdm(total=0, unit="structure", desc="evaluate", disable=not progress, dynamic_ncols=True) as bar:
        for case in cases:
            _evaluate_case(predictor, case, counts, methods, config, (seeds, rule), tol_mm,
                           (structures, max_structures), out, bar)
    return EvalResult(counts, tol_mm, methods, seeds, tuple(out.records), tuple(out.traces),
                      tuple(out.skipped), dict(out.groups), click_rule)


def validate_clicks(clicks: Sequence[int]) -> tuple[int, ...]:
    """Sorted unique positive click counts; ``ValueError`` if empty or not positive integers."""
    try:
        counts = sorted({int(c) for c in clicks})
        is_int = all(float(c) == int(c) for c in clicks)
    except (TypeError, ValueError):
        counts, is_int = [], False
    if not counts or not is_int or counts[0] < 1:
        raise ValueError(f"Click counts must be positive integers such as 1,3,5,7,9; got {list(clicks)!r}.")
    return tuple(counts)


def validate_seeds(seed: int | Sequence[int]) -> tuple[int, ...]:
    """The seeds as a tuple of distinct integers, in the given order; ``ValueError`` if empty or repeated."""
    seeds = (seed,) if isinstance(seed, (int, np.integer)) else tuple(seed)
    if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be one or more integers, got {seed!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat (a repeated seed repeats the same first clicks), got {list(seeds)}.")
    return tuple(int(s) for s in seeds)


def select_structures(volumes_mm3: Mapping[str, float], max_structures: int | None) -> list[str]:
    """Non-empty structures, largest first when ``max_structures`` keeps only the N largest.

    Args:
        volumes_mm3: structure name -> physical volume in mm^3.
        max_structures: keep the N largest (ties by name); None keeps all, in name order.
    """
    names = sorted(n for n, v in volumes_mm3.items() if v > 0)
    if max_structures is None:
        return names
    return sorted(names, key=lambda n: (-volumes_mm3[n], n))[:max_structures]


def case_rng(seed: int, case_id: str, structure: str) -> np.random.Generator:
    """Generator for one structure's first click, independent of what else is evaluated."""
    return np.random.default_rng([int(seed), zlib.crc32(case_id.encode()), zlib.crc32(structure.encode())])


def dataset_cases(subjects: Iterable[Subject], issues: list[DataIssue] | None = None) -> Iterator[EvalCase]:
    """Turn dataset subjects (``CTSAM3DLib.io.datasets.scan_datasets``) into cases, one CT at a time.

    Each CT is read when its case is produced; each label file is read when one of its
    structures is first needed, through ``read_structures`` (so labels on another grid are
    resampled onto the CT's grid exactly as for training), and kept until another file is
    needed. A subject whose CT cannot be read is skipped.

    Args:
        subjects: the dataset's subjects.
        issues: if given, data problems found while reading are appended to it.
    """
    found: list[DataIssue] = [] if issues is None else issues
    for subject in subjects:
        try:
            image = read_image(subject.image_path)
        except ImageReadError as exc:
            found.append(DataIssue(subject.subject_id, subject.image_path, f"{exc}; subject skipped"))
            continue
        yield EvalCase(subject.subject_id, image, _mask_loaders(subject, image, found), subject.group)


def _mask_loaders(subject: Subject, image: sitk.Image, issues: list[DataIssue]) -> dict[str, Callable[[], np.ndarray]]:
    """Structure name -> loader of its bool mask on the CT grid (all-False if unusable; see ``issues``)."""
    last: dict[LabelSource, dict[str, np.ndarray]] = {}
    empty_shape = tuple(image.GetSize())[::-1]

    def load(src: LabelSource, name: str) -> np.ndarray:
        if src not in last:
            last.clear()
            _, masks, found = read_structures(dataclasses.replace(subject, labels=(src,)), image, src.names)
            issues.extend(i for i in found if i not in issues)
            last[src] = masks
        mask = last[src].get(name)
        return mask if mask is not None else np.zeros(empty_shape, dtype=bool)

    loaders: dict[str, Callable[[], np.ndarray]] = {}
    for src in subject.labels:
        for name in src.names:
            loaders.setdefault(name, lambda src=src, name=name: load(src, name))  # type: ignore[misc]
    return loaders


def _validate_options(max_structures: int | None, baseline: str | None, nsd_tolerance_mm: float) -> None:
    if max_structures is not None and int(max_structures) < 1:
        raise ValueError(f"max_structures must be at least 1, got {max_structures}.")
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; available: {', '.join(BASELINES)}.")
    if not (np.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise ValueError(f"The NSD tolerance must be a finite number of mm >= 0, got {nsd_tolerance_mm}.")


def _check_growcut_available() -> None:
    """Fail before any work when slicer-core is missing (raises its ``ImportError``)."""
    grow_from_seeds(np.zeros((3, 3, 3), dtype=np.int16), (1.0, 1.0, 1.0), [Click((1.0, 1.0, 1.0), True)])


def _evaluate_case(predictor: Predictor, case: EvalCase, counts: tuple[int, ...], methods: tuple[str, ...],
                   config: SessionConfig, first_clicks: tuple[tuple[int, ...], tuple[str, str]], tol_mm: float,
                   selection: tuple[Sequence[str] | None, int | None], out: _Collector, bar: tqdm) -> None:
    """One session for the case; every selected structure is one target of it."""
    image = case.image() if callable(case.image) else case.image
    image = volume_to_sitk(image) if isinstance(image, Volume) else image
    names = _structures_of_case(case, image, selection, out)
    out.groups[case.case_id] = case.group or case.case_id
    bar.total += len(names)
    bar.refresh()
    session = Session(predictor, config)
    if METHOD_CTSAM3D in methods:
        session.set_volume(image)
    try:
        for name in names:
            bar.set_postfix_str(f"{case.case_id}/{name}", refresh=False)
            gt = _load_mask(case, name, image)
            if gt.any():
                _evaluate_structure(session, image, case.case_id, name, gt, counts, methods, first_clicks, tol_mm, out)
            else:
                out.skipped.append(f"{case.case_id}: structure {name!r} is empty")
            bar.update(1)
    finally:
        session.close()


def _evaluate_structure(session: Session, image: sitk.Image, case_id: str, name: str, gt: np.ndarray,
                        counts: tuple[int, ...], methods: tuple[str, ...],
                        first_clicks: tuple[tuple[int, ...], tuple[str, str]], tol_mm: float, out: _Collector) -> None:
    """Per seed, every method on one structure from the same first click (``first_clicks``: seeds,
    (first-click mode, click rule))."""
    spacing = tuple(float(s) for s in image.GetSpacing())
    seeds, (mode, rule) = first_clicks
    simulate = largest_component_click if rule == "cvpr25" else next_click
    for run_seed in seeds:
        if rule == "cvpr25":
            first = largest_component_click(np.zeros_like(gt), gt, spacing)
        elif mode == "deepest":
            first = deepest_click(gt, spacing)
        else:
            first = first_click(gt, case_rng(run_seed, case_id, name))
        for method in methods:
            if method == METHOD_CTSAM3D:
                segment = _ctsam3d_segmenter(session, name)
            else:
                segment = _growcut_segmenter(sitk.GetArrayViewFromImage(image), spacing)
            _click_loop(segment, gt, first, counts, (spacing, tol_mm, simulate), (case_id, name, method), run_seed, out)
        if METHOD_CTSAM3D in methods:
            session.remove_target(name)  # the next seed starts a fresh target; memory stays flat


def _structures_of_case(case: EvalCase, image: sitk.Image, selection: tuple[Sequence[str] | None, int | None],
                        out: _Collector) -> list[str]:
    """The structures to evaluate in ``case`` (see ``evaluate``); missing/empty ones are logged as skipped."""
    wanted, max_structures = selection
    names = list(dict.fromkeys(wanted)) if wanted else sorted(case.masks)
    for name in [n for n in names if n not in case.masks]:
        out.skipped.append(f"{case.case_id}: no structure {name!r}")
    names = [n for n in names if n in case.masks]
    if max_structures is None and not wanted:
        return names  # every structure: emptiness is checked when each is loaded
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    volumes = {n: float(np.count_nonzero(_load_mask(case, n, image))) * voxel_mm3 for n in names}
    for name in [n for n, v in volumes.items() if v == 0]:
        out.skipped.append(f"{case.case_id}: structure {name!r} is empty")
    return select_structures(volumes, max_structures)


def _load_mask(case: EvalCase, name: str, image: sitk.Image) -> np.ndarray:
    source = case.masks[name]
    mask = np.asarray(source() if callable(source) else source)
    shape = tuple(image.GetSize())[::-1]
    if mask.shape != shape:
        raise ValueError(f"Case {case.case_id}: mask {name!r} has shape {mask.shape} (z, y, x) but the image has "
                         f"{shape}; labels must lie on the CT's grid.")
    return mask != 0


def _ctsam3d_segmenter(session: Session, target: str) -> _Segmenter:
    def segment(click: Click) -> tuple[np.ndarray, float]:
        session.add_click(click.point_xyz, click.is_positive, frame="ijk", target=target)
        return session.mask(target), float(session.last_stats["seconds"])

    return segment


def _growcut_segmenter(image_zyx: np.ndarray, spacing_mm: tuple[float, ...]) -> _Segmenter:
    given: list[Click] = []

    def segment(click: Click) -> tuple[np.ndarray, float]:
        given.append(click)
        t0 = time.perf_counter()
        mask = grow_from_seeds(image_zyx, spacing_mm, given)
        return mask, time.perf_counter() - t0

    return segment


def _click_loop(segment: _Segmenter, gt: np.ndarray, first: Click | None, counts: tuple[int, ...],
                measure: tuple[tuple[float, ...], float, Callable[..., Click | None]], key: tuple[str, str, str],
                seed: int, out: _Collector) -> None:
    """Click up to ``max(counts)`` times, each next click simulated on the method's own mask
    (``measure``: spacing, NSD tolerance, click rule)."""
    spacing, tol_mm, simulate = measure
    click: Click | None = first
    mask = np.zeros_like(gt)
    given: list[Click] = []
    times: list[float] = []
    for n in range(1, counts[-1] + 1):
        seconds = 0.0
        if click is not None:
            mask, seconds = segment(click)
            given.append(click)
            times.append(seconds)
        if n in counts:
            out.records.append(ClickRecord(*key, n, dice(mask, gt), normalized_surface_dice(mask, gt, spacing, tol_mm),
                                           seconds, float(sum(times)), click, seed))
        if click is not None and n < counts[-1]:
            click = simulate(mask, gt, spacing)
            if click is None:
                logger.info("%s/%s %s: perfect after %d clicks", *key, n)
    out.traces.append(ClickTrace(*key, tuple(given), tuple(times), seed))
