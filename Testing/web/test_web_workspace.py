"""The web app's tab logic (``web.workspace``, ``web.inputs``) on real MRML, without a browser.

A click from the web app gives the same segment, voxel for voxel, as the Slicer module's path (a CT loaded
through its storage node, ``BridgeLogic.segment``); downloads hold what the scene holds; bad input is refused
with the segments untouched.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib import bundled

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer_module"))

# A voxel (i, j, k) inside the sample CT's liver and the stub predictor's sphere radius there.
LIVER_VOXEL = (86, 47, 100)


@pytest.fixture(scope="module")
def workspace(web_extra: None) -> Any:
    """A Workspace on a trame-slicer scene with the stub predictor (the same engine, a sphere for a network)."""
    from mrml_test_support import StubPredictor
    from trame_slicer.core import SlicerApp

    from CTSAM3DLib.mrml.logic import BridgeLogic
    from CTSAM3DLib.web.workspace import Workspace

    app = SlicerApp()
    logic = BridgeLogic()
    logic.set_predictor(StubPredictor())
    space = Workspace(app.scene, app.app_logic, logic)
    yield space
    logic.close()


@pytest.fixture()
def opened(workspace: Any) -> Any:
    workspace.open(bundled.sample_dir() / "ct.nii.gz")
    yield workspace
    workspace.logic.worker.wait()
    workspace.poll()
    workspace.close_ct()


def _world(volume_node: Any, ijk: tuple[int, int, int]) -> np.ndarray:
    from CTSAM3DLib.mrml.geometry import ijk_to_ras_matrix

    return (ijk_to_ras_matrix(volume_node) @ [*ijk, 1.0])[:3]


def _run(space: Any) -> list[Any]:
    results = space.logic.worker.wait(120)
    assert all(r.error is None for r in results), [r.error for r in results]
    return results


def _download(space: Any, suffix: str = ".nii.gz") -> np.ndarray:
    data = space.export(suffix)
    path = Path(__import__("tempfile").mkdtemp()) / f"labels{suffix}"
    path.write_bytes(data)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_click_is_voxel_identical_to_the_module_path(opened: Any) -> None:
    from mrml_test_support import StubPredictor, headless_scene, read_node, segment_array

    from CTSAM3DLib.mrml.logic import BridgeLogic

    point = _world(opened.volume_node, LIVER_VOXEL)
    opened.click(point, True)
    _run(opened)
    opened.poll()
    web_mask = _download(opened)

    scene = headless_scene()
    volume = read_node(scene, bundled.sample_dir() / "ct.nii.gz")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    module = BridgeLogic()
    module.set_predictor(StubPredictor())
    segment_id = module.segment(volume, segmentation, None, [point], [1])
    module_mask = segment_array(segmentation, segment_id, volume)
    module.close()
    assert module_mask.sum() > 100
    np.testing.assert_array_equal(web_mask > 0, module_mask > 0)
    i, j, k = LIVER_VOXEL
    assert web_mask[k, j, i] == 1


def test_undo_redo_reset_and_downloads(opened: Any) -> None:
    opened.click(_world(opened.volume_node, LIVER_VOXEL), True)
    _run(opened)
    opened.poll()
    clicked = _download(opened).sum()
    assert clicked > 0
    for kind, expected in (("undo", 0), ("redo", clicked), ("reset", 0), ("undo", clicked)):
        opened.submit(kind)
        _run(opened)
        opened.poll()
        assert _download(opened).sum() == expected, kind

    from CTSAM3DLib.mrml.segments import read_clicks

    seg = opened.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    path = Path(__import__("tempfile").mkdtemp()) / "s.seg.nrrd"
    path.write_bytes(opened.export(".seg.nrrd"))
    storage = seg.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(seg)
    points, labels = read_clicks(seg.GetSegmentation().GetNthSegment(0))
    assert labels == (True,) and points.shape == (1, 3)  # the clicks travel with the .seg.nrrd
    opened.scene.RemoveNode(seg)


def test_segment_list_operations(opened: Any) -> None:
    first = opened.add_segment()
    second = opened.add_segment("kidney")
    assert opened.segment_id == second and [s.name for s in opened.segments()][-1] == "kidney"
    opened.rename(second, "right kidney")
    opened.set_color(second, "#ff8000")
    opened.set_visible(second, False)
    row = next(s for s in opened.segments() if s.segment_id == second)
    assert (row.name, row.color, row.is_visible) == ("right kidney", "#ff8000", False)
    with pytest.raises(ValueError, match="colour"):
        opened.set_color(second, "orange")
    with pytest.raises(ValueError, match="empty"):
        opened.rename(second, "  ")
    opened.delete(second)
    assert [s.segment_id for s in opened.segments()] == [first] and opened.segment_id == first


def test_bad_files_are_refused_and_segments_stay(opened: Any, tmp_path: Path) -> None:
    opened.click(_world(opened.volume_node, LIVER_VOXEL), True)
    _run(opened)
    opened.poll()
    before, volume = _download(opened), opened.volume_node
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(32, 32, 1, sitk.sitkInt16), str(flat))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes((bundled.sample_dir() / "ct.nii.gz").read_bytes()[:5000])
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, message in ((tmp_path / "missing.nii.gz", "does not exist"), (empty, "no files"),
                          (flat, "2-D"), (truncated, "damaged"), (tmp_path / "x.txt", "not a CT file")):
        if path.suffix == ".txt":
            path.write_text("hello")
        with pytest.raises(ValueError, match=message):
            opened.open(path)
        assert opened.volume_node is volume
        np.testing.assert_array_equal(_download(opened), before)


def test_nii_gz_gives_overlaps_to_the_later_segment_as_the_page_says(opened: Any) -> None:
    from CTSAM3DLib.web.ui import LABELMAP_NOTE

    point = _world(opened.volume_node, LIVER_VOXEL)
    opened.click(point, True)
    _run(opened)
    opened.poll()
    first = int(_download(opened).sum())
    opened.add_segment("same place")
    opened.click(point, True)  # the stub predictor gives the same sphere: the segments overlap everywhere
    _run(opened)
    opened.poll()
    labels = _download(opened)
    assert "later segment wins" in LABELMAP_NOTE
    assert (labels == 1).sum() == 0 and (labels == 2).sum() == first > 0


def test_a_float_ct_with_nan_is_refused(opened: Any, tmp_path: Path) -> None:
    image = sitk.Image(8, 8, 8, sitk.sitkFloat32)
    image[1, 2, 3] = float("nan")
    path = tmp_path / "nan.nrrd"
    sitk.WriteImage(image, str(path))
    volume = opened.volume_node
    with pytest.raises(ValueError, match="NaN"):
        opened.open(path)
    assert opened.volume_node is volume


def test_zipped_dicom_opens_and_unsafe_zip_is_refused(workspace: Any, tmp_path: Path) -> None:
    image = sitk.Cast(sitk.ReadImage(str(bundled.sample_dir() / "ct.nii.gz"))[:, :, 40:48], sitk.sitkInt16)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for k in range(image.GetDepth()):
            writer, buffer = sitk.ImageFileWriter(), tmp_path / f"slice{k}.dcm"
            slice_k = image[:, :, k]
            for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1"), ("0020|0013", str(k + 1)),
                               ("0008|0060", "CT"), ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k))))),
                               ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2")):
                slice_k.SetMetaData(tag, value)
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(buffer))
            writer.Execute(slice_k)
            zipped.write(buffer, f"dicom/slice{k:03d}.dcm")
    node = workspace.open(archive)
    assert node.GetImageData().GetDimensions() == (image.GetWidth(), image.GetHeight(), image.GetDepth())
    workspace.close_ct()

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../outside.dcm", b"x")
    with pytest.raises(ValueError, match="unsafe"):
        workspace.open(evil)
    assert not (tmp_path / "outside.dcm").exists() and workspace.volume_node is None
    assert not list(workspace.access.scratch.glob("unzipped-*"))  # the extraction folders are gone
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        workspace.open(broken)


def test_the_large_organs_switch_sets_the_cpp_reach_depth(web_extra: None) -> None:
    import math

    from CTSAM3DLib.engine.planning import LARGE_ORGAN_REACH_DEPTH
    from CTSAM3DLib.mrml.logic import BridgeLogic
    from CTSAM3DLib.web.app import _cpp_settings

    logic = BridgeLogic()
    logic.configure(**_cpp_settings(True, "5", True))
    assert (logic.config.use_cpp, logic.config.max_patches, logic.config.cpp_reach_depth) == (True, 5, LARGE_ORGAN_REACH_DEPTH)
    logic.configure(**_cpp_settings(False, 27, False))
    assert (logic.config.use_cpp, logic.config.cpp_reach_depth) == (False, math.inf)
