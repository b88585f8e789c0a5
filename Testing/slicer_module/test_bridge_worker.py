"""The worker thread: jobs run in order and are committed by ``poll``; errors are reported per job; a
long job can be cancelled and leaves the segment and the engine as they were."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from mrml_test_support import StubPredictor, segment_internal_array, world_of_voxel


def _session(volume_node, segmentation_node, predictor):
    from CTSAM3DLib.mrml.session import SegmentationSession

    return SegmentationSession(volume_node, segmentation_node, predictor)


def test_jobs_run_in_order_and_errors_are_reported(scene, volume_node, segmentation_node, stub_predictor):
    from CTSAM3DLib.mrml.worker import ClickWorker

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
    from CTSAM3DLib.mrml.jobs import ClickCancelled
    from CTSAM3DLib.mrml.worker import ClickWorker

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


def test_cancelled_restore_keeps_the_stored_clicks(scene, volume_node, segmentation_node):
    from CTSAM3DLib.mrml.jobs import ClickCancelled
    from CTSAM3DLib.mrml.segments import read_clicks
    from CTSAM3DLib.mrml.worker import ClickWorker

    first = _session(volume_node, segmentation_node, StubPredictor())
    segment_id = first.add_segment()
    for ijk, positive in (((20, 24, 20), True), ((24, 24, 20), False)):
        first.click(world_of_voxel(volume_node, ijk), positive, segment_id)
    first.close()
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    slow = StubPredictor(delay_s=0.3)
    session = _session(volume_node, segmentation_node, slow)  # a new session, as after reloading the scene
    worker = ClickWorker()
    worker.submit(session, session.prepare("restore", segment_id))
    time.sleep(0.1)  # the restore is inside its (slow) replay
    worker.cancel()
    (result,) = worker.wait()
    assert isinstance(result.error, ClickCancelled) and session.engine.clicks(segment_id) == ()
    assert read_clicks(segment)[1] == (True, False)
    slow.delay_s = 0.0
    worker.submit(session, session.prepare_click(world_of_voxel(volume_node, (30, 24, 20)), True, segment_id))
    (result,) = worker.wait()
    worker.shutdown()
    assert result.error is None and result.outcome.labels == (True, False, True)  # replayed, then clicked
    assert read_clicks(segment)[1] == (True, False, True)


def test_nodes_and_model_cannot_change_under_a_running_job(scene, volume_node, segmentation_node):
    from CTSAM3DLib.mrml.logic import BridgeLogic
    from mrml_test_support import make_segmentation_node

    logic = BridgeLogic()
    logic.set_predictor(StubPredictor(delay_s=0.3))
    logic.configure(use_cpp=False)
    session = logic.session(volume_node, segmentation_node)
    segment_id = session.add_segment()
    logic.worker.submit(session, session.prepare_click(world_of_voxel(volume_node, (20, 24, 20)), True, segment_id))
    other = make_segmentation_node(scene)
    for change in (lambda: logic.set_predictor(StubPredictor()), lambda: logic.session(volume_node, other),
                   logic.close_session):
        with pytest.raises(RuntimeError, match="still computing"):
            change()
    (result,) = logic.worker.wait()
    assert result.error is None and result.outcome.labels == (True,)
    assert logic.session(volume_node, other) is not session  # once idle, changes apply
    logic.close()


def test_out_of_memory_is_reported_and_the_session_goes_on(scene, volume_node, segmentation_node, monkeypatch):
    import torch

    from CTSAM3DLib.mrml.jobs import DeviceOutOfMemory

    predictor = StubPredictor()
    session = _session(volume_node, segmentation_node, predictor)
    segment_id = session.add_segment()
    session.click(world_of_voxel(volume_node, (20, 24, 20)), True, segment_id)
    before = segment_internal_array(segmentation_node, segment_id, volume_node)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(predictor, "decode", out_of_memory)
    with pytest.raises(DeviceOutOfMemory, match="ran out of memory.*unchanged"):
        session.click(world_of_voxel(volume_node, (40, 24, 20)), True, segment_id)
    np.testing.assert_array_equal(segment_internal_array(segmentation_node, segment_id, volume_node), before)
    monkeypatch.undo()
    assert session.click(world_of_voxel(volume_node, (40, 24, 20)), True, segment_id).labels == (True, True)


def _poll_like_slicer(worker, wait_s: float, limit_s: float) -> tuple[float, list]:
    """Emulate Slicer's main thread: it holds the GIL in its event loop (a Python busy loop with a long
    switch interval) and runs the poll timer between events. Returns (seconds, results)."""
    start, results = time.perf_counter(), []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        while not results and time.perf_counter() - start < limit_s:
            busy_until = time.perf_counter() + 0.01
            while time.perf_counter() < busy_until:  # Qt's event loop: the GIL stays held
                pass
            results = worker.poll(wait_s=wait_s)
    finally:
        sys.setswitchinterval(interval)
    return time.perf_counter() - start, results


def test_clicks_finish_under_a_gil_holding_main_loop(scene, volume_node):
    from CTSAM3DLib.engine.session import SessionConfig
    from CTSAM3DLib.mrml.session import SegmentationSession
    from CTSAM3DLib.mrml.worker import ClickWorker
    from mrml_test_support import make_segmentation_node

    def fresh_click():  # the same first click on a fresh session: the same work every time
        session = SegmentationSession(volume_node, make_segmentation_node(scene), StubPredictor(),
                                      SessionConfig(use_cpp=False))
        segment_id = session.add_segment()
        return session, session.prepare_click(world_of_voxel(volume_node, (20, 24, 20)), True, segment_id)

    worker = ClickWorker()
    bare = []
    for _ in range(2):
        start = time.perf_counter()
        worker.submit(*fresh_click())
        assert worker.wait()[0].error is None
        bare.append(time.perf_counter() - start)
    bare_s = min(bare)
    limit_s = 4 * bare_s + 0.3
    worker.submit(*fresh_click())
    starved_s, results = _poll_like_slicer(worker, 0.0, limit_s)  # a poll that does not wait
    assert not results, f"the emulation does not starve the worker ({starved_s:.2f} s, bare {bare_s:.2f} s)"
    worker.wait()
    worker.submit(*fresh_click())
    seconds, results = _poll_like_slicer(worker, 0.04, 30.0)  # the module's poll
    worker.shutdown()
    assert results and results[0].error is None
    assert seconds < limit_s, f"{seconds:.2f} s under a GIL-holding main loop; bare engine time {bare_s:.2f} s"
