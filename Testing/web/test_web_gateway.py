"""``web.gateway``: one worker per tab, proxying (HTTP and websocket), limits, lifecycle, and what it refuses.

Workers are ``stub_worker.py`` processes (a small aiohttp server that, like the real worker, requires the
gateway's secret) so that these tests take seconds; ``test_web_attacks.py`` sends the same attacks to a live
``ctsam3d serve`` with real workers.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

STUB = Path(__file__).with_name("stub_worker.py")


def _run(test: Callable[[Any, Any], Awaitable[None]], worker_args: tuple[str, ...] = (), **config: Any) -> None:
    """Run ``test(client, gateway)`` against a gateway whose workers are stubs."""
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    from CTSAM3DLib.web.gateway import Gateway, GatewayConfig

    async def main() -> None:
        gateway = Gateway(GatewayConfig([], worker_command=[sys.executable, str(STUB), *worker_args], **config))
        async with TestClient(TestServer(gateway.app)) as client:
            await test(client, gateway)

    asyncio.run(main())


async def _new_tab(client: Any) -> str:
    response = await client.post("/new", allow_redirects=False)
    assert response.status == 303, await response.text()
    return "/" + response.headers["Location"]


def _tab(gateway: Any, url: str) -> Any:
    return gateway.tabs[url.split("/")[2]]


def test_each_tab_gets_its_own_worker_and_websocket() -> None:
    async def check(client: Any, gateway: Any) -> None:
        first, second = await _new_tab(client), await _new_tab(client)
        assert first != second and len(gateway.tabs) == 2
        pids = {json.loads(await (await client.get(url)).text())["pid"] for url in (first, second)}
        assert pids == {t.process.pid for t in gateway.tabs.values()}
        async with client.ws_connect(first + "ws") as socket:
            await socket.send_str("hello")
            assert (await socket.receive()).data == "echo hello"
            await socket.send_bytes(b"\x00\x01\x02")
            assert (await socket.receive()).data == b"\x02\x01\x00"

    _run(check)


def test_session_limits_refuse_new_tabs() -> None:
    async def at_most_one(client: Any, gateway: Any) -> None:
        await _new_tab(client)
        refused = await client.post("/new", allow_redirects=False)
        assert refused.status == 503 and "--max-sessions" in await refused.text()

    async def no_memory(client: Any, gateway: Any) -> None:
        refused = await client.post("/new", allow_redirects=False)
        assert refused.status == 503 and "memory budget" in await refused.text()
        assert not gateway.tabs

    _run(at_most_one, max_sessions=1)
    _run(no_memory, memory_budget_bytes=1 << 20)


def test_idle_tab_is_closed_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from CTSAM3DLib.web import gateway as gateway_module

    monkeypatch.setattr(gateway_module, "REAP_INTERVAL_S", 0.1)

    async def check(client: Any, gateway: Any) -> None:
        url = await _new_tab(client)
        tab = next(iter(gateway.tabs.values()))
        await _until(lambda: not gateway.tabs)
        assert tab.process.poll() is not None and not tab.folder.exists()
        closed = await client.get(url)
        assert closed.status == 410 and "idle" in await closed.text()

    _run(check, idle_timeout_s=0.5)


def test_health_checks_and_crawlers_start_nothing() -> None:
    async def check(client: Any, gateway: Any) -> None:
        head = await client.head("/")
        assert head.status == 200 and head.headers["X-Frame-Options"] == "DENY"  # an iframe of "/" starts nothing
        assert head.headers["Referrer-Policy"] == "same-origin"
        for _ in range(10):
            page = await client.get("/")
            assert page.status == 200 and "action='new'" in await page.text()
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["sessions"] == 0
        assert (await client.get("/new")).status == 405
        assert not gateway.tabs and not list(gateway.root.iterdir())

    _run(check)


def test_a_tab_no_page_opens_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    from CTSAM3DLib.web import gateway as gateway_module

    monkeypatch.setattr(gateway_module, "REAP_INTERVAL_S", 0.1)
    monkeypatch.setattr(gateway_module, "UNCLAIMED_TIMEOUT_S", 0.5)

    async def check(client: Any, gateway: Any) -> None:
        opened = await _new_tab(client)
        async with client.ws_connect(opened + "ws"):
            abandoned = await _new_tab(client)
            await _until(lambda: len(gateway.tabs) == 1)
            assert opened.split("/")[2] in gateway.tabs
        assert "no page opened it" in await (await client.get(abandoned)).text()

    _run(check, idle_timeout_s=60)


def test_wrong_host_and_foreign_origin_are_refused() -> None:
    async def check(client: Any, gateway: Any) -> None:
        url = await _new_tab(client)
        for path in ("/", "/healthz", url):  # DNS rebinding: the attacker's name points to 127.0.0.1
            refused = await client.get(path, headers={"Host": "rebind.attacker.example"})
            assert refused.status == 421 and "--allowed-host" in await refused.text()
        assert (await client.post("/new", headers={"Host": "rebind.attacker.example"})).status == 421
        assert (await client.get(url, headers={"Host": "ct.hospital.example"})).status == 200
        assert (await client.get(url, headers={"Host": "localhost:1234"})).status == 200
        for origin in ("http://attacker.example", "null"):
            assert (await client.post("/new", headers={"Origin": origin}, allow_redirects=False)).status == 403
            assert (await client.post(url + "upload?name=a.nii", data=b"x", headers={"Origin": origin})).status == 403
            with pytest.raises(Exception, match="403"):
                await client.ws_connect(url + "ws", headers={"Origin": origin})
        assert len(gateway.tabs) == 1
        own = f"http://{client.host}:{client.port}"
        async with client.ws_connect(url + "ws", headers={"Origin": own}) as socket:
            await socket.send_str("still serving")
            assert (await socket.receive()).data == "echo still serving"

    _run(check, allowed_hosts=("ct.hospital.example",))


def test_worker_port_requires_the_gateways_secret() -> None:
    async def check(client: Any, gateway: Any) -> None:
        from aiohttp import ClientSession

        from CTSAM3DLib.web.gateway import SECRET_HEADER

        url = await _new_tab(client)
        tab = _tab(gateway, url)
        async with ClientSession() as direct:
            for headers in ({}, {SECRET_HEADER: "guess"}):
                async with direct.get(f"http://127.0.0.1:{tab.port}/", headers=headers) as response:
                    assert response.status == 403
            with pytest.raises(Exception, match="403"):
                await direct.ws_connect(f"http://127.0.0.1:{tab.port}/ws")
        forged = await client.get(url, headers={SECRET_HEADER: "guess"})  # the gateway sets its own
        assert forged.status == 200

    _run(check)


def test_websocket_message_announcing_too_much_is_closed() -> None:
    async def check(client: Any, gateway: Any) -> None:
        from aiohttp import WSMsgType

        url = await _new_tab(client)
        def chunk(message_id: int, size: int) -> bytes:  # the first chunk of a wslink message of ``size`` bytes
            return message_id.to_bytes(4, "little") + (0).to_bytes(4, "little") + size.to_bytes(4, "little") + b"x"

        for frames in ([chunk(1, 3 << 30)], [chunk(i, 20 << 20) for i in range(4)]):  # one huge, or many unfinished
            async with client.ws_connect(url + "ws") as socket:
                for frame in frames:
                    await socket.send_bytes(frame)  # wslink would allocate the announced size for each
                message = await socket.receive()
                while message.type == WSMsgType.BINARY:  # echoes of the frames let through
                    message = await socket.receive()
                assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and socket.close_code == 1009
        async with client.ws_connect(url + "ws") as socket:
            await socket.send_str("still serving")
            assert (await socket.receive()).data == "echo still serving"

    _run(check)


def test_uploads_stay_in_the_tab_and_never_overwrite() -> None:
    async def check(client: Any, gateway: Any) -> None:
        url, other = await _new_tab(client), await _new_tab(client)
        first = await (await client.post(url + "upload?name=ct.nii.gz", data=b"first")).json()
        batch = first["batch"]
        names = [first["name"]]
        for name in ("ct.nii.gz", "../../escape.txt", "/etc/passwd", "..\\..\\win.txt", "..", ".hidden", "a/b/c.nii"):
            answer = await client.post(url + f"upload?batch={batch}", params={"name": name}, data=name.encode())
            assert answer.status == 200, await answer.text()
            names.append((await answer.json())["name"])
        assert names[:2] == ["ct.nii.gz", "ct-2.nii.gz"] and all(not n.startswith(".") and "/" not in n for n in names)
        folder = _tab(gateway, url).folder / "uploads" / batch
        assert sorted(p.name for p in folder.iterdir()) == sorted(names)
        assert (folder / "ct.nii.gz").read_bytes() == b"first" and (folder / "ct-2.nii.gz").read_bytes() == b"ct.nii.gz"
        assert _files(gateway.root) == {p.relative_to(gateway.root) for p in folder.iterdir()} | _logs(gateway)
        # another tab cannot add to this tab's batch, and a made-up batch is refused
        for query in (f"batch={batch}&name=x.nii", "batch=..%2F..&name=x.nii", "batch=0123456789abcdef&name=x.nii"):
            assert (await client.post(other + "upload?" + query, data=b"x")).status == 400
        assert (await client.post("/s/no-such-tab/upload?name=x.nii", data=b"x")).status == 410

    _run(check)


def test_uploads_past_the_budget_are_refused_early(monkeypatch: pytest.MonkeyPatch) -> None:
    from CTSAM3DLib.web import inputs

    monkeypatch.setattr(inputs, "MAX_FOLDER_FILES", 2)

    async def check(client: Any, gateway: Any) -> None:
        url = await _new_tab(client)
        declared = await client.post(url + "upload?name=big.nii", data=b"x" * 2000)
        assert declared.status == 413 and "--max-upload-gb" in await declared.text()
        expecting = await client.post(url + "upload?name=big.nii", data=b"x" * 2000, expect100=True)
        assert expecting.status == 413

        async def stream() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse early
            for _ in range(4):
                yield b"x" * 500
        undeclared = await client.post(url + "upload?name=big.nii", data=stream())
        assert undeclared.status == 413
        fits = await client.post(url + "upload?name=small.nii", data=b"x" * 600)
        assert fits.status == 200
        assert (await client.post(url + "upload?name=more.nii", data=b"x" * 600)).status == 413  # the tab's total
        batch = (await fits.json())["batch"]
        assert (await client.post(url + f"upload?batch={batch}&name=1.dcm", data=b"x")).status == 200
        many = await client.post(url + f"upload?batch={batch}&name=2.dcm", data=b"x")
        assert many.status == 413 and "at most 2 files" in await many.text()
        assert {p.name for p in _tab(gateway, url).folder.rglob("*") if p.is_file()} == {"small.nii", "1.dcm",
                                                                                      "worker.log"}
        assert [p.name for p in (_tab(gateway, url).folder / "uploads").iterdir()] == [batch]  # no empty batches
        assert (await client.get(url)).status == 200

    _run(check, max_upload_bytes=1000)


def test_dead_worker_gives_a_clear_page() -> None:
    async def check(client: Any, gateway: Any) -> None:
        url = await _new_tab(client)
        tab = _tab(gateway, url)
        tab.process.kill()
        tab.process.wait()
        for path in (url, url + "upload?name=a.nii"):
            answer = await (client.get(path) if path == url else client.post(path, data=b"x"))
            assert answer.status == 410 and "ended" in await answer.text()
        assert not gateway.tabs and not tab.folder.exists()
        assert (await client.get("/healthz")).status == 200

    _run(check)


@pytest.mark.parametrize(("worker_args", "reason"), [(("--fail-start",), "the model did not load"),
                                                     (("--fail-start", "--remove-log"), "its log is gone")])
def test_worker_start_failure_gives_an_error_page(worker_args: tuple[str, ...], reason: str) -> None:
    async def check(client: Any, gateway: Any) -> None:
        answer = await client.post("/new", allow_redirects=False)
        text = await answer.text()
        assert answer.status == 503 and reason in text and "Traceback" not in text
        assert not gateway.tabs and not list(gateway.root.iterdir())
        assert (await client.get("/healthz")).status == 200

    _run(check, worker_args)


def test_closed_tabs_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from CTSAM3DLib.web import gateway as gateway_module

    monkeypatch.setattr(gateway_module, "MAX_CLOSED", 2)

    async def check(client: Any, gateway: Any) -> None:
        urls = [await _new_tab(client) for _ in range(3)]
        for url in urls:
            gateway._close(_tab(gateway, url), "the test closed it")
        assert list(gateway.closed) == [u.split("/")[2] for u in urls[1:]]
        assert (await client.get(urls[0])).status == 410

    _run(check)


def test_a_worker_outlives_a_dropped_page_as_long_as_the_idle_time() -> None:
    async def check(client: Any, gateway: Any) -> None:
        url = await _new_tab(client)
        argv = json.loads(await (await client.get(url)).text())["argv"]
        assert int(argv[argv.index("--exit-after") + 1]) >= 7200
        assert argv[argv.index("--sessions-root") + 1] == str(gateway.root)

    _run(check, idle_timeout_s=7200)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def _logs(gateway: Any) -> set[Path]:
    return {(t.folder / "worker.log").relative_to(gateway.root) for t in gateway.tabs.values()}
