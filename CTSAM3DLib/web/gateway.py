"""``ctsam3d serve``'s front server: one worker process (``web.app``) per browser tab, behind one port.

Opening ``/`` starts a worker on a free loopback port and sends the browser to ``/s/<token>/``; everything under
that path (the page, its websocket) is proxied to that tab's worker, so tabs never share a scene, a model or an
engine session. New tabs are refused while the sessions' resident memory plus one more would pass the memory
budget or ``max_sessions`` are open; a tab without any request or websocket message for ``idle_timeout_s``
is closed (its worker ends, its uploads are deleted). No authentication: bind to loopback or put it behind a
reverse proxy that authenticates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, WSMsgType, web

logger = logging.getLogger(__name__)

# Resident memory (bytes) assumed for a tab before any tab has been measured.
SESSION_BYTES_ESTIMATE = 2 << 30
# Seconds a new worker may take to start (imports, model load, opening the CT).
WORKER_START_TIMEOUT_S = 180.0
# Seconds between checks for idle tabs and ended workers.
REAP_INTERVAL_S = 5.0
# Request headers not forwarded to a worker (hop-by-hop, or set by the proxy itself).
_HOP_HEADERS = frozenset({"host", "connection", "keep-alive", "upgrade", "transfer-encoding", "te", "trailer",
                          "proxy-authorization", "proxy-authenticate", "content-length"})


@dataclass
class GatewayConfig:
    """What ``ctsam3d serve`` was asked for (see ``cli/serve.py``)."""

    worker_args: list[str]  # passed to every worker
    max_sessions: int = 4
    memory_budget_bytes: int = 16 << 30
    idle_timeout_s: float = 1800.0
    worker_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "CTSAM3DLib.web.app"])


@dataclass
class Tab:
    """One browser tab's worker process."""

    token: str
    port: int
    process: subprocess.Popen
    folder: Path  # uploads and the worker's log
    last_active: float = field(default_factory=time.monotonic)
    is_started: bool = False  # the worker answers on its port

    def touch(self) -> None:
        self.last_active = time.monotonic()


