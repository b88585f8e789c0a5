"""``ctsam3d serve``'s front server: one worker process (``web.app``) per browser tab, behind one port.

``GET /`` is a page whose form (sent by the browser itself) posts ``/new``; only that starts a worker, on a
free loopback port, and sends the browser to ``/s/<token>/``, so health checks (``HEAD /``, ``GET /healthz``)
and crawlers start nothing. Everything under ``/s/<token>/`` (the page, its websocket) is proxied to that
tab's worker with the worker's own secret header, which the worker requires of every request: a local user
who finds a worker's port cannot attach to it. ``POST /s/<token>/upload`` streams an uploaded file into the
tab's own folder, refused early (``Content-Length``, ``Expect: 100-continue``) or as soon as it passes the
tab's upload budget. Every request must name this server by an IP address, ``localhost`` or an
``--allowed-host`` (DNS rebinding), and a websocket or a POST must come from a page of this server (Origin).

New tabs are refused while ``max_sessions`` are open or the sessions' memory plus one more would pass the
memory budget; a started tab that no page opens within ``UNCLAIMED_TIMEOUT_S``, or without any request or
websocket message for ``idle_timeout_s``, is closed (its worker ends, its folder is deleted). No other site may
frame these pages. No authentication: bind to loopback or put it behind a reverse proxy that authenticates.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, WSCloseCode, WSMsgType, hdrs, web

from CTSAM3DLib.web import inputs

logger = logging.getLogger(__name__)

# Resident memory (bytes) assumed for a tab before any tab has been measured.
SESSION_BYTES_ESTIMATE = 2 << 30
# Seconds a new worker may take to start (imports, model load, opening the CT).
WORKER_START_TIMEOUT_S = 180.0
# Seconds between checks for idle tabs and ended workers.
REAP_INTERVAL_S = 5.0
# Seconds a started tab may wait for its page's websocket before it is closed (a crawler, a lost redirect).
UNCLAIMED_TIMEOUT_S = 120.0
# Closed tabs remembered (for the "closed because ..." page); the oldest are forgotten first.
MAX_CLOSED = 1000
# Default upload budget of one tab (bytes): a whole-body thin-slice CT with room to spare.
DEFAULT_MAX_UPLOAD_BYTES = 2 << 30
# Largest body of a proxied request (the page sends none; uploads have their own route).
PROXY_BODY_BYTES = 1 << 20
# Largest websocket frame either way (wslink chunks messages into 4 MiB frames), and most bytes a page's
# unfinished messages may announce in their chunk headers (wslink allocates the announced size at once).
WS_FRAME_BYTES = (4 << 20) + 4096
WS_MESSAGE_BYTES = 64 << 20
# wslink chunk header: message id, offset, message size (little-endian uint32 each).
_CHUNK_HEADER_BYTES = 12
# The header carrying a worker's secret, and the environment variable that gives it to the worker.
SECRET_HEADER = "X-CTSAM3D-Worker"
SECRET_ENV = "CTSAM3D_WORKER_SECRET"
# A tab's uploads: <tab folder>/uploads/<batch>/<file>; a batch is one choice of files in the page.
UPLOADS = "uploads"
_BATCH = re.compile(r"^[0-9a-f]{16}$")
# Headers on every answer: no framing by other sites (an iframe of "/" would start sessions), and no Referer
# carrying a session's token to other sites.
_SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                     "Referrer-Policy": "same-origin"}
# Request headers not forwarded to a worker (hop-by-hop, set by the proxy itself, or the worker's secret).
_HOP_HEADERS = frozenset({"host", "connection", "keep-alive", "upgrade", "transfer-encoding", "te", "trailer",
                          "proxy-authorization", "proxy-authenticate", "content-length", SECRET_HEADER.lower()})


@dataclass
class GatewayConfig:
    """What ``ctsam3d serve`` was asked for (see ``cli/serve.py``)."""

    worker_args: list[str]  # passed to every worker
    max_sessions: int = 4
    memory_budget_bytes: int = 16 << 30
    idle_timeout_s: float = 1800.0
    worker_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "CTSAM3DLib.web.app"])
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    allowed_hosts: tuple[str, ...] = ()  # host names besides IP addresses and localhost; "*" allows any


@dataclass
class Tab:
    """One browser tab's worker process."""

    token: str
    port: int
    process: subprocess.Popen
    folder: Path  # uploads, extracted zips and the worker's log
    secret: str
    last_active: float = field(default_factory=time.monotonic)
    ready_at: float = 0.0  # when the worker first answered (the page's websocket is awaited from then)
    is_started: bool = False  # the worker answers on its port
    has_connected: bool = False  # a page's websocket reached it

    def touch(self) -> None:
        self.last_active = time.monotonic()


