"""Refining segments that hold voxels CTSAM3D did not write (drawn, imported, Segment Editor edits):
the engine starts from them, no click removes what it did not ask to remove, outside edits are
detected, undo restores the segment exactly, and the result is visible."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_test_support import affine, make_volume_node, segment_internal_array, synthetic_ct, world_of_voxel

# 80 x 64 x 40 voxels (x, y, z) of 1 x 1 x 2 mm.
SHAPE_ZYX = (40, 64, 80)
IJK_TO_RAS = affine(np.diag([-1.0, -1.0, 2.0]), (40.0, 30.0, -40.0))
BLOCK = (slice(15, 25), slice(20, 40), slice(10, 30))  # z, y, x: a 4,000-voxel block
INSIDE, EDGE = (20, 30, 20), (28, 30, 20)  # voxels (i, j, k): the block's middle, near its +x end


@pytest.fixture
def session(scene, stub_predictor):
    from CTSAM3DLib.mrml.session import SegmentationSession

    volume = make_volume_node(scene, synthetic_ct(SHAPE_ZYX), IJK_TO_RAS)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")  # as a node selector makes it: no display
    return SegmentationSession(volume, segmentation, stub_predictor)


def _array(session, segment_id):
    return segment_internal_array(session.segmentation_node, segment_id, session.volume_node)


def _paint(session, segment_id, array_zyx):
    """Replace the segment's voxels as a Segment Editor effect or an import would (Slicer's own call)."""
    import slicer

    slicer.util.updateSegmentBinaryLabelmapFromArray(array_zyx.astype(np.uint8), session.segmentation_node,
                                                    segment_id, session.volume_node)


def _block():
    block = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    block[BLOCK] = 1
    return block


def _click(session, segment_id, ijk, positive=True):
    return session.click(world_of_voxel(session.volume_node, ijk), positive, segment_id)


def test_a_click_on_a_drawn_segment_keeps_every_voxel(session, stub_predictor):
    segment_id = session.add_segment()
    _paint(session, segment_id, _block())
    outcome = _click(session, segment_id, INSIDE)
    assert outcome.seeded
    written = _array(session, segment_id)
    assert written[BLOCK].all() and written.sum() == 4000  # the stub's ball lies inside the block
    (prev,) = stub_predictor.prev_masks  # the engine got the drawn block as its previous mask
    assert prev is not None and prev.max() == 1.0 and 0.5 * 4000 * 2 / 1.5**3 < (prev >= 0.5).sum()

    outcome = _click(session, segment_id, (45, 30, 20))  # a click beyond the block adds, removes nothing
    written = _array(session, segment_id)
    assert not outcome.seeded and written[BLOCK].all() and written[20, 30, 45] == 1
    np.testing.assert_array_equal(written, session.engine.mask(segment_id))


def test_a_negative_click_removes_only_its_side(session):
    segment_id = session.add_segment()
    _paint(session, segment_id, _block())
    _click(session, segment_id, INSIDE)
    _click(session, segment_id, EDGE, positive=False)
    written = _array(session, segment_id)
    removed = _block().astype(bool) & ~written.astype(bool)
    assert written[20, 30, EDGE[0]] == 0 and removed.any()
    assert np.nonzero(removed)[2].min() > INSIDE[0]  # nothing on the positive click's side is removed
    assert written[20, 30, 10:24].all()


def test_a_negative_first_click_refines_drawn_content(session):
    segment_id = session.add_segment()
    _paint(session, segment_id, _block())
    _click(session, segment_id, EDGE, positive=False)  # allowed: the segment already has content
    written = _array(session, segment_id)
    assert written[20, 30, EDGE[0]] == 0 and written.sum() < 4000


def test_outside_edits_are_detected_and_kept(session):
    segment_id = session.add_segment()
    assert not _click(session, segment_id, INSIDE).seeded
    assert not _click(session, segment_id, (23, 30, 20)).seeded  # our own writes are not outside edits
    clicked = _array(session, segment_id)
    painted = clicked.copy()
    painted[30:34, 50:54, 60:64] = 1  # a Paint stroke far away
    painted[20, 30, 20] = 0  # an Erase inside the clicked ball
    _paint(session, segment_id, painted)
    outcome = _click(session, segment_id, (45, 30, 20))
    assert outcome.seeded
    written = _array(session, segment_id)
    assert written[30:34, 50:54, 60:64].all()
    assert written[20, 30, 20] == 0 and written[20, 30, 45] == 1  # the erased voxel stays erased
    np.testing.assert_array_equal(written, session.engine.mask(segment_id))


def test_undo_after_outside_edits_restores_the_segment_exactly(session):
    segment_id = session.add_segment()
    _click(session, segment_id, INSIDE)
    painted = _array(session, segment_id)
    painted[BLOCK] = 1
    _paint(session, segment_id, painted)
    _click(session, segment_id, (45, 30, 20))
    assert session.undo(segment_id)
    np.testing.assert_array_equal(_array(session, segment_id), painted)  # before the click, edits included
    assert not session.undo(segment_id)  # CTSAM3D's undo never reverts the hand edit
    np.testing.assert_array_equal(_array(session, segment_id), painted)


def test_undo_keeps_edits_made_after_the_click(session):
    segment_id = session.add_segment()
    _click(session, segment_id, INSIDE)
    first = _array(session, segment_id)
    _click(session, segment_id, (45, 30, 20))
    painted = _array(session, segment_id)
    painted[30:34, 50:54, 60:64] = 1  # painted after the second click, away from it
    _paint(session, segment_id, painted)
    assert session.undo(segment_id)
    expected = first.copy()
    expected[30:34, 50:54, 60:64] = 1
    np.testing.assert_array_equal(_array(session, segment_id), expected)


def test_the_result_is_visible(session):
    segment_id = session.add_segment()
    display = session.segmentation_node.GetDisplayNode()
    assert display is not None  # created by the session
    display.SetSegmentVisibility(segment_id, False)
    _click(session, segment_id, INSIDE)
    assert display.GetVisibility() and display.GetSegmentVisibility(segment_id)


def test_show_3d(session):
    from CTSAM3DLib.mrml.segments import show_3d

    segment_id = session.add_segment()
    _click(session, segment_id, INSIDE)
    show_3d(session.segmentation_node, True)
    segment = session.segmentation_node.GetSegmentation().GetSegment(segment_id)
    surface = segment.GetRepresentation("Closed surface")
    assert surface is not None and surface.GetNumberOfPoints() > 0
    show_3d(session.segmentation_node, False)
    assert segment.GetRepresentation("Closed surface") is None


def test_a_restore_with_nothing_to_replay_leaves_no_job_pending(session):
    """Regression: a restore prepared for a segment without stored clicks used to stay pending, which
    hid later outside edits from the next click (it then erased them)."""
    segment_id = session.add_segment()
    assert session.prepare_restore(segment_id) is None
    assert session.restore(segment_id) == 0
    _paint(session, segment_id, _block())  # drawn by hand after the (empty) restore
    _click(session, segment_id, INSIDE)
    assert np.all(_array(session, segment_id)[BLOCK] == 1)
