"""Render the catalogue screenshot ``Resources/Screenshots/ctsam3d-liver.png`` with Slicer's own slice views.

Runs the module's code path headless (``CTSAM3DLib.mrml.logic.BridgeLogic`` on real MRML, bundled weights, CPU,
CPP on): the clicks of ``Resources/sample/reference/clicks.json`` on the bundled sample CT. Then Slicer's slice
views render off-screen (slicer-core's displayable managers through trame-slicer, as the web app does; OSMesa
when there is no display): axial, coronal and sagittal through the liver click, the CT in a soft-tissue window,
the segments as Slicer draws them (fill and outline), the include points as the module's green markups.
Needs the ``web`` extra (trame-slicer) and ``libosmesa6``. Usage::

    python scripts/slicer/make_screenshot.py [--output PATH] [--size PIXELS]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# Soft-tissue window (width, level) in HU and the panel background, as Slicer shows an abdomen CT.
WINDOW_LEVEL = (400.0, 40.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "Resources" / "Screenshots" / "ctsam3d-liver.png")
    parser.add_argument("--size", type=int, default=560, help="edge of each slice view in pixels")
    parser.add_argument("--stub", action="store_true", help="the test stub instead of the weights (layout checks)")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")
    try:
        from trame_slicer.core import SlicerApp
    except ImportError:
        print("make_screenshot.py needs trame-slicer: pip install -e '.[web]'", file=sys.stderr)
        return 2
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    views = {name: app.view_manager.create_view(getattr(ViewLayoutDefinition, f"{name}_view")())
             for name in ("axial", "coronal", "sagittal")}  # before the nodes: their managers then draw them
    spec = json.loads((REPO / "Resources" / "sample" / "reference" / "clicks.json").read_text())
    volume, clicks = _segment(app.scene, spec, args.stub)
    panels = [_render(view, volume, clicks[0], args.size) for view in views.values()]
    _write(np.concatenate(panels, axis=1), spec, args.output)
    print(f"Wrote {args.output}")
    return 0


def _segment(scene: Any, spec: dict, stub: bool) -> tuple[Any, np.ndarray]:
    """Segment the spec's structures, shown as in Slicer; returns the volume and the clicks (world RAS (N, 3))."""
    from mrml_test_support import StubPredictor, read_node, segment_internal_array

    from CTSAM3DLib.mrml.logic import BridgeLogic
    from CTSAM3DLib.mrml.markups import PromptMarkups

    volume = read_node(scene, REPO / "Resources" / spec["volume"], name="CT")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CTSAM3D")
    logic = BridgeLogic()
    if stub:
        logic.set_predictor(StubPredictor())
    else:
        logic.load_model(None, "cpu")
    logic.configure(use_cpp=True, max_patches=spec["max_patches"])
    points, labels = [], []
    for structure in spec["structures"]:
        segment_id = logic.segment(volume, segmentation, None, structure["points_ras"], structure["labels"])
        segmentation.GetSegmentation().GetSegment(segment_id).SetName(structure["name"])
        points += structure["points_ras"]
        labels += [bool(v) for v in structure["labels"]]
        print(f"{structure['name']}: {int(segment_internal_array(segmentation, segment_id, volume).sum())} voxels")
    logic.close()
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(*WINDOW_LEVEL)
    segmentation.GetDisplayNode().SetOpacity2DFill(0.45)
    clicks = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    PromptMarkups(scene, lambda *_: None).show(clicks, labels)  # the module's green points, as in Slicer
    return volume, clicks


def _render(view: Any, volume: Any, point_ras: np.ndarray, size: int) -> np.ndarray:
    """One slice view through ``point_ras`` (world RAS), rendered off-screen: RGB uint8 (size, size, 3)."""
    import vtk
    from vtk.util import numpy_support

    view.render_window().SetSize(size, size)
    view.set_background_volume_id(volume.GetID())
    view.fit_view_to_content()
    volume.GetScene().GetNodeByID(view.get_view_node_id()).JumpSliceByOffsetting(*(float(v) for v in point_ras))
    view.render()
    view.render()  # the second frame: displayable managers update their pipelines on the first
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
    return np.ascontiguousarray(pixels[::-1])  # VTK's rows go bottom-up


def _write(rgb: np.ndarray, spec: dict, output: Path) -> None:
    """Write the panels with a one-line caption, atomically (never a half-written screenshot)."""
    from PIL import Image, ImageDraw

    from CTSAM3DLib.io.atomic import atomic_write_bytes

    caption = 28
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + caption), "black")
    canvas.paste(Image.fromarray(rgb), (0, caption))
    names = ", ".join(s["name"].replace("_", " ") for s in spec["structures"])
    ImageDraw.Draw(canvas).text((10, 8), f"CTSAM3D in Slicer's slice views: one include point per structure ({names}); "
                                         "bundled demo weights, CPU, CPP on", fill="white")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, buffer.getvalue(), overwrite=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "Testing" / "slicer_module"))  # mrml_test_support
    sys.exit(main())
