"""``ClickWorker``: one persistent worker thread running engine jobs in order, committed on the main thread.

``ClickWorker`` runs jobs in order and commits them from ``poll(wait_s)``, whose GIL-releasing wait is
what lets the worker run under Slicer's GIL-holding event loop.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from CTSAM3DLib.engine.progress import ClickProgress
from CTSAM3DLib.mrml.jobs import ClickCancelled, Job, Outcome
from CTSAM3DLib.mrml.session import SegmentationSession


@dataclass
class JobResult:
    """A finished worker job: its outcome (committed) or the error it raised."""

    session: SegmentationSession
    job: Job
    outcome: Outcome | None = None
    error: BaseException | None = None

    def clicks_world(self) -> tuple[np.ndarray, tuple[bool, ...]]:
        """The job's segment clicks in world RAS (as committed; the engine's current ones after an error)."""
        out = self.outcome
        return self.session.clicks_world(self.job.segment_id) if out is None else (
            self.session.to_world(out.clicks_ras), out.labels)


class ClickWorker:
    """One persistent worker thread running engine jobs in order; ``poll`` commits them on the caller's thread.

    Slicer's main thread holds the Python GIL while idle in the Qt event loop, so the worker runs Python only
    while the main thread waits: call ``poll(wait_s=...)`` from a short timer; its wait releases the GIL.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="CTSAM3D")
        self._event = threading.Event()
        self._pending: deque[tuple[Future, SegmentationSession, Job]] = deque()
        self._progress: ClickProgress | None = None

    @property
    def progress(self) -> ClickProgress | None:
        """The running click's progress (patch i of n, stage, CPP ring) for a status line; None between clicks."""
        return self._progress

    @property
    def busy(self) -> bool:  # jobs queued, running or not yet polled
        return bool(self._pending)

    def submit(self, session: SegmentationSession, job: Job) -> Future:
        """Queue ``session.run(job)`` (``job`` from ``session.prepare*``; ``poll`` commits or discards it)."""
        future = self._executor.submit(self._call, self._event, session, job)
        self._pending.append((future, session, job))
        return future

    def _call(self, event: threading.Event, session: SegmentationSession, job: Job) -> Outcome:
        def report(progress: ClickProgress) -> None:  # on the worker thread; read by the GUI's poll timer
            self._progress = progress
            if event.is_set():  # the engine's own way to stop a click: raise from its progress callback
                raise ClickCancelled(f"Click cancelled after {progress.done} of {progress.total} patches; "
                                     "nothing was changed.")

        if event.is_set():
            raise ClickCancelled("Cancelled before it started.")
        try:
            return session.run(job, progress=report)
        finally:
            self._progress = None

    def cancel(self) -> None:
        """Cancel the running job (before its next ring or after its current network batch) and every queued one."""
        self._event.set()
        self._event = threading.Event()

    def poll(self, wait_s: float = 0.0) -> list[JobResult]:
        """Commit finished jobs in submission order (call on the main thread); returns them.

        ``wait_s``: first wait up to this long for the oldest job, releasing the GIL meanwhile.
        """
        if wait_s > 0 and self._pending:
            wait([self._pending[0][0]], timeout=wait_s)
        results = []
        while self._pending and self._pending[0][0].done():
            future, session, job = self._pending.popleft()
            result = JobResult(session, job)
            try:
                outcome = future.result()
            except Exception as exc:  # reported to the caller, who shows it
                session.discard(job)
                result.error = exc
            else:
                try:
                    result.outcome = session.commit(outcome)
                except Exception as exc:
                    result.error = exc
            results.append(result)
        return results

    def wait(self, timeout_s: float = 60.0) -> list[JobResult]:
        """Block until all jobs finished, then ``poll`` (scripting and tests)."""
        wait([future for future, _, _ in self._pending], timeout=timeout_s)
        return self.poll()

    def shutdown(self) -> None:
        """Cancel everything and stop the thread."""
        self.cancel()
        self._executor.shutdown(wait=True)
        for _, session, job in self._pending:
            session.discard(job)
        self._pending.clear()
