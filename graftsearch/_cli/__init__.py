"""The ``graftsearch`` command line. rich lives here and nowhere else in the package."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .._errors import GraftSearchError
from ._common import console_err

# Each command module exposes register(subparsers); order here is the order in --help.
from . import _taps as _taps_cmd

_COMMANDS = [_taps_cmd]

EXIT_OK, EXIT_INFEASIBLE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="graftsearch",
        description="Knowledge grafting: search which donor layers to tap for a small, accurate model.",
    )
    parser.add_argument("--version", action="version", version=f"graftsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except GraftSearchError as exc:
        console_err().print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        console_err().print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED


def entry() -> None:
    sys.exit(main())
