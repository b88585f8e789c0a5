"""Helpers shared by the Slicer-side tests and scripts: a scene without the Slicer application,
storage-node file I/O, a stub predictor and MRML node builders.

``StubPredictor`` is a test double, not a model: it answers every patch with balls around
the clicks (positive balls on, negative balls off, later clicks win), so that geometry and
plumbing can be checked exactly, and so that the overhead benchmark measures the logic
without any network.
"""

from __future__ import annotations

import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Patch edge (voxels of model space) the engine works in.
PATCH = 64


class StubPredictor:
    """Test double with the ``Predictor`` interface the engine uses; no network.

    Args:
        radius_vox: ball radius in model-space voxels (1.5 mm).
        delay_s: sleep per encode/decode call (to test cancelling).
    """

    def __init__(self, radius_vox: float = 6.0, delay_s: float = 0.0) -> None:
        self.device = torch.device("cpu")
        self.variant, self.window_hu, self.info, self.use_amp = "stub", (-1000.0, 1000.0), {"stub": True}, False
        self.needs_image = False
        self.radius_vox = float(radius_vox)
        self.delay_s = float(delay_s)
        self.decode_calls = 0
        self.prev_masks: list[np.ndarray | None] = []  # the previous-mask input of each decoded patch

    def scale(self, hu: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(hu), dtype=torch.float32)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        time.sleep(self.delay_s)
        return [torch.zeros(image.shape[0], 1)]

    def decode(self, feats: list[torch.Tensor], points: torch.Tensor, labels: torch.Tensor,
               prev_mask: torch.Tensor | None = None, image: torch.Tensor | None = None,
               refine_passes: int = 0) -> torch.Tensor:
        time.sleep(self.delay_s)
        self.decode_calls += 1
        for b in range(points.shape[0]):
            self.prev_masks.append(None if prev_mask is None else prev_mask[b, 0].cpu().numpy().copy())
        out = np.zeros((points.shape[0], 1, PATCH, PATCH, PATCH), dtype=np.float32)
        r = self.radius_vox
        for b in range(points.shape[0]):
            for (x, y, z), label in zip(points[b].tolist(), labels[b].tolist()):
                if label < 0:
                    continue
                lo = [max(0, int(np.floor(c - r))) for c in (z, y, x)]
                hi = [min(PATCH, int(np.ceil(c + r)) + 1) for c in (z, y, x)]
                zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
                ball = (xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2 <= r**2
                out[b, 0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][ball] = float(label == 1)
        return torch.from_numpy(out)

    def cpp(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(image_v)


def vtk_matrix(array: np.ndarray) -> Any:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """3x3 rotation about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def affine(linear: np.ndarray, translation: tuple[float, float, float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation
    return matrix


def synthetic_ct(shape_zyx: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """int16 HU noise (z, y, x), seeded."""
    return np.random.default_rng(seed).normal(0.0, 50.0, shape_zyx).astype(np.int16)


def make_volume_node(scene: Any, array_zyx: np.ndarray, ijk_to_ras: np.ndarray, name: str = "CT") -> Any:
    """A scalar volume node holding ``array_zyx`` with this IJKToRAS (4x4)."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array_zyx)
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    return node


def make_transform_node(scene: Any, to_parent: np.ndarray, parent: Any = None) -> Any:
    """A linear transform node (4x4 to-parent matrix), optionally under ``parent``."""
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(vtk_matrix(to_parent))
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node


def make_segmentation_node(scene: Any, name: str = "Segmentation") -> Any:
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    return node


def world_of_voxel(volume_node: Any, ijk: tuple[float, float, float]) -> np.ndarray:
    """World RAS of voxel (i, j, k) of a volume node, its parent transforms applied."""
    from CTSAM3DLib.mrml.geometry import ijk_to_ras_matrix, local_to_world

    local = ijk_to_ras_matrix(volume_node) @ np.array([*ijk, 1.0])
    return local_to_world(volume_node, local[:3])[0]


def segment_array(segmentation_node: Any, segment_id: str, volume_node: Any) -> np.ndarray:
    """The segment as uint8 (z, y, x) on the volume's grid (Slicer's own export)."""
    import slicer

    return np.asarray(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node))


def segment_internal_array(segmentation_node: Any, segment_id: str, volume_node: Any) -> np.ndarray:
    """The segment's own stored labelmap as uint8 (z, y, x) on the volume's grid, without any resampling.

    Checks first that the stored labelmap *is* on the volume's grid (in the segmentation's frame).
    Slicer's export onto a parent-transformed reference volume resamples; this does not.
    """
    import slicer
    import vtk
    from vtk.util import numpy_support

    from CTSAM3DLib.mrml.geometry import labelmap_geometry

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    full = np.zeros(volume_node.GetImageData().GetDimensions()[::-1], dtype=np.uint8)
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    if i1 < i0 or j1 < j0 or k1 < k0:
        return full  # empty segment
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    stored = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(stored, labelmap_geometry(volume_node, segmentation_node), atol=1e-9)
    shape = (k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)
    lo = np.maximum([k0, j0, i0], 0)
    hi = np.minimum([k1 + 1, j1 + 1, i1 + 1], full.shape)
    inside = values[lo[0] - k0:hi[0] - k0, lo[1] - j0:hi[1] - j0, lo[2] - i0:hi[2] - i0]
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = inside == segment.GetLabelValue()
    assert not (values == segment.GetLabelValue()).sum() - full.sum(), "segment voxels outside the volume grid"
    return full


def read_node(scene: Any, path: str | Path, class_name: str = "vtkMRMLScalarVolumeNode", name: str = "") -> Any:
    """Load a file into a new node through its default storage node (no ``slicer.app``).

    Raises:
        OSError: the storage node could not read the file.
    """
    node = scene.AddNewNodeByClass(class_name, name or Path(path).name.split(".")[0])
    storage = node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise OSError(f"Slicer could not read '{path}' as {class_name}.")
    node.CreateDefaultDisplayNodes()
    return node


def write_node(node: Any, path: str | Path) -> None:
    """Save a node to a file through its default storage node (no ``slicer.app``).

    Raises:
        OSError: the storage node could not write the file.
    """
    if node.GetStorageNode() is None:
        node.AddDefaultStorageNode()
    storage = node.GetStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"Slicer could not write '{node.GetName()}' to '{path}'.")


