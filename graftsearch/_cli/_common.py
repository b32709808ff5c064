"""Arguments and helpers shared by several commands.

A flag that names a setting of ``graftsearch run`` is made from that :class:`RunSettings` field
(its help, default, type and choices) in every command, and a command reads its flags back as
settings (:func:`settings_values`) and builds its parts from them as ``run`` does, so the same
flags give the same donor, data and cache everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import lru_cache
from typing import Any, Dict, Iterable

from rich.console import Console

from graftsearch.pipeline._settings import FIELDS, values_from

# The command line's exit codes (listed in `graftsearch run --help` and the README).
EXIT_OK, EXIT_INFEASIBLE, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# The settings a command that loads a donor, reads data or builds a cache shares with `run`.
DONOR_SETTINGS = ("donor", "weights", "donor_checkpoint", "trust_checkpoint", "donor_classes", "taps")
DATA_SETTINGS = ("data", "split", "split_column", "seed")
CACHE_SETTINGS = ("image_size", "cache_dir", "dtype", "device", "batch_size", "workers",
                  "skip_bad_images")


@lru_cache(maxsize=None)
def console() -> Console:
    return Console()


@lru_cache(maxsize=None)
def console_err() -> Console:
    return Console(stderr=True)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_setting(parser, f: dataclasses.Field, default: Any = argparse.SUPPRESS) -> None:
    """The flag of the RunSettings field ``f``; unless given, it leaves the setting out, so that
    defaults, presets and config files stay below the flags."""
    kind = f.metadata.get("kind") or type(f.default)
    help_text = f.metadata["help"]
    if f.default is not None:
        help_text += f" (default: {f.default})"
    elif "unset" not in help_text:  # the help says what unset means where it means something
        help_text += " (default: unset)"
    help_text = help_text.replace("%", "%%")  # argparse formats help with %: '30%' is text
    choices = f.metadata.get("choices") or None
    if kind is bool:
        parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=default,
                            help=help_text)
    else:
        bare = f.metadata.get("bare")
        extra = {"nargs": "?", "const": bare} if bare is not None else {}
        parser.add_argument(flag(f.name), type=kind, choices=choices, default=default,
                            metavar=None if choices else f.name.split("_")[-1].upper(),
                            help=help_text, **extra)


def add_settings(parser, names: Iterable[str]) -> None:
    """The flags of the settings ``names`` on ``parser`` (or an argument group)."""
    for name in names:
        add_setting(parser, FIELDS[name])


def settings_values(args: argparse.Namespace) -> Dict[str, Any]:
    """Every setting, from the flags given and the defaults of the rest."""
    return values_from({k: v for k, v in vars(args).items() if k in FIELDS})


def donor_spec(values: Dict[str, Any]):
    """The donor part of ``values``, its name checked before torch is imported (a misspelt donor
    is told in a fraction of a second)."""
    from graftsearch.donors._names import check_donor_name
    from graftsearch.pipeline._settings import build_part

    spec = build_part("donor", values)
    if spec.name is not None and spec.checkpoint is None:
        check_donor_name(spec.name)
    return spec
