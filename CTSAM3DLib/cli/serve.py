"""``ctsam3d serve``: the web app (trame-slicer) on this machine's engine; one session per browser tab."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

# Hosts that keep the app on this machine.
LOOPBACK_HOSTS = ("localhost",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``serve``."""
    p = subparsers.add_parser(
        "serve", help="the web app: segment in the browser, one engine session per tab",
        description="Serve CTSAM3D in the browser (needs the 'web' extra). Every browser tab gets its own session "
                    "(scene, model, engine). There is NO authentication: keep the default loopback host, or put it "
                    "behind a reverse proxy that authenticates users.")
    p.add_argument("image", nargs="?", help="CT to open in every new tab (default: the bundled sample CT)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    p.add_argument("--checkpoint", help="our checkpoint or the authors' params.pth (default: bundled weights)")
    p.add_argument("--window", type=_window, metavar="MIN,MAX", help="intensity window in HU for a params.pth")
    p.add_argument("--device", help="cpu or cuda (default: cuda when PyTorch sees a GPU, else cpu)")
    p.add_argument("--max-sessions", type=int, default=4, metavar="N", help="most tabs open at once (default: 4)")
    p.add_argument("--memory-gb", type=float, metavar="GB",
                   help="memory budget of all sessions: new tabs are refused above it (default: half the RAM)")
    p.add_argument("--idle-minutes", type=float, default=30.0, metavar="MIN",
                   help="close a tab's session after this long without activity (default: 30)")
    p.add_argument("--data-root", action="append", default=[], metavar="DIR",
                   help="a folder whose CTs the page may open by path (repeatable; default: none, only the image "
                        "given here and uploads)")
    p.add_argument("--max-upload-gb", type=float, default=2.0, metavar="GB",
                   help="most bytes one tab may upload (default: %(default)s)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name browsers use to reach this server, e.g. behind a reverse proxy (repeatable; "
                        "IP addresses and localhost always work; '*' turns the check off)")
    p.set_defaults(func=run)


def _window(text: str) -> tuple[float, float]:
    from CTSAM3DLib.cli.segment import parse_window  # imports torch: only when --window is given

    return parse_window(text)


def run(args: argparse.Namespace) -> int:
    """Check the arguments, then serve until interrupted."""
    from CTSAM3DLib.web import inputs

    try:
        import trame_slicer  # noqa: F401 - checked here so that a missing extra is one clear message
        from CTSAM3DLib.web import gateway
    except ImportError as exc:
        raise ImportError(f"ctsam3d serve needs the web extra ({exc}): pip install 'CTSAM3DLib[web]'.") from exc
    if args.image is not None:
        inputs.check_image_kind(args.image)  # ValueError for a missing or unknown file, before anything starts
    for root in args.data_root:
        if not Path(root).expanduser().is_dir():
            raise ValueError(f"--data-root {root} is not a folder.")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}.")
    if (args.max_sessions < 1 or args.idle_minutes <= 0 or args.max_upload_gb <= 0
            or (args.memory_gb is not None and args.memory_gb <= 0)):
        raise ValueError("--max-sessions, --idle-minutes, --max-upload-gb and --memory-gb must be positive.")
    if args.checkpoint is not None:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"Checkpoint {args.checkpoint} does not exist.")
    if args.device is not None:
        from CTSAM3DLib.model.predictor import resolve_device

        resolve_device(args.device)  # DeviceError, e.g. CUDA asked for but absent
    if not _is_loopback(args.host):
        print(f"WARNING: serving on {args.host}: anyone who reaches this port can upload CTs and open those under "
              "--data-root. CTSAM3D has no authentication; put it behind a reverse proxy that authenticates. Browsers "
              "must reach it by IP address, localhost or an --allowed-host name.")
    image = args.image or str(_sample_ct())
    memory = int(args.memory_gb * 2**30) if args.memory_gb else gateway.default_memory_budget_bytes()
    upload_bytes = int(args.max_upload_gb * 2**30)
    worker_args = gateway.worker_args(image, args.checkpoint, args.window, args.device, args.data_root)
    config = gateway.GatewayConfig([*worker_args, "--max-upload-bytes", str(upload_bytes)], args.max_sessions,
                                   memory, args.idle_minutes * 60, max_upload_bytes=upload_bytes,
                                   allowed_hosts=tuple(args.allowed_host))
    gateway.serve(config, args.host, args.port)
    return 0


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _sample_ct() -> object:
    from CTSAM3DLib import bundled

    return bundled.sample_dir() / "ct.nii.gz"