class Gateway:
    """The aiohttp application: starts, proxies and closes per-tab workers."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.tabs: dict[str, Tab] = {}
        self.closed: OrderedDict[str, str] = OrderedDict()  # token -> why it was closed (at most MAX_CLOSED)
        self.root = Path(tempfile.mkdtemp(prefix="ctsam3d-serve-"))
        self._client: ClientSession | None = None
        self.app = web.Application(client_max_size=PROXY_BODY_BYTES, middlewares=[self._check_request])
        self.app.router.add_get("/", self.landing)
        self.app.router.add_get("/healthz", self.health)
        self.app.router.add_post("/new", self.new_tab)
        self.app.router.add_post("/s/{token}/upload", self.upload, expect_handler=self._expect_upload)
        self.app.router.add_route("*", "/s/{token}/{tail:.*}", self.proxy)
        self.app.on_response_prepare.append(_add_security_headers)
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)

    # ---- checks on every request ----------------------------------------------------------------
    @web.middleware
    async def _check_request(self, request: web.Request, handler: object) -> web.StreamResponse:
        """Refuse a Host this server is not (DNS rebinding) and a websocket or POST from another site's page."""
        if not host_allowed(request.host, self.config.allowed_hosts):
            return _page(421, "Wrong server name",
                         f"This CTSAM3D server is not reached as {request.host!r}. Use its IP address or localhost, "
                         "or start it with `ctsam3d serve --allowed-host NAME`.")
        is_websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if (is_websocket or request.method not in ("GET", "HEAD", "OPTIONS")) and not origin_allowed(
                request.headers.get(hdrs.ORIGIN), request.host, self.config.allowed_hosts):
            return _page(403, "Refused", "A page of another site may not use this CTSAM3D server.")
        return await handler(request)  # type: ignore[operator]

    # ---- tabs ---------------------------------------------------------------------------------
    async def landing(self, _request: web.Request) -> web.Response:
        """The start page: its form posts ``/new`` at once (a browser runs it; a crawler or HEAD does not)."""
        body = ("<!doctype html><title>CTSAM3D</title><h2>CTSAM3D</h2>"
                "<form id='start' method='post' action='new'><button>Open a new session</button></form>"
                "<script>document.getElementById('start').submit()</script>")
        return web.Response(text=body, content_type="text/html")

    async def health(self, _request: web.Request) -> web.Response:
        """``GET /healthz``: the server answers; how many sessions are open (starts nothing)."""
        open_tabs = sum(t.process.poll() is None for t in self.tabs.values())
        return web.json_response({"status": "ok", "sessions": open_tabs, "max_sessions": self.config.max_sessions})

    async def new_tab(self, _request: web.Request) -> web.StreamResponse:
        """Start a worker for a new tab and send the browser to it (503 page when over budget or it fails)."""
        refusal = self._refusal()
        if refusal:
            return _page(503, "CTSAM3D is busy", refusal)
        token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
        folder = self.root / token
        try:
            (folder / "tmp").mkdir(parents=True)
            port = _free_port()
            command = [*self.config.worker_command, "--port", str(port), "--host", "127.0.0.1",
                       "--upload-dir", str(folder), "--sessions-root", str(self.root),
                       "--cache-bytes", str(self._cache_bytes()),
                       "--exit-after", str(int(self.config.idle_timeout_s + UNCLAIMED_TIMEOUT_S)),
                       *self.config.worker_args]
            with open(folder / "worker.log", "wb") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           env=_worker_env(secret, folder / "tmp"))
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            logger.error("CTSAM3D could not start a worker: %s", exc)
            return _page(503, "CTSAM3D could not start a session", f"The server could not start a session ({exc}).")
        tab = self.tabs[token] = Tab(token, port, process, folder, secret)
        try:
            is_ready = await _wait_for_port(port, process)
        except BaseException:  # the browser left while the worker started: nothing is left running
            await asyncio.to_thread(self._close, tab, "its page was left while it started")
            raise
        if not is_ready:
            log = folder / "worker.log"
            reason = _log_lines(log, 1)
            logger.error("CTSAM3D worker for tab %s failed to start:\n%s", token, _log_lines(log, 40))
            await asyncio.to_thread(self._close, tab, "it failed to start")
            return _page(503, "CTSAM3D could not start a session",
                         f"The session's server ended before it was ready: {reason}\nThe server's log has the details.")
        tab.is_started, tab.ready_at = True, time.monotonic()
        tab.touch()
        raise web.HTTPSeeOther(f"s/{token}/")

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
        while len(self.closed) > MAX_CLOSED:
            self.closed.popitem(last=False)
        self.tabs.pop(tab.token, None)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = time.monotonic()
            for tab in list(self.tabs.values()):
                if not tab.is_started:
                    continue  # new_tab still waits for it and closes it if it fails
                if tab.process.poll() is not None:
                    reason = "its server ended"
                elif not tab.has_connected and now - tab.ready_at > UNCLAIMED_TIMEOUT_S:
                    reason = "no page opened it"
                elif now - tab.last_active > self.config.idle_timeout_s:
                    reason = f"it was idle for {self.config.idle_timeout_s / 60:.0f} min"
                else:
                    continue
                await asyncio.to_thread(self._close, tab, reason)

    async def _open_tab(self, token: str) -> Tab | web.Response:
        """The started tab of ``token``, or the page that says it is closed (a dead worker is closed here)."""
        tab = self.tabs.get(token)
        if tab is not None and tab.is_started and tab.process.poll() is not None:
            logger.warning("CTSAM3D worker for tab %s ended:\n%s", token, _log_lines(tab.folder / "worker.log", 40))
            await asyncio.to_thread(self._close, tab, "its server ended unexpectedly")
            tab = None
        if tab is None or not tab.is_started:
            why = self.closed.get(token, "it does not exist" if tab is None else "it is still starting")
            return _page(410, "This CTSAM3D session is closed",
                         f"The session was closed because {why}. Download results before leaving a tab idle. "
                         "Open a new session: /")
        tab.touch()
        return tab

    # ---- uploads --------------------------------------------------------------------------------
    async def _expect_upload(self, request: web.Request) -> web.Response | None:
        """Answer ``Expect: 100-continue`` with the refusal before the client sends a body too large."""
        refusal = self._upload_refusal(request.match_info["token"], request.content_length)
        if refusal is not None:
            return refusal
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    def _upload_refusal(self, token: str, length: int | None) -> web.Response | None:
        tab = self.tabs.get(token)
        if tab is not None and length is not None and _folder_bytes(tab.folder / UPLOADS) + length > \
                self.config.max_upload_bytes:
            return self._too_big()
        return None

    def _too_big(self) -> web.Response:
        limit = self.config.max_upload_bytes / 2**30
        return _page(413, "Upload too large",
                     f"This server takes at most {limit:.1f} GiB of uploads per session (--max-upload-gb). Upload a "
                     "smaller CT (e.g. a compressed .nii.gz or a zipped DICOM folder), or ask the server's operator.")

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """Stream one uploaded file (``?name=``, ``&batch=`` for the next files of one choice) into the tab's folder.

        Returns ``{"batch": ..., "name": ...}``; 413 as soon as the tab's uploads would pass the budget.
        """
        tab = await self._open_tab(request.match_info["token"])
        if isinstance(tab, web.Response):
            return tab
        refusal = self._upload_refusal(tab.token, request.content_length)
        if refusal is not None:
            return refusal
        batch = request.query.get("batch") or secrets.token_hex(8)
        folder = tab.folder / UPLOADS / batch
        if not _BATCH.match(batch) or ("batch" in request.query and not folder.is_dir()):
            return _page(400, "Bad upload", "The upload names no batch this session started.")
        folder.mkdir(parents=True, exist_ok=True)
        if sum(1 for _ in folder.iterdir()) >= inputs.MAX_FOLDER_FILES:
            return _page(413, "Too many files", f"One upload may hold at most {inputs.MAX_FOLDER_FILES} files; "
                                                "upload a zipped DICOM folder instead.")
        part = folder / f".{secrets.token_hex(8)}.part"
        budget = self.config.max_upload_bytes - _folder_bytes(tab.folder / UPLOADS)
        try:
            received = 0
            with open(part, "xb") as sink:
                async for chunk in request.content.iter_chunked(1 << 20):
                    received += len(chunk)
                    if received > budget:
                        return self._too_big()
                    sink.write(chunk)
                    tab.touch()
            if request.content_length is not None and received != request.content_length:
                return _page(400, "Upload incomplete", "The upload ended early; try again.")
            name = _link_unique(part, folder, inputs.upload_name(request.query.get("name", "")))
        except (OSError, ClientError) as exc:
            logger.warning("CTSAM3D upload to tab %s failed: %s", tab.token, exc)
            return _page(500, "Upload failed", f"The server could not store the upload ({type(exc).__name__}).")
        finally:
            part.unlink(missing_ok=True)
            if "batch" not in request.query:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # a new batch whose first file was refused (not empty otherwise)
        return web.json_response({"batch": batch, "name": name})

    # ---- proxy ----------------------------------------------------------------------------------
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Forward a request (or a websocket) under ``/s/<token>/`` to that tab's worker, with its secret."""
        tab = await self._open_tab(request.match_info["token"])
        if isinstance(tab, web.Response):
            return tab
        url = f"http://127.0.0.1:{tab.port}/{request.match_info['tail']}"
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            return await self._proxy_websocket(request, tab, url.replace("http://", "ws://", 1))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers[SECRET_HEADER] = tab.secret
        try:
            async with self._client.request(request.method, url, params=request.query, headers=headers,
                                            data=await request.read(), allow_redirects=False) as upstream:
                body = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items()
                               if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"}
                return web.Response(status=upstream.status, body=body, headers=out_headers)
        except (ClientError, asyncio.TimeoutError) as exc:
            logger.warning("CTSAM3D worker for tab %s did not answer: %s", tab.token, exc)
            return _page(502, "This CTSAM3D session did not answer",
                         "Its server did not answer; reload in a moment, or open a new session: /")

    async def _proxy_websocket(self, request: web.Request, tab: Tab, url: str) -> web.WebSocketResponse:
        browser = web.WebSocketResponse(max_msg_size=WS_FRAME_BYTES, autoping=True)
        await browser.prepare(request)
        tab.has_connected = True
        announced = AnnouncedBytes()
        try:
            async with self._client.ws_connect(url, headers={SECRET_HEADER: tab.secret}, max_msg_size=WS_FRAME_BYTES,
                                               autoping=True) as worker:
                async def browser_to_worker() -> None:
                    async for message in browser:
                        tab.touch()
                        if message.type == WSMsgType.BINARY and announced.add(message.data) > WS_MESSAGE_BYTES:
                            await browser.close(code=WSCloseCode.MESSAGE_TOO_BIG, message=b"message too large")
                            return
                        await _forward(message, worker)

                async def worker_to_browser() -> None:
                    async for message in worker:
                        await _forward(message, browser)

                tasks = [asyncio.ensure_future(browser_to_worker()), asyncio.ensure_future(worker_to_browser())]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
        except (ClientError, asyncio.TimeoutError) as exc:
            logger.warning("CTSAM3D worker for tab %s refused the websocket: %s", tab.token, exc)
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


