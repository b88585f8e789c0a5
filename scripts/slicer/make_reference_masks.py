"""Generate the reference masks that CTSAM3DTest (the Slicer self-test) compares against, headless.

Runs the same code path as the Slicer module (``CTSAM3DLib.mrml``: storage-node loading,
RAS clicks, region writes) on real MRML through the slicer-core wheel, with the bundled default
weights, and writes to ``Resources/sample/reference/``:

* ``ctsam3d_reference.seg.nrrd``: one segment per structure (named like the TotalSegmentator file);
* ``clicks.json``: the clicks (world RAS) and settings the self-test replays.

Each structure gets one positive click at its deepest interior voxel (largest distance in mm to
the TotalSegmentator mask's boundary or the scan's edge: the evaluation protocol's deepest
voxel, ``prompts.simulate.deepest_click``), found on the grid Slicer loads,
so the clicks are the same in Slicer. Usage (after the default weights exist and their SHA-256 is recorded)::

    python scripts/slicer/make_reference_masks.py            # bundled weights, CPU
    python scripts/slicer/make_reference_masks.py --checkpoint other.pt --output ref_out  # try it out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# Structures of the sample CT that the self-test segments: a large organ (CPP), a kidney, a vessel.
STRUCTURES = ("liver", "kidney_right", "aorta")
# File name of the reference segmentation inside the output folder.
SEGMENTATION_FILE = "ctsam3d_reference.seg.nrrd"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: the bundled default weights)")
    parser.add_argument("--window-hu", type=float, nargs=2, default=None, help="HU window of a release checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu (default, what the references record) or cuda")
    parser.add_argument("--sample", type=Path, default=REPO / "Resources" / "sample" / "abdomen_pelvis")
    parser.add_argument("--output", type=Path, default=REPO / "Resources" / "sample" / "reference")
    parser.add_argument("--no-cpp", action="store_true", help="turn cross-patch prompting off")
    parser.add_argument("--max-patches", type=int, default=27)
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES), help="TotalSegmentator structure names")
    args = parser.parse_args(argv)

    import slicer
    from mrml_test_support import headless_scene, read_node, write_node

    from CTSAM3DLib.mrml.logic import BridgeLogic
    from CTSAM3DLib.prompts.simulate import deepest_click

    scene = headless_scene()
    volume = read_node(scene, args.sample / "ct.nii.gz", name="CT")
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(volume))
    logic = BridgeLogic()
    logic.load_model(args.checkpoint, args.device, tuple(args.window_hu) if args.window_hu else None)
    logic.configure(use_cpp=not args.no_cpp, max_patches=args.max_patches)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CTSAM3D reference")
    segmentation.CreateDefaultDisplayNodes()
    structures = []
    for name in args.structures:
        truth_node = read_node(scene, args.sample / "segmentations" / f"{name}.nii.gz",
                               "vtkMRMLLabelMapVolumeNode", name=f"{name} (TotalSegmentator)")
        truth = np.array(slicer.util.arrayFromVolume(truth_node)) > 0  # same grid as the CT: both read by Slicer
        deepest = deepest_click(truth, volume.GetSpacing())  # the evaluation protocol's deepest voxel
        point_ras = (ijk_to_ras @ np.array([*deepest.point_xyz, 1.0]))[:3]
        start = time.perf_counter()
        segment_id = logic.segment(volume, segmentation, None, [point_ras], [1])
        seconds = time.perf_counter() - start
        segmentation.GetSegmentation().GetSegment(segment_id).SetName(name)
        ours = np.asarray(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)) > 0
        dice = 2.0 * (ours & truth).sum() / max(1, ours.sum() + truth.sum())
        print(f"{name}: click RAS {np.round(point_ras, 2).tolist()}, {seconds:.1f} s, "
              f"{int(ours.sum())} voxels, Dice vs TotalSegmentator {dice:.3f}")
        structures.append({"name": name, "points_ras": [point_ras.tolist()], "labels": [1],
                           "voxels": int(ours.sum()), "dice_vs_totalsegmentator": round(float(dice), 4)})
    args.output.mkdir(parents=True, exist_ok=True)
    write_node(segmentation, args.output / SEGMENTATION_FILE)
    spec = {"version": 1, "volume": "sample/abdomen_pelvis/ct.nii.gz", "segmentation": SEGMENTATION_FILE,
            "checkpoint": _portable(str(Path(args.checkpoint).resolve())) if args.checkpoint else "bundled default",
            "predictor": _portable(logic.predictor.info), "device": args.device, "use_cpp": not args.no_cpp,
            "max_patches": args.max_patches, "structures": structures}
    (args.output / "clicks.json").write_text(json.dumps(spec, indent=2, default=str) + "\n")
    print(f"Wrote {args.output / SEGMENTATION_FILE} and {args.output / 'clicks.json'}")
    logic.close()
    return 0


def _portable(value):
    """``value`` with absolute paths made relative to the repository (else reduced to their name): the spec
    ships with the extension and must not record this machine's folders."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        path = Path(value)
        return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    return value


def _ijk_to_ras(volume_node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Testing" / "slicer_module"))  # mrml_test_support
    sys.exit(main())
