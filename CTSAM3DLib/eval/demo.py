"""``ctsam3d demo``: the main job on the bundled sample CT and weights.

Six structures of the bundled ``abdomen_pelvis`` CT (liver, right kidney, spleen, aorta,
vertebra L3, left iliopsoas) are segmented from simulated clicks with CPP on, through the
evaluation protocol (`eval.protocol.evaluate`, the same ``Session`` as the GUI). The clicks it
recorded are replayed once to obtain the final masks, which are written as NIfTI beside an
overlay PNG (three orthogonal views: masks, ground truth, clicks, orientation) and a
Dice/NSD table. Every file is written atomically (`CTSAM3DLib.io.atomic`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import SimpleITK as sitk

from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.eval.protocol import METHOD_CTSAM3D, EvalResult, dataset_cases, evaluate
from CTSAM3DLib.io.atomic import atomic_write, atomic_write_text
from CTSAM3DLib.io.datasets import read_structures, scan_dataset
from CTSAM3DLib.io.readers import read_image, write_mask
from CTSAM3DLib.model.predictor import Predictor

logger = logging.getLogger(__name__)

# Structures the demo segments: organs, a vessel, a bone and a muscle.
DEMO_STRUCTURES = ("liver", "kidney_right", "spleen", "aorta", "vertebrae_L3", "iliopsoas_left")
# Overlay colours, one per structure: the Okabe-Ito palette (told apart with colour-vision deficiencies too).
_COLOURS = ("#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#009E73", "#E69F00")
# Files the demo writes besides one mask per structure.
_OVERLAY, _TABLE = "overlay.png", "dice.md"
# What the table's columns mean (printed under it).
TABLE_NOTE = ("DSC: Dice similarity coefficient, the volume overlap with the ground truth (1 = identical). "
              "NSD: normalised surface Dice, the share of both surfaces lying within 1 mm of the other surface "
              "(1 mm tolerance; 1 = every boundary voxel within 1 mm). @N: after N simulated clicks.")


def run_demo(predictor: Predictor, sample: Path, output_dir: Path, clicks: int = 3, overwrite: bool = False,
             progress: Callable[[str], None] = logger.info) -> dict[str, Path]:
    """Segment ``DEMO_STRUCTURES`` of the sample case; write masks, ``overlay.png`` and ``dice.md``.

    Args:
        predictor: the model (default weights in the CLI).
        sample: the sample case folder (TotalSegmentator layout: ``ct.nii.gz``, ``segmentations/``).
        output_dir: where results go (refused if it holds results, unless ``overwrite``).
        clicks: simulated clicks per structure (the first random in the structure, then corrective).
        overwrite: replace earlier results.
        progress: callback for progress lines.

    Returns:
        Name -> path of every file written (``overlay``, ``table`` and one per structure).
    """
    check_demo_output(output_dir, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    scan = scan_dataset(sample.parent)
    subjects = [s for s in scan.subjects if s.subject_id == sample.name]
    if not subjects:
        raise FileNotFoundError(f"No sample case {sample.name!r} under {sample.parent}.")
    counts = tuple(sorted({1, clicks}))
    progress(f"segmenting {len(DEMO_STRUCTURES)} structures with {clicks} simulated clicks each (CPP on)")
    result = evaluate(predictor, dataset_cases(subjects), counts, structures=DEMO_STRUCTURES,
                      session_config=SessionConfig(use_cpp=True), progress=True)
    image = read_image(subjects[0].image_path)
    masks = _replay(predictor, image, result)
    _, truths, _ = read_structures(subjects[0], image, list(masks))
    written: dict[str, Path] = {}
    for name, mask in masks.items():
        written[name] = output_dir / f"{name}.nii.gz"
        write_mask(mask, image, written[name], overwrite=overwrite)
    clicks_ijk = {t.structure: [(c.point_xyz, c.is_positive) for c in t.clicks]
                  for t in result.traces if t.method == METHOD_CTSAM3D}
    written["overlay"] = output_dir / _OVERLAY
    save_overlay(image, masks, written["overlay"], truths=truths, clicks=clicks_ijk, n_clicks=clicks,
                 overwrite=overwrite)
    written["table"] = output_dir / _TABLE
    atomic_write_text(written["table"], dice_table(result, counts) + "\n" + TABLE_NOTE + "\n", overwrite)
    return written


def check_demo_output(output_dir: Path, overwrite: bool = False) -> None:
    """Refuse, before any computation, an output folder that holds demo results (unless ``overwrite``).

    Raises:
        FileExistsError: ``output_dir`` is a file, or holds demo files and ``overwrite`` is False.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"The demo output {output_dir} is an existing file; give a folder.")
    names = [f"{n}.nii.gz" for n in DEMO_STRUCTURES] + [_OVERLAY, _TABLE]
    existing = [n for n in names if (output_dir / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds demo results ({', '.join(existing[:3])}"
                              f"{' ...' if len(existing) > 3 else ''}); pass --overwrite to replace them, or choose "
                              "another --output folder. Nothing was computed.")


def _replay(predictor: Predictor, image: sitk.Image, result: EvalResult) -> dict[str, np.ndarray]:
    """Re-apply the protocol's recorded clicks to get each structure's final mask."""
    masks: dict[str, np.ndarray] = {}
    with Session(predictor, SessionConfig(use_cpp=True)) as session:
        session.set_volume(image)
        for trace in result.traces:
            if trace.method != METHOD_CTSAM3D:
                continue
            for click in trace.clicks:
                session.add_click(click.point_xyz, click.is_positive, target=trace.structure)
            masks[trace.structure] = session.mask(trace.structure).copy()
    return masks


def dice_table(result: EvalResult, counts: tuple[int, ...]) -> str:
    """Markdown table: DSC and NSD per structure after each click count."""
    head = "| structure | " + " | ".join(f"DSC@{n} | NSD@{n}" for n in counts) + " | s/click |"
    rows = [head, "|" + "---|" * (2 * len(counts) + 2)]
    by_key = {(r.structure, r.n_clicks): r for r in result.records if r.method == METHOD_CTSAM3D}
    for name in dict.fromkeys(r.structure for r in result.records):
        cells = [f"{by_key[(name, n)].dsc:.3f} | {by_key[(name, n)].nsd:.3f}" for n in counts]
        secs = by_key[(name, counts[-1])].cumulative_seconds / counts[-1]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {secs:.2f} |")
    return "\n".join(rows) + "\n"


def _oriented_like(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    """``mask`` (on ``image``'s grid) reoriented to LPS axes, like the displayed CT."""
    m = sitk.GetImageFromArray(mask.astype(np.uint8))
    m.CopyInformation(image)
    return sitk.GetArrayFromImage(sitk.DICOMOrient(m, "LPS")).astype(bool)


def save_overlay(image: sitk.Image, masks: dict[str, np.ndarray], path: Path,
                 truths: dict[str, np.ndarray] | None = None,
                 clicks: dict[str, list[tuple[tuple[float, float, float], bool]]] | None = None,
                 n_clicks: int | None = None, overwrite: bool = False) -> None:
    """Axial, coronal and sagittal slices through the masks' centre, radiological orientation.

    Each structure has one colour: its mask as a solid outline, its ground truth (if given) as a
    dashed outline, and its clicks (input voxel ``(x, y, z)``, projected onto each view) as
    ``+`` (include) and ``x`` (exclude) markers. Edges carry the orientation letters.
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    oriented = sitk.DICOMOrient(image, "LPS")  # index i -> patient left, j -> posterior, k -> superior
    ct = np.clip(sitk.GetArrayViewFromImage(oriented), -200, 300)
    shown = {n: _oriented_like(m, image) for n, m in masks.items()}
    shown_truth = {n: _oriented_like(m, image) for n, m in (truths or {}).items()}
    sx, sy, sz = oriented.GetSpacing()
    nk = ct.shape[0]
    union = np.any(np.stack(list(shown.values())), axis=0) if shown else np.zeros(ct.shape, bool)
    k, j, i = (np.argwhere(union).mean(0).astype(int) if union.any() else np.array(ct.shape) // 2)
    # (title, slicer of a (k, j, i) volume, aspect, click (i, j, k) -> (column, row), edge letters l/r/top/bottom)
    views = (("axial", lambda v: v[k], sy / sx, lambda p: (p[0], p[1]), "RLAP"),
             ("coronal", lambda v: v[:, j][::-1], sz / sx, lambda p: (p[0], nk - 1 - p[2]), "RLSI"),
             ("sagittal", lambda v: v[:, :, i][::-1], sz / sy, lambda p: (p[1], nk - 1 - p[2]), "APSI"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.8))
    for ax, (title, cut, aspect, project, letters) in zip(axes, views):
        ax.imshow(cut(ct), cmap="gray", aspect=aspect)
        for colour, name in zip(_COLOURS, shown):
            for volume, style in ((shown_truth.get(name), "--"), (shown[name], "-")):
                if volume is not None and cut(volume).any():
                    ax.contour(cut(volume).astype(float), levels=[0.5], colors=[colour], linewidths=1.3,
                               linestyles=style)
            for point, positive in (clicks or {}).get(name, []):
                column, row = project(_to_oriented_index(point, image, oriented))
                ax.plot(column, row, marker="P" if positive else "X", markersize=9, color=colour,
                        markeredgecolor="black", markeredgewidth=0.8, linestyle="none")
        for text, xy in zip(letters, ((0.01, 0.5), (0.99, 0.5), (0.5, 0.99), (0.5, 0.01))):
            ax.text(*xy, text, transform=ax.transAxes, color="white", fontsize=13, fontweight="bold",
                    ha="left" if xy[0] < 0.1 else "right" if xy[0] > 0.9 else "center",
                    va="top" if xy[1] > 0.9 else "bottom" if xy[1] < 0.1 else "center")
        ax.set_title(title)
        ax.axis("off")
    handles = [Line2D([0], [0], color=c, lw=3) for c in _COLOURS[:len(shown)]]
    keys = [Line2D([0], [0], color="grey", lw=1.5, linestyle="--"),
            Line2D([0], [0], marker="P", color="grey", markeredgecolor="black", linestyle="none", markersize=9),
            Line2D([0], [0], marker="X", color="grey", markeredgecolor="black", linestyle="none", markersize=9)]
    fig.legend(handles + keys, [*shown, "ground truth (dashed)", "include click", "exclude click"],
               loc="lower center", ncol=len(shown) + 3, fontsize=9)
    after = f" after {n_clicks} click{'s' * (n_clicks != 1)} per structure" if n_clicks else ""
    fig.suptitle(f"CTSAM3D demo{after}: solid = result, dashed = ground truth, clicks projected onto each view\n"
                 "bundled sample CT (TotalSegmentator, Apache-2.0); radiological view: patient's right on the left")
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png"), overwrite)
    finally:
        plt.close(fig)


def _to_oriented_index(point_ijk: tuple[float, float, float], image: sitk.Image,
                       oriented: sitk.Image) -> tuple[float, float, float]:
    """An input voxel position ``(x, y, z)`` as a continuous index ``(i, j, k)`` of the LPS-oriented image."""
    lps = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in point_ijk])
    return oriented.TransformPhysicalPointToContinuousIndex(lps)