def host_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether a request's Host names this server: an IP address, ``localhost``, or an allowed name.

    A DNS-rebinding page reaches the server under the attacker's domain name, never under an IP address.
    """
    name = _host_name(host)
    if "*" in allowed_hosts or name == "localhost" or name in (h.lower() for h in allowed_hosts):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str | None, host: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether a websocket or POST comes from this server's own page (no Origin: not from a browser page)."""
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    if not netloc:
        return False  # "null": a sandboxed frame or a file
    return netloc == host.lower() or "*" in allowed_hosts or _host_name(netloc) in (h.lower() for h in allowed_hosts)


class AnnouncedBytes:
    """Bytes a page's unfinished wslink messages announce (what the worker has allocated for them)."""

    def __init__(self) -> None:
        self.pending: dict[bytes, list[int]] = {}  # message id -> [announced size, bytes received]

    def add(self, frame: bytes) -> int:
        """Count one binary frame (a chunk); returns the bytes announced by messages not yet complete."""
        if len(frame) < _CHUNK_HEADER_BYTES:
            return 0
        size = int.from_bytes(frame[8:12], "little")
        sizes = self.pending.setdefault(frame[:4], [size, 0])
        sizes[1] += len(frame) - _CHUNK_HEADER_BYTES
        if sizes[1] >= sizes[0]:
            del self.pending[frame[:4]]
        return sum(announced for announced, _ in self.pending.values())


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).rstrip(".")


