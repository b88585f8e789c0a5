"""Prompts survive a scene save and reload (.mrml + storage nodes, and .mrb), and replaying them
restores the session: same clicks, same mask, and undo / further clicks continue from there."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_test_support import StubPredictor, make_segmentation_node, segment_internal_array, world_of_voxel

CLICKS = (((20, 24, 20), True), ((24, 24, 20), False), ((34, 30, 22), True))


def _segment_with_clicks(volume_node, segmentation_node, predictor):
    from CTSAM3DLib.mrml.session import SegmentationSession

    session = SegmentationSession(volume_node, segmentation_node, predictor)
    segment_id = session.add_segment("liver")
    states = []
    for ijk, positive in CLICKS:
        session.click(world_of_voxel(volume_node, ijk), positive, segment_id)
        states.append(session.engine.mask(segment_id).copy())
    other = session.add_segment("untouched")  # a segment without CTSAM3D clicks
    return session, segment_id, other, states


def _save_mrml(scene, folder, nodes):
    from mrml_test_support import write_node

    for node, suffix in nodes:
        write_node(node, folder / f"{node.GetName()}{suffix}")
    scene.SetRootDirectory(str(folder))
    scene.SetURL(str(folder / "scene.mrml"))
    assert scene.Commit()


def _reload(url=None, mrb=None):
    from mrml_test_support import headless_scene

    scene = headless_scene()
    if mrb is not None:
        assert scene.ReadFromMRB(str(mrb))
    else:
        scene.SetURL(str(url))
        assert scene.Connect()
    return scene, scene.GetFirstNodeByName("CT"), scene.GetFirstNodeByName("Segmentation")


def _check_restored(volume, segmentation, segment_id, other, states, original_clicks):
    from CTSAM3DLib.mrml.segments import read_clicks
    from CTSAM3DLib.mrml.session import SegmentationSession

    stored, labels = read_clicks(segmentation.GetSegmentation().GetSegment(segment_id))
    assert labels == (True, False, True) and len(stored) == 3
    assert read_clicks(segmentation.GetSegmentation().GetSegment(other)) == (pytest.approx(np.zeros((0, 3))), ())
    saved_mask = segment_internal_array(segmentation, segment_id, volume)
    np.testing.assert_array_equal(saved_mask, states[-1])
    session = SegmentationSession(volume, segmentation, StubPredictor())
    assert session.restore(segment_id) == 3
    assert session.restore(segment_id) == 0  # once per session
    restored = [c.point_xyz for c in session.engine.clicks(segment_id)]
    np.testing.assert_allclose(restored, original_clicks, atol=1e-6)
    np.testing.assert_array_equal(session.engine.mask(segment_id), states[-1])
    np.testing.assert_array_equal(segment_internal_array(segmentation, segment_id, volume), states[-1])
    assert session.undo(segment_id)  # history is back too
    np.testing.assert_array_equal(segment_internal_array(segmentation, segment_id, volume), states[-2])
    return session


def test_prompts_survive_mrml_save_and_reload(scene, volume_node, tmp_path):
    segmentation = make_segmentation_node(scene)
    _, segment_id, other, states = _segment_with_clicks(volume_node, segmentation, StubPredictor())
    _save_mrml(scene, tmp_path, [(volume_node, ".nrrd"), (segmentation, ".seg.nrrd")])
    _, volume, segmentation = _reload(url=tmp_path / "scene.mrml")
    _check_restored(volume, segmentation, segment_id, other, states, [ijk for ijk, _ in CLICKS])


def test_prompts_survive_mrb_and_the_next_click_replays_them(scene, volume_node, tmp_path):
    from CTSAM3DLib.mrml.session import SegmentationSession

    segmentation = make_segmentation_node(scene)
    _, segment_id, _, states = _segment_with_clicks(volume_node, segmentation, StubPredictor())
    assert scene.WriteToMRB(str(tmp_path / "case.mrb"))
    _, volume, segmentation = _reload(mrb=tmp_path / "case.mrb")
    session = SegmentationSession(volume, segmentation, StubPredictor())
    session.click(world_of_voxel(volume, (12, 20, 18)), True, segment_id)  # replays the 3 stored clicks first
    assert [c.is_positive for c in session.engine.clicks(segment_id)] == [True, False, True, True]
    assert session.undo(segment_id)
    np.testing.assert_array_equal(segment_internal_array(segmentation, segment_id, volume), states[-1])


def test_tag_follows_undo_and_reset(scene, volume_node):
    from CTSAM3DLib.mrml.segments import read_clicks

    segmentation = make_segmentation_node(scene)
    session, segment_id, _, _ = _segment_with_clicks(volume_node, segmentation, StubPredictor())
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    session.undo(segment_id)
    assert read_clicks(segment)[1] == (True, False)
    session.reset(segment_id)
    assert read_clicks(segment)[1] == ()


def test_unreadable_tag_is_reported(scene, volume_node):
    from CTSAM3DLib.mrml.segments import CLICKS_TAG
    from CTSAM3DLib.mrml.session import SegmentationSession

    segmentation = make_segmentation_node(scene)
    session = SegmentationSession(volume_node, segmentation, StubPredictor())
    segment_id = session.add_segment()
    segmentation.GetSegmentation().GetSegment(segment_id).SetTag(CLICKS_TAG, "{not json")
    with pytest.raises(ValueError, match="unreadable"):
        session.restore(segment_id)
