"""Writing results into segments: only the changed box, voxel-exact; undo / redo / reset; other segments
untouched unless overwriting is on (as in the Segment Editor); per-segment prompt memory; scripting API."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_test_support import (
    affine,
    make_segmentation_node,
    make_volume_node,
    segment_internal_array,
    synthetic_ct,
    vtk_matrix,
    world_of_voxel,
)

# 120 x 100 x 60 voxels (x, y, z) of 1 x 1 x 2 mm: wider than one 96 mm patch along x.
SHAPE_ZYX = (60, 100, 120)
IJK_TO_RAS = affine(np.diag([-1.0, -1.0, 2.0]), (60.0, 50.0, -60.0))
CLICK_A = (20, 50, 30)  # voxel (i, j, k) of the first click
CLICK_B = (24, 50, 30)  # 4 voxels away: inside A's ball
CLICK_FAR = (100, 50, 30)  # another patch


@pytest.fixture
def big_volume(scene):
    return make_volume_node(scene, synthetic_ct(SHAPE_ZYX), IJK_TO_RAS)


@pytest.fixture
def session(scene, big_volume, stub_predictor):
    from CTSAM3DLib.mrml.session import SegmentationSession

    return SegmentationSession(big_volume, make_segmentation_node(scene), stub_predictor)


def _world(volume, ijk):
    return world_of_voxel(volume, ijk)


def _array(session, segment_id):
    return segment_internal_array(session.segmentation_node, segment_id, session.volume_node)


def _import_labelmap(scene, session, labels_zyx):
    """Import a multi-label map: its segments share one layer (as Slicer's import makes them)."""
    import slicer

    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    slicer.util.updateVolumeFromArray(labelmap, labels_zyx.astype(np.uint8))
    labelmap.SetIJKToRASMatrix(vtk_matrix(IJK_TO_RAS))
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, session.segmentation_node)
    segmentation = session.segmentation_node.GetSegmentation()
    return list(segmentation.GetSegmentIDs())


def test_only_the_changed_box_is_written(session):
    """write_region keeps voxels outside its box; a click rewrites only the box it changed."""
    from CTSAM3DLib.mrml.geometry import box_view, labelmap_geometry
    from CTSAM3DLib.mrml.segments import write_region

    segment_id = session.add_segment()
    geometry = labelmap_geometry(session.volume_node, session.segmentation_node)
    write_region(session.segmentation_node, segment_id, geometry, ((110, 90, 50), (114, 94, 54)),
                 np.ones((4, 4, 4), dtype=np.uint8))
    write_region(session.segmentation_node, segment_id, geometry, ((10, 40, 20), (14, 44, 24)),
                 np.ones((4, 4, 4), dtype=np.uint8))
    expected = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    expected[50:54, 90:94, 110:114] = expected[20:24, 40:44, 10:14] = 1
    np.testing.assert_array_equal(_array(session, segment_id), expected)

    outcome = session.click(_world(session.volume_node, CLICK_A), True, segment_id)  # continues the blobs
    segment = session.segment(segment_id)
    layer = segment.GetRepresentation("Binary labelmap")
    probe = ((20, 50, 30), (21, 51, 31))  # inside CLICK_A's ball, outside the far click's box
    box_view(layer, probe)[...] = 0  # a change the bridge cannot see (no Modified): only a rewrite undoes it
    outcome = session.click(_world(session.volume_node, CLICK_FAR), True, segment_id)
    (i0, j0, k0), (i1, j1, k1) = outcome.box
    assert i0 > 21 and not outcome.seeded
    written = _array(session, segment_id)
    assert written[30, 50, 20] == 0  # not rewritten: outside the box
    expected = session.engine.mask(segment_id).copy()
    expected[30, 50, 20] = 0
    np.testing.assert_array_equal(written, expected)
    assert written[50:54, 90:94, 110:114].all() and written[20:24, 40:44, 10:14].all()


def test_undo_redo_restore_exact_masks(session):
    segment_id = session.add_segment()
    volume = session.volume_node
    states = [_array(session, segment_id)]
    for ijk, positive in ((CLICK_A, True), (CLICK_B, False), (CLICK_FAR, True)):
        session.click(_world(volume, ijk), positive, segment_id)
        states.append(_array(session, segment_id))
    assert states[1].any() and not np.array_equal(states[1], states[2]) and not np.array_equal(states[2], states[3])
    for expected in (states[2], states[1], states[0]):
        assert session.undo(segment_id)
        np.testing.assert_array_equal(_array(session, segment_id), expected)
    assert not session.undo(segment_id)
    for expected in (states[1], states[2], states[3]):
        assert session.redo(segment_id)
        np.testing.assert_array_equal(_array(session, segment_id), expected)
    assert not session.redo(segment_id)
    assert len(session.engine.clicks(segment_id)) == 3


