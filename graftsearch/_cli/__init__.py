"""The ``graftsearch`` command line. rich lives here and nowhere else in the package."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import List, Optional

from rich.markup import escape

from graftsearch._utils.errors import GraftSearchError
from ._common import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, console_err

# Each command module exposes register(subparsers); order here is the order in --help.
from . import _run as _run_cmd
from . import _taps as _taps_cmd
from . import _report as _report_cmd
from . import _predict as _predict_cmd
from . import _donor as _donor_cmd
from . import _data as _data_cmd
from . import _cache as _cache_cmd

_COMMANDS = [_run_cmd, _taps_cmd, _report_cmd, _predict_cmd, _donor_cmd, _data_cmd, _cache_cmd]



class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block), like graftsearch's other errors."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from graftsearch._version import __version__

    parser = OneLineParser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # The run writes INFO to its log.txt; the console shows progress bars instead.
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
    try:
        return int(args.handler(args) or 0)
    except SystemExit as exc:  # a command's parser.error()
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except GraftSearchError as exc:
        console_err().print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        console_err().print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an environment failure: one line, the traceback on -v
        logging.getLogger("graftsearch").debug("unexpected error", exc_info=True)
        console_err().print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: "
                            f"{escape(str(exc))}. Run again with `graftsearch -v ...` for the "
                            "traceback and report it at the project's issue tracker.",
                            highlight=False, soft_wrap=True)
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(main())
