"""The worker thread: jobs run in order and are committed by ``poll``; errors are reported per job; a
long job can be cancelled and leaves the segment and the engine as they were."""

from __future__ import annotations

import time

import numpy as np
from mrml_test_support import StubPredictor, segment_internal_array, world_of_voxel


def _session(volume_node, segmentation_node, predictor):
    from CTSAM3DLib.mrml_bridge import SegmentationSession

    return SegmentationSession(volume_node, segmentation_node, predictor)


def test_jobs_run_in_order_and_errors_are_reported(scene, volume_node, segmentation_node, stub_predictor):
    from CTSAM3DLib.mrml_bridge import ClickWorker

    session = _session(volume_node, segmentation_node, stub_predictor)
    segment_id = session.add_segment()
    worker = ClickWorker()
    points = [((20, 24, 20), False), ((20, 24, 20), True), ((24, 24, 20), False)]  # the first is refused
    for ijk, positive in points:
        worker.submit(session, session.prepare_click(world_of_voxel(volume_node, ijk), positive, segment_id))
    worker.submit(session, session.prepare("undo", segment_id))
    results = worker.wait()
    worker.shutdown()
    assert isinstance(results[0].error, ValueError) and "positive" in str(results[0].error)
    assert [r.outcome.labels for r in results[1:]] == [(True,), (True, False), (True,)]
    assert not worker.busy
    np.testing.assert_array_equal(segment_internal_array(segmentation_node, segment_id, volume_node),
                                  session.engine.mask(segment_id))


def test_cancel_a_long_job(scene, volume_node, segmentation_node):
    from CTSAM3DLib.mrml_bridge import ClickCancelled, ClickWorker

    slow = StubPredictor(delay_s=0.3)
    session = _session(volume_node, segmentation_node, slow)
    segment_id = session.add_segment()
    worker = ClickWorker()
    for ijk in ((20, 24, 20), (30, 24, 20)):
        worker.submit(session, session.prepare_click(world_of_voxel(volume_node, ijk), True, segment_id))
    time.sleep(0.1)  # the first job is inside its (slow) encode
    worker.cancel()
    results = worker.wait()
    assert all(isinstance(r.error, ClickCancelled) for r in results) and len(results) == 2
    assert session.engine.clicks(segment_id) == ()
    assert not segment_internal_array(segmentation_node, segment_id, volume_node).any()
    slow.delay_s = 0.0  # jobs submitted after the cancel run normally
    worker.submit(session, session.prepare_click(world_of_voxel(volume_node, (20, 24, 20)), True, segment_id))
    (result,) = worker.wait()
    worker.shutdown()
    assert result.error is None and result.outcome.labels == (True,)
