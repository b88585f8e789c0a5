"""Markups events drive the logic: a point whose position becomes defined on the green (positive) or red
(negative) fiducial node is one click; redrawing the points after undo does not click."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_test_support import segment_internal_array, world_of_voxel


@pytest.fixture
def wired(scene, volume_node, segmentation_node, stub_predictor):
    """A session, a segment, and prompt markups whose points click into that segment (synchronously)."""
    from CTSAM3DLib.mrml.markups import PromptMarkups
    from CTSAM3DLib.mrml.session import SegmentationSession

    session = SegmentationSession(volume_node, segmentation_node, stub_predictor)
    segment_id = session.add_segment()
    prompts = PromptMarkups(scene, lambda point, is_positive: session.click(point, is_positive, segment_id))
    yield session, segment_id, prompts
    prompts.remove()


def test_nodes_are_green_and_red(wired):
    from CTSAM3DLib.mrml.markups import NEGATIVE_COLOR, POSITIVE_COLOR

    _, _, prompts = wired
    np.testing.assert_allclose(prompts.positive_node.GetDisplayNode().GetSelectedColor(), POSITIVE_COLOR)
    np.testing.assert_allclose(prompts.negative_node.GetDisplayNode().GetSelectedColor(), NEGATIVE_COLOR)
    assert not prompts.positive_node.GetSaveWithScene()


def test_point_position_defined_event_runs_a_click(wired, volume_node):
    session, segment_id, prompts = wired
    events = []
    prompts.positive_node.AddObserver(prompts.positive_node.PointPositionDefinedEvent, lambda *a: events.append(1))
    prompts.positive_node.AddControlPointWorld(world_of_voxel(volume_node, (20, 24, 20)).tolist())
    assert events and [c.is_positive for c in session.engine.clicks(segment_id)] == [True]
    np.testing.assert_allclose(session.engine.clicks(segment_id)[0].point_xyz, (20, 24, 20), atol=1e-6)
    np.testing.assert_array_equal(segment_internal_array(session.segmentation_node, segment_id, volume_node),
                                  session.engine.mask(segment_id))


def test_placing_in_a_view_defines_the_position_later(wired, volume_node):
    """A point may exist before its position is defined (place mode): the click happens on definition."""
    session, segment_id, prompts = wired
    node = prompts.positive_node
    was_modifying = node.StartModify()
    index = node.AddControlPoint([0.0, 0.0, 0.0])
    node.UnsetNthControlPointPosition(index)
    node.EndModify(was_modifying)
    assert len(session.engine.clicks(segment_id)) == 0
    node.SetNthControlPointPositionWorld(index, *world_of_voxel(volume_node, (30, 20, 15)))
    assert len(session.engine.clicks(segment_id)) == 1
    np.testing.assert_allclose(session.engine.clicks(segment_id)[0].point_xyz, (30, 20, 15), atol=1e-6)
    node.SetNthControlPointPositionWorld(index, *world_of_voxel(volume_node, (31, 20, 15)))  # a move is no click
    assert len(session.engine.clicks(segment_id)) == 1 and node.GetNthControlPointLocked(index)


def test_negative_node_gives_negative_clicks(wired, volume_node):
    session, segment_id, prompts = wired
    prompts.positive_node.AddControlPointWorld(world_of_voxel(volume_node, (20, 24, 20)).tolist())
    prompts.negative_node.AddControlPointWorld(world_of_voxel(volume_node, (22, 24, 20)).tolist())
    prompts.negative_node.AddControlPointWorld(world_of_voxel(volume_node, (18, 24, 20)).tolist())
    assert [c.is_positive for c in session.engine.clicks(segment_id)] == [True, False, False]


def test_show_redraws_without_clicking(wired, volume_node):
    session, segment_id, prompts = wired
    for ijk in ((20, 24, 20), (24, 24, 20)):
        prompts.positive_node.AddControlPointWorld(world_of_voxel(volume_node, ijk).tolist())
    assert session.undo(segment_id)
    points, labels = session.clicks_world(segment_id)
    prompts.show(points, labels)
    assert prompts.positive_node.GetNumberOfControlPoints() == 1
    assert len(session.engine.clicks(segment_id)) == 1
    shown = np.zeros(3)
    prompts.positive_node.GetNthControlPointPositionWorld(0, shown)
    np.testing.assert_allclose(shown, world_of_voxel(volume_node, (20, 24, 20)), atol=1e-6)
    prompts.positive_node.AddControlPointWorld(world_of_voxel(volume_node, (26, 24, 20)).tolist())
    assert len(session.engine.clicks(segment_id)) == 2  # a new point after a redraw still clicks


def test_markups_through_the_worker(scene, volume_node, segmentation_node, stub_predictor):
    """The widget's path: event -> prepare on the main thread -> engine on the worker -> commit in poll."""
    from CTSAM3DLib.mrml.markups import PromptMarkups
    from CTSAM3DLib.mrml.session import SegmentationSession
    from CTSAM3DLib.mrml.worker import ClickWorker

    session = SegmentationSession(volume_node, segmentation_node, stub_predictor)
    segment_id = session.add_segment()
    worker = ClickWorker()
    prompts = PromptMarkups(scene, lambda p, pos: worker.submit(session, session.prepare_click(p, pos, segment_id)))
    prompts.positive_node.AddControlPointWorld(world_of_voxel(volume_node, (20, 24, 20)).tolist())
    prompts.negative_node.AddControlPointWorld(world_of_voxel(volume_node, (23, 24, 20)).tolist())
    results = worker.wait()
    worker.shutdown()
    assert [r.error for r in results] == [None, None]
    assert [r.outcome.labels for r in results] == [(True,), (True, False)]
    np.testing.assert_array_equal(segment_internal_array(segmentation_node, segment_id, volume_node),
                                  session.engine.mask(segment_id))
