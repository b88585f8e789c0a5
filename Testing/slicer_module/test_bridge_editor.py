"""Writing as the Segment Editor would (issue 35): its undo, masking and overwrite settings, a labelmap source
representation, shared labelmap layers, the reference geometry; on real MRML (slicer-core)."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_test_support import affine, make_segmentation_node, make_volume_node, segment_array, world_of_voxel

CLICK_A, CLICK_B, CLICK_FAR = (20, 24, 20), (26, 24, 20), (46, 40, 20)


@pytest.fixture
def ct(scene):
    return make_volume_node(scene, np.random.default_rng(1).normal(0, 50, (40, 48, 56)).astype(np.int16),
                            affine(np.diag([1.0, 1.0, 2.0]), (-20.0, 15.0, 40.0)))


@pytest.fixture
def logic(stub_predictor):
    from CTSAM3DLib.mrml.logic import BridgeLogic

    bridge = BridgeLogic()
    bridge.set_predictor(stub_predictor)
    bridge.configure(use_cpp=False)
    yield bridge
    bridge.close()


def _click(logic, ct, segmentation, ijk, segment_id=None, positive=True):
    return logic.segment(ct, segmentation, segment_id, [world_of_voxel(ct, ijk)], [int(positive)])


def _editor(scene, segmentation, ct):
    import slicer

    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetSegmentEditorNode(node)
    editor.SetSegmentationNode(segmentation)
    editor.SetSourceVolumeNode(ct)
    return editor, node


def _hand_edit(segmentation, segment_id, ct, box_zyx):
    """A Segment Editor paint stroke: the segment gains a block of voxels."""
    import slicer

    array = segment_array(segmentation, segment_id, ct).copy()
    array[box_zyx] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(array, segmentation, segment_id, ct)


def test_segment_editor_undo_after_a_click_returns_to_the_state_before_it(scene, ct, logic):
    editor, _ = _editor(scene, segmentation := make_segmentation_node(scene), ct)
    logic.before_write = lambda _segment_id: editor.SaveStateForUndo()
    sid = _click(logic, ct, segmentation, CLICK_A)
    editor.SaveStateForUndo()  # as every Segment Editor effect does before it paints
    _hand_edit(segmentation, sid, ct, np.s_[30:34, 40:44, 40:44])
    before_b = segment_array(segmentation, sid, ct).copy()
    _click(logic, ct, segmentation, CLICK_FAR, sid)
    assert segment_array(segmentation, sid, ct).sum() > before_b.sum()
    editor.Undo()
    np.testing.assert_array_equal(segment_array(segmentation, sid, ct), before_b)  # hand edit and click A kept
    _click(logic, ct, segmentation, CLICK_B, sid)  # CTSAM3D goes on from what the editor restored
    after = segment_array(segmentation, sid, ct)
    assert after[30:34, 40:44, 40:44].all() and after[20, 24, 20]


def test_ctsam3d_undo_then_segment_editor_undo(scene, ct, logic):
    editor, _ = _editor(scene, segmentation := make_segmentation_node(scene), ct)
    logic.before_write = lambda _segment_id: editor.SaveStateForUndo()
    sid = _click(logic, ct, segmentation, CLICK_A)
    editor.SaveStateForUndo()
    _hand_edit(segmentation, sid, ct, np.s_[30:34, 40:44, 40:44])
    before_b = segment_array(segmentation, sid, ct).copy()
    _click(logic, ct, segmentation, CLICK_FAR, sid)
    after_b = segment_array(segmentation, sid, ct).copy()
    assert logic.session(ct, segmentation).undo(sid)
    np.testing.assert_array_equal(segment_array(segmentation, sid, ct), before_b)
    editor.Undo()  # undoes CTSAM3D's undo
    np.testing.assert_array_equal(segment_array(segmentation, sid, ct), after_b)


def test_editor_masking_limits_the_write(scene, ct, logic):
    import slicer

    from CTSAM3DLib.mrml.editor import editor_settings

    segmentation = make_segmentation_node(scene)
    _, node = _editor(scene, segmentation, ct)
    inside = segmentation.GetSegmentation().AddEmptySegment("", "inside")
    _hand_edit(segmentation, inside, ct, np.s_[:, :, 22:])  # the editable area: i >= 22
    node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    node.SetMaskSegmentID(inside)
    node.SetSourceVolumeIntensityMask(True)
    node.SetSourceVolumeIntensityMaskRange(-40.0, 4000.0)
    mask, overwrite = editor_settings(node)
    logic.configure(edit_mask=mask, overwrite=overwrite)
    sid = _click(logic, ct, segmentation, (22, 24, 20))
    result = segment_array(segmentation, sid, ct).astype(bool)
    values = slicer.util.arrayFromVolume(ct)
    assert result.any() and not result[:, :, :22].any() and (values[result] >= -40).all()
    engine = logic.session(ct, segmentation).engine.mask(sid).astype(bool)
    assert (engine & ~result).any()  # the engine's ball reached the masked voxels, the segment did not


def test_undo_after_overwriting_another_segment_is_refused_with_a_message(scene, ct, logic):
    segmentation = make_segmentation_node(scene)
    other = _click(logic, ct, segmentation, CLICK_B)
    logic.configure(overwrite="all")
    sid = _click(logic, ct, segmentation, CLICK_A)
    session = logic.session(ct, segmentation)
    with pytest.raises(ValueError, match="Segment Editor's Undo"):
        session.undo(sid)
    assert segment_array(segmentation, other, ct).sum() > 0
    far = _click(logic, ct, segmentation, CLICK_FAR)  # took nothing from anyone: its undo works
    assert session.undo(far)


def test_segments_share_a_labelmap_layer_while_they_do_not_overlap(scene, ct, logic):
    segmentation = make_segmentation_node(scene)
    first = _click(logic, ct, segmentation, CLICK_A)
    second = _click(logic, ct, segmentation, CLICK_FAR)
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    third = _click(logic, ct, segmentation, CLICK_B)  # overlaps the first (protected): a layer of its own
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 2
    for sid, ijk in ((first, CLICK_A), (second, CLICK_FAR), (third, CLICK_B)):
        i, j, k = ijk
        assert segment_array(segmentation, sid, ct)[k, j, i], sid
    session = logic.session(ct, segmentation)
    job = session.prepare_click(world_of_voxel(ct, CLICK_A), True, first)  # the second wrote into its layer
    assert job.content is None  # ... but it is not re-read as if edited by hand
    session.discard(job)


def test_closed_surface_segmentation_is_refused_then_converted(scene, ct, logic):
    import slicer
    import vtk

    from CTSAM3DLib.mrml.editor import SourceRepresentationError

    segmentation = make_segmentation_node(scene)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(*world_of_voxel(ct, CLICK_FAR))
    sphere.SetRadius(6.0)
    sphere.Update()
    segmentation.SetSourceRepresentationToClosedSurface()
    ball = segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "model")
    with pytest.raises(SourceRepresentationError, match="binary labelmap"):
        logic.session(ct, segmentation)
    logic.use_labelmap_source(segmentation)
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    assert segmentation.GetSegmentation().GetSourceRepresentationName() == binary
    sid = _click(logic, ct, segmentation, CLICK_A)
    surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    segmentation.GetSegmentation().CreateRepresentation(surface)
    i, j, k = CLICK_A
    assert segment_array(segmentation, sid, ct)[k, j, i]  # survives a conversion
    i, j, k = CLICK_FAR
    assert segment_array(segmentation, ball, ct)[k, j, i]  # the model's voxels came along


def test_an_empty_closed_surface_segmentation_just_switches(scene, ct, logic):
    segmentation = make_segmentation_node(scene)
    segmentation.SetSourceRepresentationToClosedSurface()
    sid = _click(logic, ct, segmentation, CLICK_A)
    assert segment_array(segmentation, sid, ct).sum() > 0


def test_a_chosen_reference_geometry_is_kept_on_an_empty_segmentation(scene, ct, logic):
    import slicer

    coarse = make_volume_node(scene, np.zeros((20, 24, 28), np.int16), affine(np.diag([2.0, 2.0, 4.0]),
                                                                               (-20.0, 15.0, 40.0)), name="coarse")
    segmentation = make_segmentation_node(scene)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(coarse)
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    chosen = segmentation.GetSegmentation().GetConversionParameter(name)
    _click(logic, ct, segmentation, CLICK_A)
    assert segmentation.GetSegmentation().GetConversionParameter(name) == chosen


def test_default_input_is_not_a_labelmap(scene, ct):
    from CTSAM3DLib.mrml.geometry import default_input_volume

    scene.RemoveNode(ct)
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    assert default_input_volume(scene) is None
    volume = make_volume_node(scene, np.zeros((4, 5, 6), np.int16), np.eye(4))
    assert default_input_volume(scene) is volume


def test_the_ct_is_copied_by_the_worker_not_the_gui_thread(scene, ct, logic, monkeypatch):
    import threading

    from CTSAM3DLib.mrml import session as session_module

    threads = []
    original = session_module.volume_from_image
    monkeypatch.setattr(session_module, "volume_from_image",
                        lambda *a: threads.append(threading.current_thread().name) or original(*a))
    segmentation = make_segmentation_node(scene)
    session = logic.session(ct, segmentation)
    assert threads == []  # starting a session copies nothing
    sid = session.add_segment()
    logic.worker.submit(session, session.prepare_click(world_of_voxel(ct, CLICK_A), True, sid))
    (result,) = logic.worker.wait()
    assert result.error is None and len(threads) == 1 and threads[0].startswith("CTSAM3D")


def test_showing_a_segment_reads_its_stored_clicks_without_running_the_model(scene, ct, logic, stub_predictor):
    segmentation = make_segmentation_node(scene)
    sid = _click(logic, ct, segmentation, CLICK_A)
    _click(logic, ct, segmentation, CLICK_B, sid, positive=False)
    logic.close_session()
    calls = stub_predictor.decode_calls
    points, labels = logic.session(ct, segmentation).clicks_world(sid)
    assert labels == (True, False) and stub_predictor.decode_calls == calls
    np.testing.assert_allclose(points[0], world_of_voxel(ct, CLICK_A), atol=1e-6)


def test_a_segment_edited_by_hand_keeps_its_earlier_clicks(scene, ct, logic):
    from CTSAM3DLib.mrml.segments import read_clicks

    segmentation = make_segmentation_node(scene)
    sid = _click(logic, ct, segmentation, CLICK_A)
    _hand_edit(segmentation, sid, ct, np.s_[30:31, 40:41, 40:41])  # one voxel
    logic.close_session()
    _click(logic, ct, segmentation, CLICK_FAR, sid)  # replays A, restarts from the content, adds the new click
    points, labels = read_clicks(segmentation.GetSegmentation().GetSegment(sid))
    assert labels == (True, True) and len(points) == 2
    assert segment_array(segmentation, sid, ct)[30, 40, 40]  # the hand-drawn voxel stays
