"""``ctsam3d``: command-line entry point. Each subcommand calls one library function.

Only the module of the subcommand being run is imported (the others appear in ``--help``
with the first line of their module docstring, read without importing them), so
``ctsam3d --help`` and ``--version`` answer without loading torch.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import logging
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata

# Subcommand modules CTSAM3DLib.cli.<name>, each with add_parser(subparsers) and run(args) -> int.
_COMMANDS = ("segment", "train", "evaluate", "benchmark", "demo", "serve")
# Options whose value may start with "-" (negative coordinates, HU windows): "--point -12.5,30,101".
_NUMBER_LIST = re.compile(r"^-[0-9.]")


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ctsam3d`` parser with every subcommand fully defined, or only those in ``only``.

    Args:
        only: the subcommands to define fully (None: all); the others get a placeholder (name
            and one-line help) so that their modules, and torch, are not imported.
    """
    parser = argparse.ArgumentParser(prog="ctsam3d", description="Click-prompted 3-D CT segmentation (CT-SAM3D). "
                                     "Run 'ctsam3d COMMAND --help' for a command's options; README.md explains "
                                     "the usage.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress details (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        if only is not None and name not in only:
            help_text = _summary(name)
            if help_text is not None:
                sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(f"CTSAM3DLib.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"CTSAM3DLib.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    for subparser in sub.choices.values():
        if "-v" not in subparser._option_string_actions:
            subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                   help="log progress details")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; user mistakes exit 2 with a one-paragraph message."""
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    command = _requested_command(argv)
    args = build_parser([command] if command else []).parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(message)s")
    try:
        with _sigterm_as_exit():
            return int(args.func(args) or 0)
    except Exception as exc:
        from CTSAM3DLib.cli.errors import USER_ERRORS  # imports torch: only once a command has run

        if not isinstance(exc, USER_ERRORS):
            raise
        print(f"ctsam3d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code == _SIGTERM_EXIT:
            print("terminated", file=sys.stderr)
        raise


def join_negative_values(argv: list[str]) -> list[str]:
    """Glue ``--opt -1,2,3`` into ``--opt=-1,2,3`` so argparse does not read the value as an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NUMBER_LIST.match(token) and "," in token:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


# Exit status after SIGTERM (128 + 15, as a shell reports it).
_SIGTERM_EXIT = 143


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so that pending writes remove their temporary files."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(_SIGTERM_EXIT)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _requested_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first known command name), or None."""
    return next((token for token in argv if token in _COMMANDS), None)


def _summary(name: str) -> str | None:
    """First docstring line of ``CTSAM3DLib.cli.<name>`` without importing it ("``ctsam3d x``: " removed)."""
    spec = importlib.util.find_spec(f"CTSAM3DLib.cli.{name}")
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return re.sub(r"^``[^`]*``:\s*", "", first).rstrip(".")


def _version() -> str:
    try:
        return metadata.version("CTSAM3DLib")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
