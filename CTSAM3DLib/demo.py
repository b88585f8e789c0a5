"""``ctsam3d demo``: the main job on the bundled sample CT and weights.

Six structures of the bundled ``abdomen_pelvis`` CT (liver, right kidney, spleen, aorta,
vertebra L3, left iliopsoas) are segmented from simulated clicks with CPP on, through the
evaluation protocol (`eval.protocol.evaluate`, the same ``Session`` as the GUI). The clicks it
recorded are replayed once to obtain the final masks, which are written as NIfTI beside an
overlay PNG (three orthogonal views) and a Dice/NSD table.
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
from CTSAM3DLib.eval.report import check_output_dir
from CTSAM3DLib.io.datasets import scan_dataset
from CTSAM3DLib.io.readers import read_image, write_mask
from CTSAM3DLib.model.predictor import Predictor

logger = logging.getLogger(__name__)

# Structures the demo segments: organs, a vessel, a bone and a muscle.
DEMO_STRUCTURES = ("liver", "kidney_right", "spleen", "aorta", "vertebrae_L3", "iliopsoas_left")
# Overlay colours (RGB), one per structure.
_COLOURS = ((0.9, 0.3, 0.2), (0.2, 0.7, 0.9), (0.6, 0.3, 0.9), (1.0, 0.1, 0.4), (0.95, 0.85, 0.2), (0.2, 0.9, 0.4))


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
    check_output_dir(output_dir, overwrite)
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
    written: dict[str, Path] = {}
    for name, mask in masks.items():
        written[name] = output_dir / f"{name}.nii.gz"
        write_mask(mask, image, written[name], overwrite=overwrite)
    written["overlay"] = output_dir / "overlay.png"
    save_overlay(image, masks, written["overlay"])
    written["table"] = output_dir / "dice.md"
    written["table"].write_text(dice_table(result, counts), encoding="utf-8")
    return written


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


def save_overlay(image: sitk.Image, masks: dict[str, np.ndarray], path: Path) -> None:
    """Axial, coronal and sagittal slices through the masks' centre with coloured outlines."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oriented = sitk.DICOMOrient(image, "LPS")  # rows/columns in radiological display order
    ct = np.clip(sitk.GetArrayViewFromImage(oriented), -200, 300)
    masks = {n: _oriented_like(m, image) for n, m in masks.items()}
    sx, sy, sz = oriented.GetSpacing()
    union = np.any(np.stack(list(masks.values())), axis=0) if masks else np.zeros(ct.shape, bool)
    k, j, i = (np.argwhere(union).mean(0).astype(int) if union.any() else np.array(ct.shape) // 2)
    views = (("axial", ct[k], [m[k] for m in masks.values()], sy / sx),
             ("coronal", ct[:, j][::-1], [m[:, j][::-1] for m in masks.values()], sz / sx),
             ("sagittal", ct[:, :, i][::-1], [m[:, :, i][::-1] for m in masks.values()], sz / sy))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
    for ax, (title, img, slices, aspect) in zip(axes, views):
        ax.imshow(img, cmap="gray", aspect=aspect)
        for colour, sl in zip(_COLOURS, slices):
            if sl.any():
                ax.contour(sl.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(title)
        ax.axis("off")
    handles = [plt.Line2D([0], [0], color=c, lw=3) for c in _COLOURS[:len(masks)]]
    fig.legend(handles, list(masks), loc="lower center", ncol=len(masks))
    fig.suptitle("CTSAM3D demo: bundled sample CT (TotalSegmentator, Apache-2.0)")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
