"""A live ``ctsam3d serve`` (real workers, CPU, loopback only) attacked as a hostile page or local user would.

Two tabs are opened; every attack goes to tab A (through the gateway, as the page does: HTTP and the trame
websocket, see ``wslink_client``) or straight at a worker's port. After each one the test checks the answer
is a clear refusal, that nothing was written outside the tabs' folders, that tab B still holds its CT, and
that the server still answers. The server runs with ``TMPDIR`` inside the test's folder so that every file it
writes can be seen; it is stopped at the end of the module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from CTSAM3DLib import bundled

from conftest import free_port, running_serve
from wslink_client import TrameClient

# Seconds the server and one tab's worker (model, sample CT) may take to start on a loaded CPU.
START_TIMEOUT_S = 240.0
# The upload budget the server gets (--max-upload-gb): room for the 1.7 MB sample CT a few times.
UPLOAD_GB = 0.01
OUTSIDE = "outside the folders this server opens"


@dataclasses.dataclass
class Server:
    """The running ``ctsam3d serve`` and the folders around it."""

    url: str
    process: subprocess.Popen
    root: Path  # the test's folder: data/, outside/, tmp/ (the server's TMPDIR)
    tabs: dict[str, str] = dataclasses.field(default_factory=dict)  # "A", "B" -> "/s/<token>/"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def folder(self, tab: str) -> Path:
        """A tab's own folder (in the gateway's temporary folder)."""
        return next((self.root / "tmp").glob("ctsam3d-serve-*")) / self.tabs[tab].split("/")[2]

    def workers(self) -> dict[str, tuple[int, int]]:
        """Tab name -> its worker's (process id, port), from the workers' command lines."""
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                argv = (stat.parent / "cmdline").read_bytes().decode().split("\0")
            except (OSError, IndexError, ValueError):
                continue  # a process that ended meanwhile
            if ppid == self.process.pid and "--upload-dir" in argv:
                token = Path(argv[argv.index("--upload-dir") + 1]).name
                tab = next((t for t, url in self.tabs.items() if url.split("/")[2] == token), token)
                found[tab] = (int(stat.parent.name), int(argv[argv.index("--port") + 1]))
        return found


def _run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, START_TIMEOUT_S))  # type: ignore[arg-type]


async def _page(server: Server, tab: str, *calls: tuple[str, ...]) -> list[Any]:
    """Connect to a tab's page websocket and call triggers (a name and its arguments); their results."""
    from aiohttp import ClientSession

    async with ClientSession() as session, TrameClient(session, server.url.replace("http", "ws", 1)
                                                        + server.tabs[tab][1:] + "ws", server.url.rstrip("/")) as page:
        return [await (page.state() if call[0] == "state" else page.trigger(*call)) for call in calls]


async def _http(method: str, url: str, **kwargs: Any) -> tuple[int, str]:
    from aiohttp import ClientSession

    async with ClientSession() as session, session.request(method, url, allow_redirects=False, **kwargs) as answer:
        return answer.status, await answer.text()


