"""``web.gateway``: one worker per tab, proxying (HTTP and websocket), session limits, idle close.

Workers are ``stub_worker.py`` processes (a small aiohttp server) so that these tests take seconds; the
end-to-end test runs the real worker.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

STUB = Path(__file__).with_name("stub_worker.py")


def _run(test: Callable[[Any, Any], Awaitable[None]], **config: Any) -> None:
    """Run ``test(client, gateway)`` against a gateway whose workers are stubs."""
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    from CTSAM3DLib.web.gateway import Gateway, GatewayConfig

    async def main() -> None:
        gateway = Gateway(GatewayConfig([], worker_command=[sys.executable, str(STUB)], **config))
        async with TestClient(TestServer(gateway.app)) as client:
            await test(client, gateway)

    asyncio.run(main())


async def _new_tab(client: Any) -> str:
    response = await client.get("/", allow_redirects=False)
    assert response.status == 302, await response.text()
    return response.headers["Location"]


def test_each_tab_gets_its_own_worker_and_websocket() -> None:
    async def check(client: Any, gateway: Any) -> None:
        first, second = await _new_tab(client), await _new_tab(client)
        assert first != second and len(gateway.tabs) == 2
        pids = {(await (await client.get(url)).text()) for url in (first, second)}
        assert pids == {f"worker {t.process.pid}" for t in gateway.tabs.values()}
        async with client.ws_connect(first + "ws") as socket:
            await socket.send_str("hello")
            assert (await socket.receive()).data == "echo hello"
            await socket.send_bytes(b"\x00\x01\x02")
            assert (await socket.receive()).data == b"\x02\x01\x00"

    _run(check)


def test_session_limits_refuse_new_tabs() -> None:
    async def at_most_one(client: Any, gateway: Any) -> None:
        await _new_tab(client)
        refused = await client.get("/", allow_redirects=False)
        assert refused.status == 503 and "--max-sessions" in await refused.text()

    async def no_memory(client: Any, gateway: Any) -> None:
        refused = await client.get("/", allow_redirects=False)
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
        for _ in range(100):
            if not gateway.tabs:
                break
            await asyncio.sleep(0.1)
        assert not gateway.tabs and tab.process.poll() is not None and not tab.folder.exists()
        closed = await client.get(url)
        assert closed.status == 410 and "idle" in await closed.text()

    _run(check, idle_timeout_s=0.5)
