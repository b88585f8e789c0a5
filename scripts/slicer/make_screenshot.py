"""Render the catalogue screenshot ``Resources/Screenshots/ctsam3d-liver.png`` from a real result.

Runs the module's code path headless (``CTSAM3DLib.mrml.logic.BridgeLogic`` on real MRML through
slicer-core, bundled weights, CPU, CPP on): the clicks of ``Resources/sample/reference/clicks.json``
on the bundled sample CT. Then draws axial, coronal and sagittal slices through the liver click
with matplotlib: CT in a soft-tissue window, each segment in the colour Slicer gave it, the include
points in the module's green. Usage::

    python scripts/slicer/make_screenshot.py [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "Resources" / "Screenshots" / "ctsam3d-liver.png")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import slicer
    from matplotlib.colors import ListedColormap
    from mrml_test_support import headless_scene, read_node, segment_internal_array

    from CTSAM3DLib.mrml.geometry import ijk_to_ras_matrix
    from CTSAM3DLib.mrml.logic import BridgeLogic
    from CTSAM3DLib.mrml.markups import POSITIVE_COLOR

    spec = json.loads((REPO / "Resources" / "sample" / "reference" / "clicks.json").read_text())
    scene = headless_scene()
    volume = read_node(scene, REPO / "Resources" / spec["volume"], name="CT")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CTSAM3D")
    logic = BridgeLogic()
    logic.load_model(None, "cpu")
    logic.configure(use_cpp=True, max_patches=spec["max_patches"])
    segments, clicks_ijk = [], []
    ras_to_ijk = np.linalg.inv(ijk_to_ras_matrix(volume))
    for structure in spec["structures"]:
        segment_id = logic.segment(volume, segmentation, None, structure["points_ras"], structure["labels"])
        segmentation.GetSegmentation().GetSegment(segment_id).SetName(structure["name"])
        segments.append(segment_id)
        clicks_ijk += [(ras_to_ijk @ np.array([*p, 1.0]))[:3] for p in structure["points_ras"]]
        print(f"{structure['name']}: {int(segment_internal_array(segmentation, segment_id, volume).sum())} voxels")
    # Display order as in Slicer's views (radiological): x towards the patient's left, y posterior, z inferior.
    signs = np.sign(np.diag(ijk_to_ras_matrix(volume)[:3, :3]))  # the volume is axis-aligned
    flips = [signs[0] > 0, signs[1] > 0, signs[2] > 0]  # i along +R, j along +A, k along +S: reverse them
    ct_raw = np.asarray(slicer.util.arrayFromVolume(volume), dtype=np.float32)
    size_xyz = ct_raw.shape[::-1]

    def orient(array_zyx: np.ndarray) -> np.ndarray:
        axes = tuple(2 - a for a in range(3) if flips[a])
        return np.flip(array_zyx, axis=axes) if axes else array_zyx

    ct = orient(ct_raw)
    shown = [tuple(int(n - 1 - round(v)) if f else int(round(v)) for v, n, f in zip(p, size_xyz, flips))
             for p in clicks_ijk]
    spacing = np.asarray(volume.GetSpacing())  # x, y, z mm
    i, j, k = shown[0]  # the liver click
    views = [("Axial", lambda a: a[k], spacing[1] / spacing[0]),  # rows y, columns x
             ("Coronal", lambda a: a[:, j], spacing[2] / spacing[0]),  # rows z, columns x
             ("Sagittal", lambda a: a[:, :, i], spacing[2] / spacing[1])]  # rows z, columns y
    fig, axes = plt.subplots(1, 3, figsize=(15, 6.2), facecolor="black")
    for ax, (title, cut, aspect) in zip(axes, views):
        ax.imshow(np.clip(cut(ct), -160, 240), cmap="gray", aspect=aspect, interpolation="bilinear")
        for segment_id in segments:
            mask = cut(orient(segment_internal_array(segmentation, segment_id, volume))).astype(float)
            color = segmentation.GetSegmentation().GetSegment(segment_id).GetColor()
            ax.imshow(np.ma.masked_equal(mask, 0), cmap=ListedColormap([color]), alpha=0.55, aspect=aspect,
                      interpolation="nearest")
            ax.contour(mask, levels=[0.5], colors=[color], linewidths=1.2)
        for x, y, z in shown:  # the include points lying in this slice
            at = {"Axial": (z == k, x, y), "Coronal": (y == j, x, z), "Sagittal": (x == i, y, z)}[title]
            if at[0]:
                ax.plot(at[1], at[2], "o", ms=9, mec="white", mfc=POSITIVE_COLOR)
        ax.set_title(title, color="white")
        ax.axis("off")
    names = ", ".join(s["name"].replace("_", " ") for s in spec["structures"])
    fig.suptitle(f"CTSAM3D: one include point per structure ({names}); bundled compact weights, CPU, CPP on",
                 color="white", fontsize=12)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(args.output.name + ".tmp.png")
    fig.savefig(temporary, dpi=100, facecolor="black")
    temporary.replace(args.output)  # atomic: never a half-written screenshot
    print(f"Wrote {args.output}")
    logic.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Testing" / "slicer_module"))  # mrml_test_support
    sys.exit(main())