async def _add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_SECURITY_HEADERS)


async def _forward(message: object, target: object) -> None:
    kind, data = message.type, message.data  # type: ignore[attr-defined]
    if kind == WSMsgType.TEXT:
        await target.send_str(data)  # type: ignore[attr-defined]
    elif kind == WSMsgType.BINARY:
        await target.send_bytes(data)  # type: ignore[attr-defined]


def _page(status: int, title: str, text: str) -> web.Response:
    body = f"<!doctype html><title>{html.escape(title)}</title><h2>{html.escape(title)}</h2>" \
           f"<pre style='white-space: pre-wrap'>{html.escape(text)}</pre><p><a href='/'>Open a new session</a></p>"
    return web.Response(status=status, text=body, content_type="text/html")


def _link_unique(part: Path, folder: Path, name: str) -> str:
    """Give the finished ``part`` file the first free name of ``name``, ``name-2``, ... (never overwrites)."""
    for candidate in inputs.unique_names(name):
        try:
            os.link(part, folder / candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"too many uploads named {name}")


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    total = 0
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _log_lines(log: Path, count: int) -> str:
    """The last ``count`` lines a worker wrote (the last one: its error), or a note when the log is gone."""
    try:
        lines = [line[-500:] for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(its log is gone)"
    return "\n".join(lines[-count:]) if lines else "(it wrote nothing)"


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


def _worker_env(secret: str, tmp: Path) -> dict[str, str]:
    """A worker's environment: its secret, temporary files inside its tab's folder (removed with it, even after a
    crash), and offscreen rendering through OSMesa without a display (unless set)."""
    env = dict(os.environ)
    env.update({SECRET_ENV: secret, "TMPDIR": str(tmp)})
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
                device: str | None, data_roots: Sequence[str] = ()) -> list[str]:
    """Command-line arguments every tab's worker gets from ``ctsam3d serve``."""
    args = [] if image is None else ["--image", str(Path(image).expanduser().resolve())]
    for root in data_roots:
        args += ["--data-root", str(Path(root).expanduser().resolve())]
    if checkpoint:
        args += ["--checkpoint", str(Path(checkpoint).expanduser().resolve())]
    if window:
        args += ["--window", *(str(float(v)) for v in window)]
    if device:
        args += ["--device", device]
    return args
