"""A stand-in for a tab's worker in the gateway tests: a small aiohttp server that, like the real worker, refuses
every request without the gateway's secret header; ``/`` answers its process id and command line, ``/ws`` echoes.

``--fail-start`` makes it end before it listens (as a worker whose model does not load); with
``--remove-log`` it first deletes its own log, as the reaper could.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from aiohttp import WSMsgType, web

from CTSAM3DLib.web.gateway import SECRET_ENV, SECRET_HEADER


@web.middleware
async def require_secret(request: web.Request, handler: object) -> web.StreamResponse:
    if request.headers.get(SECRET_HEADER) != os.environ[SECRET_ENV]:
        return web.Response(status=403, text="no secret")
    return await handler(request)  # type: ignore[operator]


async def index(_request: web.Request) -> web.Response:
    return web.Response(text=json.dumps({"pid": os.getpid(), "argv": sys.argv[1:]}))


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
    parser.add_argument("--upload-dir", required=True)
    parser.add_argument("--fail-start", action="store_true")
    parser.add_argument("--remove-log", action="store_true")
    args, _ = parser.parse_known_args()
    if args.fail_start:
        if args.remove_log:
            (Path(args.upload_dir) / "worker.log").unlink()
        print("Traceback (most recent call last):\nRuntimeError: the model did not load", flush=True)
        sys.exit(1)
    app = web.Application(middlewares=[require_secret])
    app.router.add_get("/", index)
    app.router.add_get("/ws", echo)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
