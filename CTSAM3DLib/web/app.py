"""One browser tab of ``ctsam3d serve``: a trame-slicer server process with its own scene, model and engine session.

Started by ``gateway`` (``python -m CTSAM3DLib.web.app --port N ...``), never directly by users. Clicks come
from Slicer's markups placement in the views (``PromptMarkups``), run on the bridge's worker thread and are
committed to the scene by a 50 ms poll on the server's event loop; errors go to the page's banner and leave
the segments as they were. Every request must carry the secret the gateway gave this worker (``SECRET_ENV``), so
nobody else on the machine can attach to the session through its port; the tab reads server paths only as its
``inputs.DataAccess`` allows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from trame.app import TrameApp

from CTSAM3DLib.engine.planning import reach_depth_for
from CTSAM3DLib.web import inputs
from CTSAM3DLib.web.gateway import SECRET_ENV, SECRET_HEADER, UPLOADS
from CTSAM3DLib.web.workspace import DOWNLOAD_TYPES, Workspace

logger = logging.getLogger(__name__)

# How often (s) finished engine jobs are committed and the page updated.
POLL_INTERVAL_S = 0.05
# Page state and its initial values (see ``ui``).
DEFAULT_STATE: dict[str, Any] = {
    "ct_path": "", "ct_name": "", "has_ct": False, "window_preset": "Abdomen", "tool": "include", "segments": [],
    "segment_id": "", "busy": False, "status": "Starting...", "error": "", "probe": "", "use_cpp": True,
    "max_patches": 27, "large_organs": False, "device": "cpu", "devices": ["cpu"], "show_3d": True,
    "max_upload_bytes": 0,
}
# The page's script (uploads over HTTP, streamed to disk by the gateway), served at ``ctsam3d/``.
SCRIPTS_DIR = Path(__file__).with_name("static")
# An upload batch's name (made by the gateway).
_BATCH = re.compile(r"^[0-9a-f]{16}$")


class CTSAM3DWebApp(TrameApp):
    """The tab's server: trame-slicer scene and views, a ``Workspace``, and the page's handlers."""

    def __init__(self, server: Any = None, checkpoint: str | None = None, window_hu: tuple[float, float] | None = None,
                 device: str | None = None, cache_bytes: int | None = None, upload_dir: str | None = None,
                 access: inputs.DataAccess | None = None, max_upload_bytes: int = 0, secret: str = "") -> None:
        super().__init__(server, client_type="vue3")
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        from CTSAM3DLib.mrml.logic import BridgeLogic

        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        views = ViewLayoutDefinition
        self.layout_manager.register_layout("CTSAM3D", Layout(LayoutDirection.Horizontal, [
            Layout(LayoutDirection.Vertical, [views.axial_view(), views.coronal_view()]),
            Layout(LayoutDirection.Vertical, [views.threed_view(), views.sagittal_view()])]))
        self.layout_manager.set_layout("CTSAM3D")
        self.logic = BridgeLogic()
        if cache_bytes:
            self.logic.config = dataclasses.replace(self.logic.config, cache_bytes=int(cache_bytes))
        self.model_args = (checkpoint, window_hu)
        self.upload_dir = Path(upload_dir or tempfile.mkdtemp(prefix="ctsam3d-web-"))
        self.access = access or inputs.DataAccess.create(self.upload_dir)
        self.workspace = Workspace(self.slicer.scene, self.slicer.app_logic, self.logic, self.access)
        self.workspace.on_error = self._show_error
        self.state.update({**DEFAULT_STATE, "devices": self.logic.available_devices(), "trame__title": "CTSAM3D",
                           "max_upload_bytes": int(max_upload_bytes)})
        self._secret = secret
        if secret:
            self.server.controller.on_server_bind.add(self._require_secret)
        self.server.enable_module({"serve": {"ctsam3d": str(SCRIPTS_DIR)}, "scripts": ["ctsam3d/upload.js"]})
        for action in (self.open_path, self.open_upload, self.upload_failed):
            self.server.controller.trigger(action.__name__)(action)
        self.state.device = device or self.state.devices[0]
        self._downloads: dict[str, Callable[[], Any]] = {}
        self._observe_cursor()
        from CTSAM3DLib.web.ui import build_page

        self.page = build_page(self.server, self.layout_manager, self)
        self.state.change("tool")(self._on_tool)
        self.state.change("window_preset")(self._on_window)
        self.state.change("use_cpp", "max_patches", "large_organs")(self._on_settings)
        self.state.change("device")(self._on_device)
        self.state.change("show_3d")(self._on_show_3d)
        self.server.controller.on_server_ready.add(lambda **_: asyncio.ensure_future(self._poll_forever()))

    # ---- start-up ----------------------------------------------------------------------------
    def start_up(self, image: str | None) -> None:
        """Load the model on the chosen device and open ``image`` (errors go to the banner)."""
        self._guarded(self._load_model)
        if image:
            self.state.ct_path = image
            self._guarded(lambda: self._open(image))
        self.state.status = self._status_idle()

    def _load_model(self) -> None:
        checkpoint, window_hu = self.model_args
        self.logic.load_model(checkpoint, self.state.device, window_hu)
        self.logic.configure(**_cpp_settings(self.state.use_cpp, self.state.max_patches, self.state.large_organs))

    # ---- worker port ------------------------------------------------------------------------------
    def _require_secret(self, wslink_server: Any) -> None:
        """Refuse every request to this worker's port that lacks the gateway's secret header."""
        from aiohttp import web

        @web.middleware
        async def check(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
            if not hmac.compare_digest(request.headers.get(SECRET_HEADER, ""), self._secret):
                return web.Response(status=403, text="This port is one CTSAM3D session's server; open the address "
                                                     "`ctsam3d serve` printed instead.")
            return await handler(request)

        wslink_server.app.middlewares.append(check)

    # ---- actions called by the page (trigger names: the method names) -------------------------------------
    def open_path(self, path: str | None = None) -> str:
        """Open the CT at a server path (default: the one typed in the toolbar); returns the error shown, or ""."""
        if path is not None:
            self.state.ct_path = str(path)
        return self._guarded(lambda: self._open(str(self.state.ct_path).strip()))

    def open_upload(self, batch: str) -> str:
        """Open a finished upload (one image, a zipped DICOM folder, or a DICOM series' files), then delete it.

        ``batch`` names the folder the gateway streamed the files into; returns the error shown, or "".
        """
        folder = self.upload_dir / UPLOADS / str(batch)
        if not _BATCH.match(str(batch)) or not folder.is_dir():
            return self._refuse("The upload did not arrive; upload the CT again.")
        try:
            return self._guarded(lambda: self._open(str(inputs.upload_target(folder))))
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # the scene holds the voxels now

    def upload_failed(self, message: str) -> str:
        """Show why an upload was refused (the gateway's answer, relayed by the page)."""
        return self._refuse(str(message)[:500] or "The upload failed.")

    def _open(self, path: str) -> None:
        node = self.workspace.open(path)
        self.slicer.display_manager.show_volume_in_slice_background(node)
        for view in self.slicer.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        self.slicer.display_manager.reset_views()
        self.state.update({"ct_name": Path(path).name.split(".")[0] or "ct", "has_ct": True, "error": "",
                           "status": self._status_idle()})
        self._on_window(self.state.window_preset)
        self._on_show_3d(self.state.show_3d)
        self.workspace.add_segment()
        self._on_tool(self.state.tool)
        self._refresh_segments()

    def submit(self, kind: str) -> None:
        """Undo, redo or reset the selected segment."""
        self._guarded(lambda: self.workspace.submit(kind))

    def cancel(self) -> None:
        """Cancel the running click (and queued ones); segments stay as they were."""
        self.logic.cancel()
        self.state.status = "Cancelling..."

    def add_segment(self) -> None:
        self._guarded(lambda: self.workspace.add_segment())

    def select(self, segment_id: str) -> None:
        self._guarded(lambda: self.workspace.select(segment_id))

    def rename(self, segment_id: str, name: str) -> None:
        self._guarded(lambda: self.workspace.rename(segment_id, name))

    def set_color(self, segment_id: str, color: str) -> None:
        self._guarded(lambda: self.workspace.set_color(segment_id, color))

    def set_visible(self, segment_id: str, is_visible: bool) -> None:
        self._guarded(lambda: self.workspace.set_visible(segment_id, is_visible))

    def delete(self, segment_id: str) -> None:
        self._guarded(lambda: self.workspace.delete(segment_id))

    def download_trigger(self, suffix: str) -> str:
        """Register the trigger that returns the segmentation as ``suffix`` (an attachment); returns its name."""
        def download() -> Any:
            try:
                return self.server.protocol.addAttachment(self.workspace.export(suffix))
            except Exception as exc:  # reported in the banner; the browser then gets no file
                self._show_error(exc)
                return None

        return self.server.controller.trigger_name(download)

    @staticmethod
    def mime(suffix: str) -> str:
        return DOWNLOAD_TYPES[suffix]

    # ---- settings -------------------------------------------------------------------------------
    def _on_tool(self, tool: str, **_: Any) -> None:
        self.workspace.is_positive = tool != "exclude"
        if self.workspace.volume_node is not None:
            self.slicer.markups_logic.place_node(self.workspace.prompts.node(self.workspace.is_positive), True)

    def _on_window(self, window_preset: str, **_: Any) -> None:
        self._guarded(lambda: self.workspace.set_window(window_preset))

    def _on_settings(self, use_cpp: bool, max_patches: Any, large_organs: bool, **_: Any) -> None:
        self._guarded(lambda: self.logic.configure(**_cpp_settings(use_cpp, max_patches, large_organs)))

    def _on_device(self, device: str, **_: Any) -> None:
        self._guarded(self._load_model)  # a new device closes the session; clicks replay from the segments

    def _on_show_3d(self, show_3d: bool, **_: Any) -> None:
        from CTSAM3DLib.mrml.segments import show_3d as show_surfaces

        if self.workspace.segmentation_node is not None:
            show_surfaces(self.workspace.segmentation_node, bool(show_3d))

    # ---- results --------------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                self._poll()
            except Exception:  # never stop polling; the banner shows what went wrong
                logger.exception("CTSAM3D web poll failed")

    def _poll(self) -> None:
        results = self.workspace.poll()
        with self.state:
            for result in results:
                if result.error is not None:
                    self._show_error(result.error)
                elif result.outcome is not None:
                    self.state.status = result.outcome.describe(self.logic.predictor.device)
            if results:
                self._refresh_segments()
            is_busy = self.workspace.is_busy
            if is_busy != self.state.busy:
                self.state.busy = is_busy
                if is_busy:
                    self.state.status = "Segmenting..."
            if (progress := self.logic.worker.progress) is not None:
                self.state.status = f"Segmenting: {progress.describe()}"

    def _refresh_segments(self) -> None:
        self.state.segments = [dataclasses.asdict(s) for s in self.workspace.segments()]
        self.state.segment_id = self.workspace.segment_id

    def _guarded(self, action: Callable[[], Any]) -> str:
        """Run a page action; an error goes to the banner (and is returned), never a traceback."""
        try:
            action()
            self._refresh_segments()
        except Exception as exc:  # every user action: banner instead of a traceback; nothing else changes
            self._show_error(exc)
            return str(self.state.error)
        return ""

    def _refuse(self, message: str) -> str:
        """Show ``message`` in the banner (an action refused before it started); returns it."""
        self._show_error(ValueError(message))
        return message

    def _show_error(self, error: BaseException) -> None:
        from CTSAM3DLib.mrml.jobs import ClickCancelled

        if isinstance(error, ClickCancelled):
            self.state.status = "Cancelled: the segment is unchanged."
            return
        if not isinstance(error, (ValueError, OSError, RuntimeError)):
            logger.error("CTSAM3D web error", exc_info=error)
        self.state.error = str(error) or type(error).__name__
        self.state.status = "Error: the segments are unchanged."

    def _status_idle(self) -> str:
        predictor = self.logic.predictor
        device = getattr(predictor, "device", "no model")
        return f"{device} | ready" + (" (on a CPU each click takes seconds)" if str(device) == "cpu" else "")

    # ---- cursor read-out (as Slicer's data probe) ----------------------------------------------------
    def _observe_cursor(self) -> None:
        crosshair = self.slicer.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        crosshair.AddObserver(crosshair.CursorPositionModifiedEvent, lambda node, _event: self._show_probe(node))

    def _show_probe(self, crosshair: Any) -> None:
        ras = [0.0, 0.0, 0.0]
        volume = self.workspace.volume_node
        if volume is None or not crosshair.GetCursorPositionRAS(ras):
            return
        from CTSAM3DLib.mrml.geometry import ijk_to_ras_matrix, world_to_local

        local = world_to_local(volume, np.asarray(ras))[0]
        ijk = np.linalg.solve(ijk_to_ras_matrix(volume), [*local, 1.0])[:3]
        text = f"R {ras[0]:.1f}  A {ras[1]:.1f}  S {ras[2]:.1f} mm"
        index = np.round(ijk).astype(int)
        dims = volume.GetImageData().GetDimensions()
        if all(0 <= index[a] < dims[a] for a in range(3)):
            value = volume.GetImageData().GetScalarComponentAsDouble(*[int(v) for v in index], 0)
            text += f" | voxel ({index[0]}, {index[1]}, {index[2]}) | {value:.0f} HU"
        if text != self.state.probe:
            with self.state:
                self.state.probe = text


def _cpp_settings(use_cpp: Any, max_patches: Any, large_organs: Any) -> dict[str, Any]:
    """``BridgeLogic.configure`` keywords from the page's CPP settings."""
    return {"use_cpp": bool(use_cpp), "max_patches": int(max_patches or 0),
            "cpp_reach_depth": reach_depth_for(bool(large_organs))}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one tab's server (called by the gateway's worker process)."""
    parser = argparse.ArgumentParser(description="One CTSAM3D web session (started by `ctsam3d serve`).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--image")
    parser.add_argument("--checkpoint")
    parser.add_argument("--window", type=float, nargs=2)
    parser.add_argument("--device")
    parser.add_argument("--cache-bytes", type=int)
    parser.add_argument("--upload-dir", required=True, help="the tab's own folder (uploads, extracted zips)")
    parser.add_argument("--sessions-root", help="the folder of all tabs' folders: never readable from this tab")
    parser.add_argument("--data-root", action="append", default=[], help="a folder whose CTs the tab may open")
    parser.add_argument("--max-upload-bytes", type=int, default=0, help="the gateway's upload budget (shown)")
    parser.add_argument("--exit-after", type=int, default=1800,
                        help="stop when no page was connected this many s (the gateway passes its idle time)")
    args = parser.parse_args(argv)
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        parser.error(f"{SECRET_ENV} is not set: tabs are started by `ctsam3d serve`, which sets it.")
    sys.argv = sys.argv[:1]  # trame parses the command line too; everything it needs is passed below
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    access = _data_access(args.upload_dir, args.data_root, args.image, args.sessions_root)
    app = CTSAM3DWebApp(checkpoint=args.checkpoint, window_hu=tuple(args.window) if args.window else None,
                        device=args.device, cache_bytes=args.cache_bytes, upload_dir=args.upload_dir, access=access,
                        max_upload_bytes=args.max_upload_bytes, secret=secret)
    app.start_up(args.image)
    app.server.start(port=args.port, host=args.host, open_browser=False, show_connection_info=False,
                     timeout=args.exit_after)
    return 0


def _data_access(upload_dir: str, data_roots: Sequence[str], image: str | None,
                 sessions_root: str | None) -> inputs.DataAccess:
    """What the tab may read: its folder, the ``--data-root`` folders and the command line's image; no other tab."""
    roots, files = list(data_roots), []
    if image:
        (roots if Path(image).is_dir() else files).append(image)
    return inputs.DataAccess.create(upload_dir, roots, files, excluded=[sessions_root] if sessions_root else [])


if __name__ == "__main__":
    sys.exit(main())