def test_reset_clears_the_segment_and_is_undoable(session):
    segment_id = session.add_segment()
    session.click(_world(session.volume_node, CLICK_A), True, segment_id)
    before = _array(session, segment_id)
    session.reset(segment_id)
    assert not _array(session, segment_id).any() and session.engine.clicks(segment_id) == ()
    assert session.undo(segment_id)
    np.testing.assert_array_equal(_array(session, segment_id), before)


def test_first_click_must_be_positive(session):
    segment_id = session.add_segment()
    with pytest.raises(ValueError, match="positive"):
        session.click(_world(session.volume_node, CLICK_A), False, segment_id)
    assert not _array(session, segment_id).any()


def test_reselecting_a_segment_continues_its_prompts(session):
    volume = session.volume_node
    first, second = session.add_segment(), session.add_segment()
    session.click(_world(volume, CLICK_A), True, first)
    session.click(_world(volume, CLICK_FAR), True, second)
    second_before = _array(session, second)
    session.click(_world(volume, CLICK_B), False, first)
    assert [c.is_positive for c in session.engine.clicks(first)] == [True, False]
    assert len(session.engine.clicks(second)) == 1
    np.testing.assert_array_equal(_array(session, second), second_before)
    np.testing.assert_array_equal(_array(session, first), session.engine.mask(first))


def _overlapping_setup(scene, session):
    """Segments 'shared' (same layer as the target) and 'separate' (own layer), both covering CLICK_A."""
    labels = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    labels[25:35, 40:60, 5:20] = 1  # target: already has voxels (continued)
    labels[26:40, 45:58, 14:40] = 2  # overlaps the ball around CLICK_A
    target, shared = _import_labelmap(scene, session, labels)
    separate = session.add_segment("separate")
    from CTSAM3DLib.mrml.geometry import labelmap_geometry
    from CTSAM3DLib.mrml.segments import write_region

    geometry = labelmap_geometry(session.volume_node, session.segmentation_node)
    block = np.ones((12, 20, 30), dtype=np.uint8)
    write_region(session.segmentation_node, separate, geometry, ((5, 40, 24), (35, 60, 36)), block)
    segmentation = session.segmentation_node.GetSegmentation()
    assert segmentation.GetLayerIndex(target) == segmentation.GetLayerIndex(shared)
    assert segmentation.GetLayerIndex(separate) != segmentation.GetLayerIndex(target)
    return target, shared, separate


def test_other_segments_are_untouched(scene, session):
    target, shared, separate = _overlapping_setup(scene, session)
    before = {s: _array(session, s) for s in (shared, separate)}
    outcome = session.click(_world(session.volume_node, CLICK_A), True, target)
    (i0, j0, k0), (i1, j1, k1) = outcome.box
    new = session.engine.mask(target)
    assert (new & before[shared]).any() and (new & before[separate]).any()  # the new mask overlaps both
    for sid in (shared, separate):
        np.testing.assert_array_equal(_array(session, sid), before[sid])
    written = _array(session, target)
    np.testing.assert_array_equal(written[k0:k1, j0:j1, i0:i1], new[k0:k1, j0:j1, i0:i1])
    assert session.segmentation_node.GetSegmentation().GetNumberOfSegments() == 3


@pytest.mark.parametrize("mode", ["all", "visible"])
def test_overwrite_removes_the_overlap_from_other_segments(scene, session, mode):
    target, shared, separate = _overlapping_setup(scene, session)
    hidden = None
    if mode == "visible":  # a hidden segment is protected, as in the Segment Editor
        hidden = separate
        session.segmentation_node.GetDisplayNode().SetSegmentVisibility(hidden, False)
    before = {s: _array(session, s) for s in (shared, separate)}
    session.configure(overwrite=mode)
    session.click(_world(session.volume_node, CLICK_A), True, target)
    new = session.engine.mask(target).astype(bool)
    for sid in (shared, separate):
        expected = before[sid] if sid == hidden else (before[sid].astype(bool) & ~new).astype(np.uint8)
        np.testing.assert_array_equal(_array(session, sid), expected)
    np.testing.assert_array_equal(_array(session, target)[new], 1)