@pytest.fixture(scope="module")
def server(web_extra: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``ctsam3d serve --data-root data --max-upload-gb 0.01`` with tabs A and B, each holding the sample CT."""
    root = tmp_path_factory.mktemp("attacks")
    for name in ("data", "outside", "tmp"):
        (root / name).mkdir()
    sample = bundled.sample_dir() / "ct.nii.gz"
    shutil.copy(sample, root / "data" / "ct.nii.gz")
    shutil.copy(sample, root / "outside" / "secret.nii.gz")
    (root / "data" / "link.nii.gz").symlink_to(root / "outside" / "secret.nii.gz")
    port = free_port()
    args = ["--device", "cpu", "--data-root", str(root / "data"), "--max-upload-gb", str(UPLOAD_GB),
            "--max-sessions", "3", "--idle-minutes", "10"]
    env = {**os.environ, "TMPDIR": str(root / "tmp"), "OMP_NUM_THREADS": "1"}
    with running_serve(port, args, root / "serve.log", START_TIMEOUT_S, env) as process:
        server = Server(f"http://127.0.0.1:{port}/", process, root)
        for tab in ("A", "B"):
            server.tabs[tab] = _run(_location(server))
        yield server
    assert not list((root / "tmp").iterdir()), [str(p) for p in (root / "tmp").rglob("*")]


async def _location(server: Server) -> str:
    """Start a tab (POST /new) and open its page websocket at once, as the browser does; its path."""
    from aiohttp import ClientSession

    async with ClientSession() as session, session.post(server.url + "new", allow_redirects=False) as answer:
        assert answer.status == 303, await answer.text()
        path = "/" + answer.headers["Location"]
    server.tabs["new"] = path
    state = (await _page(server, "new", ("state",)))[0]
    assert state["has_ct"] and not state["error"], state
    return server.tabs.pop("new")


def _files(server: Server) -> set[Path]:
    """Every file and folder under the test's folder, except inside the tabs' own folders."""
    tabs = {server.folder(t) for t in server.tabs}
    return {p for p in server.root.rglob("*") if not any(p.is_relative_to(t) for t in tabs)}


@pytest.fixture(autouse=True)
def untouched(server: Server) -> Iterator[None]:
    """After each attack: nothing written outside the tabs' folders, tab B unchanged, the server answers."""
    before = _files(server)
    yield
    assert _files(server) == before
    if "B" in server.tabs:
        state = _run(_page(server, "B", ("state",)))[0]
        assert state["has_ct"] and state["ct_name"] == "ct" and not state["error"], state
    assert _run(_http("GET", server.url + "healthz"))[0] == 200


def _upload(server: Server, tab: str, name: str, data: bytes, batch: str = "", **kwargs: Any) -> tuple[int, Any]:
    """POST one file to a tab's upload route; (status, the JSON answer or the page's text)."""
    query = {"name": name, **({"batch": batch} if batch else {})}
    status, text = _run(_http("POST", server.url + server.tabs[tab][1:] + "upload", params=query, data=data,
                              **kwargs))
    return status, json.loads(text) if status == 200 else text


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def test_health_checks_and_crawlers_start_no_session(server: Server) -> None:
    for method, path in [("HEAD", ""), ("GET", ""), ("GET", "healthz")] * 3:
        assert _run(_http(method, server.url + path))[0] == 200
    assert sorted(server.workers()) == ["A", "B"]


def test_server_paths_outside_the_data_root_are_refused(server: Server) -> None:
    other = server.folder("B")
    paths = ["/", "/etc/passwd", "/proc/self/environ", server.outside / "secret.nii.gz",
             server.data / ".." / "outside" / "secret.nii.gz", server.data / "link.nii.gz", other,
             other / "worker.log", other.parent, "~/.ssh/id_rsa"]
    answers = _run(_page(server, "A", *[("open_path", str(p)) for p in paths]))
    for path, answer in zip(paths, answers):
        assert OUTSIDE in answer, (path, answer)
    assert _run(_page(server, "A", ("open_path", str(server.data / "ct.nii.gz")))) == [""]


def test_a_zip_given_by_path_is_checked_and_extracted_in_the_tab_only(server: Server) -> None:
    escape = server.root / "escaped"
    archive = server.data / "evil.zip"
    archive.write_bytes(_zip_bytes({"dicom/1.dcm": b"x", f"/{escape}/pwned.txt": b"pwned"}))  # "//...": missed before
    try:
        answer = _run(_page(server, "A", ("open_path", str(archive))))[0]
        assert "unsafe member" in answer and not escape.exists()
        assert not [p for p in server.folder("A").iterdir() if p.name.startswith("unzipped")]
    finally:
        archive.unlink()


@pytest.mark.parametrize("member", ["../../../escaped/pwned.dcm", "//{root}/escaped/pwned.dcm",
                                    "\\\\{root}\\escaped\\pwned.dcm", "..\\..\\..\\escaped\\pwned.dcm"])
def test_zip_slip_uploads_are_refused(server: Server, member: str) -> None:
    archive = _zip_bytes({"dicom/1.dcm": b"x", member.format(root=server.root): b"pwned"})
    status, answer = _upload(server, "A", "series.zip", archive)
    assert status == 200, answer
    message = _run(_page(server, "A", ("open_upload", answer["batch"])))[0]
    assert "unsafe member" in message and not (server.root / "escaped").exists()
    assert not list((server.folder("A") / "uploads").iterdir()) and not list(server.folder("A").glob("unzipped-*"))


def test_an_uploaded_header_cannot_read_a_file_elsewhere(server: Server) -> None:
    header = f"NDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = {server.outside}/secret.nii.gz\n"
    status, answer = _upload(server, "A", "ct.mhd", header.encode())
    assert status == 200, answer
    assert "voxel data file" in _run(_page(server, "A", ("open_upload", answer["batch"])))[0]


def test_oversized_uploads_are_refused_early(server: Server) -> None:
    too_big = b"\0" * int(UPLOAD_GB * 2**30 + 1)
    for kwargs in ({}, {"expect100": True}):
        status, text = _upload(server, "A", "huge.nii.gz", too_big, **kwargs)
        assert status == 413 and "--max-upload-gb" in text
    assert not [p for p in (server.folder("A") / "uploads").rglob("*") if p.is_file()]


def test_same_name_uploads_are_kept_apart_and_a_real_upload_opens(server: Server) -> None:
    ct = (bundled.sample_dir() / "ct.nii.gz").read_bytes()
    _, first = _upload(server, "A", "ct.nii.gz", b"not a ct")
    status, second = _upload(server, "A", "ct.nii.gz", ct, batch=first["batch"])
    assert status == 200 and (first["name"], second["name"]) == ("ct.nii.gz", "ct-2.nii.gz")
    batch = server.folder("A") / "uploads" / first["batch"]
    assert (batch / "ct.nii.gz").read_bytes() == b"not a ct" and (batch / "ct-2.nii.gz").read_bytes() == ct
    shutil.rmtree(batch)
    _, answer = _upload(server, "A", "ct.nii.gz", ct)
    message, state = _run(_page(server, "A", ("open_upload", answer["batch"]), ("state",)))
    assert message == "" and state["has_ct"] and state["ct_name"] == "ct"
    assert not list((server.folder("A") / "uploads").iterdir())  # opened, then deleted


def test_worker_ports_refuse_requests_without_the_secret(server: Server) -> None:
    from aiohttp import ClientSession, WSServerHandshakeError

    async def attack(port: int) -> None:
        async with ClientSession() as session:
            for path in ("", "index.html"):
                async with session.get(f"http://127.0.0.1:{port}/{path}") as answer:
                    assert answer.status == 403
            with pytest.raises(WSServerHandshakeError, match="403"):
                await session.ws_connect(f"ws://127.0.0.1:{port}/ws")

    for _pid, port in server.workers().values():
        _run(attack(port))


def test_dns_rebinding_and_foreign_pages_are_refused(server: Server) -> None:
    from aiohttp import ClientSession, WSServerHandshakeError

    async def attack() -> None:
        async with ClientSession() as session:
            for path in ("", "healthz", server.tabs["A"][1:]):
                async with session.get(server.url + path, headers={"Host": "rebind.attacker.example"}) as answer:
                    assert answer.status == 421
            for origin in ("http://attacker.example", "null"):
                async with session.post(server.url + "new", headers={"Origin": origin}) as answer:
                    assert answer.status == 403
                with pytest.raises(WSServerHandshakeError, match="403"):
                    await session.ws_connect(server.url + server.tabs["A"][1:] + "ws", headers={"Origin": origin})

    _run(attack())
    assert sorted(server.workers()) == ["A", "B"]


def test_zzz_a_dead_worker_gives_a_clear_page(server: Server) -> None:
    """Last in the module: tab B's worker is killed; its page says so, and tab A goes on."""
    pid, _port = server.workers()["B"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    status, text = _run(_http("GET", server.url + server.tabs["B"][1:]))
    assert status == 410 and "ended" in text and "Traceback" not in text
    del server.tabs["B"]
    assert _run(_page(server, "A", ("state",)))[0]["has_ct"]
