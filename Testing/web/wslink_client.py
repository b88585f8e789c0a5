"""A minimal client of a trame page's websocket (wslink 2: msgpack messages in chunked binary frames).

The attack tests use it to call a tab's actions (``trame.trigger``) through ``ctsam3d serve`` as the page
does, without a browser: hello with trame's default secret, then one RPC at a time, skipping the state
updates the server publishes in between.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from aiohttp import ClientSession, WSMsgType
from wslink.chunking import UnChunker, generate_chunks

# trame's default wslink secret (the page sends the same); a worker's real guard is the gateway's secret header.
TRAME_SECRET = "wslink-secret"
# Frame size the page uses (the server's MAX_MSG_SIZE).
FRAME_BYTES = 4 << 20


class TrameClient:
    """``async with TrameClient(session, ws_url, origin) as page: await page.trigger("open_path", "/etc")``."""

    def __init__(self, session: ClientSession, url: str, origin: str) -> None:
        self.session, self.url, self.origin = session, url, origin
        self._ids = itertools.count(1)
        self._unchunker = UnChunker()
        self._unchunker.set_max_message_size(1 << 30)

    async def __aenter__(self) -> TrameClient:
        self.socket = await self.session.ws_connect(self.url, headers={"Origin": self.origin}, max_msg_size=0)
        hello = await self.call("wslink.hello", [{"secret": TRAME_SECRET}], system=True)
        self.client_id = hello["clientID"]
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.socket.close()

    async def call(self, method: str, args: list[Any], system: bool = False, timeout_s: float = 120.0) -> Any:
        """Send one RPC; its result (AssertionError on a wslink error)."""
        rpc_id = f"system:c0:{next(self._ids)}" if system else f"{self.client_id}:{next(self._ids)}"
        packed = msgpack.packb({"wslink": "1.0", "id": rpc_id, "method": method, "args": args, "kwargs": {}})
        for chunk in generate_chunks(packed, FRAME_BYTES):
            await self.socket.send_bytes(chunk)
        while True:
            frame = await self.socket.receive(timeout=timeout_s)
            assert frame.type == WSMsgType.BINARY, f"the websocket ended: {frame.type} {frame.data!r}"
            message = self._unchunker.process_chunk(frame.data)
            if message is None or message.get("id") != rpc_id:
                continue  # a published state update, or a partial message
            assert "error" not in message, message["error"]
            return message.get("result")

    async def trigger(self, name: str, *args: Any) -> Any:
        """Call a page action by its trigger name; what it returns."""
        return await self.call("trame.trigger", [name, list(args), {}])

    async def state(self) -> dict[str, Any]:
        """The tab's whole page state."""
        return (await self.call("trame.state.get", []))["state"]