def test_logic_segment_scripting_api(scene, big_volume, stub_predictor):
    from CTSAM3DLib.mrml.logic import BridgeLogic

    logic = BridgeLogic()
    logic.set_predictor(stub_predictor)
    logic.configure(use_cpp=False)
    segmentation = make_segmentation_node(scene)
    points = [_world(big_volume, CLICK_A), _world(big_volume, CLICK_B)]
    segment_id = logic.segment(big_volume, segmentation, None, points, [1, 0])
    assert segmentation.GetSegmentation().GetSegment(segment_id) is not None
    session = logic.session(big_volume, segmentation)
    assert [c.is_positive for c in session.engine.clicks(segment_id)] == [True, False]
    assert logic.segment(big_volume, segmentation, segment_id, [_world(big_volume, CLICK_FAR)], [True]) == segment_id
    assert len(session.engine.clicks(segment_id)) == 3 and logic.session(big_volume, segmentation) is session
    with pytest.raises(ValueError, match="one label per point"):
        logic.segment(big_volume, segmentation, None, points, [1])
    logic.close()


def test_logic_configure_reaches_the_engine_and_the_stored_clicks(scene, big_volume, stub_predictor):
    import json
    import math

    import vtk

    from CTSAM3DLib.mrml.logic import BridgeLogic
    from CTSAM3DLib.mrml.segments import CLICKS_TAG

    def stored(segment_id: str) -> dict:
        text = vtk.reference("")
        assert segmentation.GetSegmentation().GetSegment(segment_id).GetTag(CLICKS_TAG, text)
        return json.loads(str(text))

    logic = BridgeLogic()
    logic.set_predictor(stub_predictor)
    logic.configure(use_cpp=False, cpp_reach_depth=10)
    segmentation = make_segmentation_node(scene)
    segment_id = logic.segment(big_volume, segmentation, None, [_world(big_volume, CLICK_A)], [1])
    assert logic.session(big_volume, segmentation).engine.config.cpp_reach_depth == 10.0
    assert stored(segment_id)["cpp_reach_depth"] == 10.0 and stored(segment_id)["use_cpp"] is False
    logic.configure(cpp_reach_depth=math.inf)  # off again; JSON stores no infinity
    logic.segment(big_volume, segmentation, segment_id, [_world(big_volume, CLICK_FAR)], [1])
    assert stored(segment_id)["cpp_reach_depth"] is None
    with pytest.raises(ValueError, match="cpp_reach_depth"):
        logic.configure(cpp_reach_depth=-1)
    logic.close()


def test_segment_on_another_grid_is_resampled_not_lost(scene, big_volume, stub_predictor, monkeypatch):
    """Continuing a segment stored on a coarser grid: Slicer resamples the write; voxels outside the box stay."""
    import slicer

    from CTSAM3DLib.mrml import segments
    from CTSAM3DLib.mrml.session import SegmentationSession

    calls = []
    original = segments._write_resampled
    monkeypatch.setattr(segments, "_write_resampled", lambda *a, **k: calls.append(1) or original(*a, **k))

    coarse = make_volume_node(scene, np.zeros((30, 50, 60), np.int16), affine(np.diag([-2.0, -2.0, 4.0]),
                                                                               (60.0, 50.0, -60.0)), name="coarse")
    segmentation = make_segmentation_node(scene)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(coarse)
    labels = np.zeros((30, 50, 60), np.uint8)
    labels[12:18, 20:30, 50:58] = 1  # far from the click: outside the changed box
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    slicer.util.updateVolumeFromArray(labelmap, labels)
    labelmap.SetIJKToRASMatrix(vtk_matrix(affine(np.diag([-2.0, -2.0, 4.0]), (60.0, 50.0, -60.0))))
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    (segment_id,) = segmentation.GetSegmentation().GetSegmentIDs()
    session = SegmentationSession(big_volume, segmentation, stub_predictor)
    outcome = session.click(_world(big_volume, CLICK_A), True, segment_id)
    written = np.asarray(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, big_volume)) > 0
    (i0, j0, k0), (i1, j1, k1) = outcome.box
    new = session.engine.mask(segment_id)[k0:k1, j0:j1, i0:i1] > 0
    inside = written[k0:k1, j0:j1, i0:i1]
    assert 2.0 * (inside & new).sum() / (inside.sum() + new.sum()) > 0.8  # resampled to 2 x 2 x 4 mm
    assert written[24:36, 40:60, 100:116].mean() > 0.9  # the far part of the old segment is kept
    assert calls  # this went through Slicer's resampling write, not the in-place one

