"""The worker's click progress: the running click's patch i of n for a status line, None between clicks;
the engine's `Session.cancel` and the worker's cancel raise one `ClickCancelled`."""

from __future__ import annotations

import time

from mrml_test_support import StubPredictor, world_of_voxel


def test_worker_reports_the_running_clicks_progress(scene, volume_node, segmentation_node):
    from CTSAM3DLib.engine.progress import ClickProgress
    from CTSAM3DLib.mrml.session import SegmentationSession
    from CTSAM3DLib.mrml.worker import ClickWorker

    session = SegmentationSession(volume_node, segmentation_node, StubPredictor(delay_s=0.2))
    segment_id = session.add_segment()
    worker = ClickWorker()
    assert worker.progress is None
    worker.submit(session, session.prepare_click(world_of_voxel(volume_node, (20, 24, 20)), True, segment_id))
    seen: list[ClickProgress] = []
    deadline = time.monotonic() + 30
    while worker.busy and time.monotonic() < deadline:
        if worker.progress is not None:
            seen.append(worker.progress)
        worker.poll(wait_s=0.02)  # as the GUI's timer does
    worker.shutdown()
    assert seen and seen[0].stage == "click" and seen[0].total >= 1
    assert all(0 <= p.done <= p.total for p in seen)
    assert worker.progress is None  # the click is over


def test_engine_and_worker_cancel_raise_one_type():
    from CTSAM3DLib.engine.progress import ClickCancelled as EngineCancelled
    from CTSAM3DLib.mrml.jobs import ClickCancelled

    assert ClickCancelled is EngineCancelled



def test_progress_and_outcome_status_lines() -> None:
    """The lines the Slicer module and the web page show while a click runs and after it."""
    import numpy as np

    from CTSAM3DLib.engine.progress import ClickProgress
    from CTSAM3DLib.mrml.jobs import Outcome

    assert ClickProgress("cpp", 1, 4, 25).describe() == "patch 5 of 25 (CPP ring 1)"
    assert ClickProgress("click", 0, 1, 1).describe() == "patch 1 of 1 (clicked patch)"  # never past the total
    assert ClickProgress("spread", 2, 0, 3).describe() == "patch 1 of 3 (correction ring 2)"
    outcome = Outcome(None, True, None, None, np.zeros((2, 3)), (True, False), 0.25, 3, 2)  # type: ignore[arg-type]
    assert outcome.describe("cpu") == "cpu | 250 ms | 3 patches (2 by CPP) | 2 clicks"
