"""A stand-in for a tab's worker in the gateway tests: answers ``/`` with its process id and echoes ``/ws``."""

from __future__ import annotations

import argparse
import os

from aiohttp import WSMsgType, web


async def index(_request: web.Request) -> web.Response:
    return web.Response(text=f"worker {os.getpid()}")


async def echo(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        if message.type == WSMsgType.TEXT:
            await socket.send_str(f"echo {message.data}")
        elif message.type == WSMsgType.BINARY:
            await socket.send_bytes(message.data[::-1])
    return socket


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/ws", echo)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