class Gateway:
    """The aiohttp application: starts, proxies and closes per-tab workers."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.tabs: dict[str, Tab] = {}
        self.closed: dict[str, str] = {}  # token -> why it was closed
        self.root = Path(tempfile.mkdtemp(prefix="ctsam3d-serve-"))
        self._client: ClientSession | None = None
        self.app = web.Application(client_max_size=0)
        self.app.router.add_get("/", self.new_tab)
        self.app.router.add_route("*", "/s/{token}/{tail:.*}", self.proxy)
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)

    # ---- tabs ---------------------------------------------------------------------------------
    async def new_tab(self, request: web.Request) -> web.StreamResponse:
        """Start a worker for a new tab and redirect the browser to it (503 when over budget)."""
        refusal = self._refusal()
        if refusal:
            return _page(503, "CTSAM3D is busy", refusal)
        token = secrets.token_urlsafe(16)
        folder = self.root / token
        folder.mkdir()
        port = _free_port()
        log = open(folder / "worker.log", "wb")  # noqa: SIM115 - the worker owns it until it ends
        command = [*self.config.worker_command, "--port", str(port), "--host", "127.0.0.1",
                   "--upload-dir", str(folder), "--cache-bytes", str(self._cache_bytes()), *self.config.worker_args]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_worker_env())
        log.close()
        tab = self.tabs[token] = Tab(token, port, process, folder)
        if not await _wait_for_port(port, process):
            tail = (folder / "worker.log").read_text(errors="replace")[-2000:]
            self._close(tab, "it failed to start")
            return _page(500, "CTSAM3D could not start a session", f"The session's server ended:\n{tail}")
        tab.is_started = True
        tab.touch()
        raise web.HTTPFound(f"/s/{token}/")

    def _refusal(self) -> str:
        open_tabs = [t for t in self.tabs.values() if t.process.poll() is None]
        if len(open_tabs) >= self.config.max_sessions:
            return (f"{len(open_tabs)} sessions are open, the most this server allows (--max-sessions). Close a tab, "
                    "or wait until an idle one is closed, then reload.")
        used = [_rss_bytes(t.process.pid) for t in open_tabs]
        needed = max([*used, SESSION_BYTES_ESTIMATE])
        if sum(used) + needed > self.config.memory_budget_bytes:
            return (f"The open sessions use {sum(used) / 2**30:.1f} GiB; another would pass the memory budget of "
                    f"{self.config.memory_budget_bytes / 2**30:.1f} GiB (--memory-gb). Try again later.")
        return ""

    def _cache_bytes(self) -> int:
        return int(min(1 << 30, self.config.memory_budget_bytes // (4 * self.config.max_sessions)))

    def _close(self, tab: Tab, reason: str) -> None:
        if tab.process.poll() is None:
            tab.process.terminate()
            try:
                tab.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                tab.process.kill()
                tab.process.wait()
        shutil.rmtree(tab.folder, ignore_errors=True)
        self.closed[tab.token] = reason
        self.tabs.pop(tab.token, None)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = time.monotonic()
            for tab in list(self.tabs.values()):
                if tab.process.poll() is not None:
                    self._close(tab, "its page was closed")
                elif tab.is_started and now - tab.last_active > self.config.idle_timeout_s:
                    minutes = self.config.idle_timeout_s / 60
                    await asyncio.to_thread(self._close, tab, f"it was idle for {minutes:.0f} min")

    # ---- proxy ----------------------------------------------------------------------------------
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Forward a request (or a websocket) under ``/s/<token>/`` to that tab's worker."""
        token = request.match_info["token"]
        tab = self.tabs.get(token)
        if tab is None:
            why = self.closed.get(token, "it does not exist")
            return _page(410, "This CTSAM3D session is closed",
                         f"The session was closed because {why}. Download results before leaving a tab idle. "
                         "Open a new session: /")
        tab.touch()
        url = f"http://127.0.0.1:{tab.port}/{request.match_info['tail']}"
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._proxy_websocket(request, tab, url.replace("http://", "ws://", 1))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._client.request(request.method, url, params=request.query, headers=headers,
                                        data=await request.read(), allow_redirects=False) as upstream:
            body = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items()
                           if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"}
            return web.Response(status=upstream.status, body=body, headers=out_headers)

    async def _proxy_websocket(self, request: web.Request, tab: Tab, url: str) -> web.WebSocketResponse:
        browser = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await browser.prepare(request)
        async with self._client.ws_connect(url, max_msg_size=0, autoping=True) as worker:
            async def browser_to_worker() -> None:
                async for message in browser:
                    tab.touch()
                    await _forward(message, worker)

            async def worker_to_browser() -> None:
                async for message in worker:
                    await _forward(message, browser)

            tasks = [asyncio.ensure_future(browser_to_worker()), asyncio.ensure_future(worker_to_browser())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        await browser.close()
        return browser

    # ---- lifecycle --------------------------------------------------------------------------------
    async def _on_startup(self, _app: web.Application) -> None:
        self._client = ClientSession()
        self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _on_cleanup(self, _app: web.Application) -> None:
        self._reaper.cancel()
        for tab in list(self.tabs.values()):
            self._close(tab, "the server stopped")
        if self._client is not None:
            await self._client.close()
        shutil.rmtree(self.root, ignore_errors=True)


async def _forward(message: object, target: object) -> None:
    kind, data = message.type, message.data  # type: ignore[attr-defined]
    if kind == WSMsgType.TEXT:
        await target.send_str(data)  # type: ignore[attr-defined]
    elif kind == WSMsgType.BINARY:
        await target.send_bytes(data)  # type: ignore[attr-defined]


def _page(status: int, title: str, text: str) -> web.Response:
    import html

    body = f"<!doctype html><title>{html.escape(title)}</title><h2>{html.escape(title)}</h2>" \
           f"<pre style='white-space: pre-wrap'>{html.escape(text)}</pre><p><a href='/'>Open a new session</a></p>"
    return web.Response(status=status, text=body, content_type="text/html")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(port: int, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        await asyncio.sleep(0.2)
    return False


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux ``/proc``; 0 where unavailable)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker_env() -> dict[str, str]:
    """The workers' environment: offscreen rendering through OSMesa when there is no display (unless set)."""
    env = dict(os.environ)
    if not env.get("DISPLAY") and not env.get("VTK_DEFAULT_OPENGL_WINDOW"):
        env["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkOSOpenGLRenderWindow"
    return env


def serve(config: GatewayConfig, host: str, port: int, print_url: bool = True) -> None:
    """Run the gateway until interrupted."""
    gateway = Gateway(config)
    if print_url:
        print(f"CTSAM3D web app: http://{host}:{port}/  (no authentication; Ctrl+C stops it)", flush=True)
    web.run_app(gateway.app, host=host, port=port, print=None, handle_signals=True)


def default_memory_budget_bytes(fraction: float = 0.5) -> int:
    """Half of the machine's physical memory (the ``--memory-gb`` default)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * fraction)
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def worker_args(image: str | None, checkpoint: str | None, window: Sequence[float] | None,
                device: str | None) -> list[str]:
    """Command-line arguments every tab's worker gets from ``ctsam3d serve``."""
    args = [] if image is None else ["--image", str(Path(image).expanduser().resolve())]
    if checkpoint:
        args += ["--checkpoint", str(Path(checkpoint).expanduser().resolve())]
    if window:
        args += ["--window", *(str(float(v)) for v in window)]
    if device:
        args += ["--device", device]
    return args