def headless_scene() -> Any:
    """A scene with Slicer's Colors, Volumes, Segmentations and Markups logics, for ``slicer-core`` only.

    Registers the logics the way the application does and sets ``slicer.mrmlScene`` and
    ``slicer.modules.<name>.logic()`` so that ``slicer.util`` helpers work. Inside the
    Slicer application use ``slicer.mrmlScene`` instead.

    Raises:
        RuntimeError: called inside the Slicer application.
    """
    import slicer

    if getattr(slicer, "app", None) is not None:
        raise RuntimeError("headless_scene() is for slicer-core outside Slicer; use slicer.mrmlScene in Slicer.")
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(tempfile.mkdtemp(prefix="ctsam3d-mrml-cache-"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io_manager)
    modules = types.SimpleNamespace(application_logic=app_logic, io_manager=io_manager)
    for name, cls in (("Colors", slicer.vtkSlicerColorLogic), ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("Markups", slicer.vtkSlicerMarkupsLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        setattr(modules, name.lower(), types.SimpleNamespace(logic=lambda logic=logic: logic))
    slicer.mrmlScene = scene
    slicer.modules = modules
    return scene


def import_module_with_stand_ins(monkeypatch: Any, with_parameter_node_wrapper: bool = True) -> Any:
    """Import CTSAM3D/CTSAM3D.py on slicer-core, with stand-ins for Slicer's Qt-bound parts.

    ``qt``, ``slicer.ScriptedLoadableModule`` and ``slicer.parameterNodeWrapper`` exist only in the
    Slicer application; minimal stand-ins (registered through ``monkeypatch``, so they vanish after
    the test) let the module's Logic and self-test code run on real MRML. The widget is not run.
    ``slicer.util.loadVolume`` / ``loadSegmentation`` (which need ``slicer.app``) become storage-node reads.
    ``with_parameter_node_wrapper=False`` emulates a Slicer older than the module needs.
    """
    import importlib.util
    import sys
    import unittest

    import slicer

    qt = types.ModuleType("qt")
    loadable = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent: Any = None) -> None:
            self.parent = parent

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, msec: int = 0) -> None:  # noqa: N802 - Slicer's name
            pass

    loadable.ScriptedLoadableModule = loadable.ScriptedLoadableModuleWidget = type("Base", (), {})
    loadable.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    loadable.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.WithinRange = lambda *args: None
    for name, module in (("qt", qt), ("slicer.ScriptedLoadableModule", loadable),
                         ("slicer.parameterNodeWrapper", wrapper if with_parameter_node_wrapper else None)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer.util, "loadVolume", lambda path: read_node(slicer.mrmlScene, path), raising=False)
    monkeypatch.setattr(slicer.util, "loadSegmentation",
                        lambda path: read_node(slicer.mrmlScene, path, "vtkMRMLSegmentationNode"), raising=False)
    path = Path(__file__).resolve().parents[2] / "CTSAM3D" / "CTSAM3D.py"
    monkeypatch.syspath_prepend(str(path.parent))  # CTSAM3DSlicer/ beside it, as in Slicer's module folder
    spec = importlib.util.spec_from_file_location("CTSAM3D_with_stand_ins", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
