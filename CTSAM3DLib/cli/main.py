"""``ctsam3d``: command-line entry point. Each subcommand calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from CTSAM3DLib.cli.errors import USER_ERRORS

# Subcommand modules, each with add_parser(subparsers) and run(args) -> int.
_COMMANDS = ("segment", "train", "evaluate", "benchmark", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The full ``ctsam3d`` parser."""
    import importlib

    parser = argparse.ArgumentParser(prog="ctsam3d", description="Click-prompted 3-D CT segmentation (CT-SAM3D).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"CTSAM3DLib.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"CTSAM3DLib.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; user mistakes exit 2 with a one-paragraph message."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"ctsam3d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
