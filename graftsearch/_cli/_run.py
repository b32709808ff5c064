"""``graftsearch run`` and ``graftsearch resume``: the whole path in one command.

Flags are generated from :class:`RunSettings`, so every setting is a flag and a config key.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any, Dict

from rich.markup import escape
from rich.table import Table

from graftsearch._utils.errors import ParameterError
from graftsearch.optimize._settings import RESUMABLE_CHANGES
from graftsearch.pipeline._settings import FIELDS, GROUPS, RunSettings, read_config, settings_from
from ._common import (EXIT_INFEASIBLE, EXIT_INTERRUPTED, EXIT_OK, add_setting, console,
                      console_err, flag)
from ._live import LiveProgress

EXIT_CODES = """exit codes: 0 done, 1 finished but nothing feasible (the closest result is written),
2 usage or input error, 3 internal error (rerun with -v for the traceback), 130 interrupted
(resume with `graftsearch resume RUN_DIR`)"""


# `resume` takes the settings that say only how or for how long to run.
RESUMABLE_FLAGS = tuple(name for name in RESUMABLE_CHANGES if name in FIELDS)


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="the whole path: taps, cache, search, final training, test, export, report",
        description="Search which donor layers to graft for the smallest accurate model (or the "
                    "most accurate small one), then train, test, export and report it. Defaults "
                    "are the paper's setup (vgg16 with ImageNet weights, DeepWeeds, 128 px).",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE", help="read settings from a TOML file (or a run's "
                                                    "config.json); flags override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings as TOML and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars (log.txt still has it all)")
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    for f in dataclasses.fields(RunSettings):
        add_setting(groups[f.metadata["group"]], f)
    p.set_defaults(handler=run_command, _parser=p)

    r = sub.add_parser("resume", help="continue a stopped run where it stopped",
                       description="Continue a run from its directory (any stage); it ends where "
                                   "an uninterrupted run would.", epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    for name in RESUMABLE_FLAGS:
        add_setting(r, FIELDS[name])
    r.set_defaults(handler=resume_command, _parser=r)


def _flags(args: argparse.Namespace) -> Dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in FIELDS}


def _settings(args: argparse.Namespace) -> RunSettings:
    file_layer = read_config(args.config) if getattr(args, "config", None) else {}
    try:
        return settings_from(file_layer, _flags(args))
    except ParameterError as exc:
        name = re.match(r"The '([a-z_]+)' parameter", str(exc))
        # Only blame a flag the user typed; a bad value from --config is reported as it is.
        if name and name.group(1) in _flags(args):
            args._parser.error(f"argument {flag(name.group(1))}: {exc}")
        raise


def run_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if getattr(args, "print_config", False):
        console().print(settings.to_toml(), end="", highlight=False, markup=False, soft_wrap=True)
        return EXIT_OK
    return _execute(settings.resolved(), quiet=getattr(args, "quiet", False), command="run")


def resume_command(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        raise ParameterError(f"The 'run_dir' parameter must be a run directory with a "
                             f"config.json. Got '{run_dir}' instead. Start a run with "
                             "`graftsearch run ...`.")
    stored = read_config(run_dir)
    stored["run_dir"] = str(run_dir)
    settings = settings_from(stored, _flags(args))
    return _execute(settings, quiet=args.quiet, command="resume")


def _execute(settings: RunSettings, *, quiet: bool, command: str) -> int:
    from graftsearch.donors._names import check_donor_name

    if settings.donor and not settings.donor_checkpoint:
        check_donor_name(settings.donor)  # a misspelt donor is told before torch and the data load
    from graftsearch.pipeline._pipeline import run

    out = console()
    out.print(f"[bold]graftsearch {command}[/] -> {escape(str(settings.run_dir))}", highlight=False)
    live = LiveProgress(out, enabled=not quiet)
    try:
        with live:
            outcome = run(settings, progress=live)
    except KeyboardInterrupt:
        console_err().print(f"[yellow]interrupted[/]: progress up to the last finished generation "
                            f"is saved. Resume with `graftsearch resume {escape(str(settings.run_dir))}`.",
                            highlight=False)
        return EXIT_INTERRUPTED
    summary(outcome)
    if not outcome.feasible:
        console_err().print(f"[yellow]nothing feasible[/]: {escape(outcome.result.message)}",
                            highlight=False)
        return EXIT_INFEASIBLE
    return EXIT_OK


def _search_source(result) -> str:
    """The source of a search result's front, pick and message: refined val when it refined."""
    from graftsearch._utils import labels as L

    return L.search_source(getattr(result, "refined_records", None) is not None)


def summary(outcome) -> None:
    """The front, the best graft and the closing message; each accuracy names its source (the
    search's proxy or refined val accuracy, the trained graft's final val and test accuracy)."""
    from graftsearch._utils import labels as L

    out = console()
    result = outcome.result
    searched = L.accuracy(_search_source(result))
    front = Table(title="Pareto front" if result.feasible
                  else "Closest selections (none meets the constraint)")
    pareto = result.pareto
    # int8 sizes are there only when the search measured them (size metric int8_mib)
    int8 = "int8_mib" in pareto.columns and bool(pareto["int8_mib"].notna().any())
    for col in ("rank", "taps", "params", "MiB") + (("int8 MiB",) if int8 else ()) + (searched,):
        front.add_column(col, justify="right")
    for _, row in result.pareto.head(10).iterrows():
        front.add_row(str(row.get("rank", "")), str(row["taps"]), f"{int(row['params']):,}",
                      f"{row['size_mib']:.2f}", *([f"{row['int8_mib']:.3f}"] if int8 else []),
                      f"{row['val_accuracy']:.4f}")
    out.print(front)
    metrics = outcome.final.metrics if outcome.final is not None else {}
    metrics = metrics if isinstance(metrics, dict) else {}
    graft = metrics.get("graft") if isinstance(metrics.get("graft"), dict) else {}
    best = Table(title="Best graft", show_header=False)
    best.add_column("", style="bold")
    best.add_column("")
    pick = result.best
    # the trained graft is the one metrics.json names (with --top-k it may not be rank 1)
    search_acc = None
    if metrics.get("bits") is not None:
        pareto = result.pareto
        if "bits" in pareto:
            match = pareto[pareto["bits"].astype(str) == str(metrics["bits"])]
            if len(match):
                search_acc = float(match.iloc[0]["val_accuracy"])
    elif pick is not None:
        search_acc = pick.val_accuracy
    taps = metrics.get("taps") or (";".join(str(t) for t in pick.taps) if pick is not None else None)
    if taps:
        best.add_row("taps", str(taps))
    if graft.get("params") is not None and graft.get("size_mib") is not None:
        best.add_row("params / MiB", f"{int(graft['params']):,} / {float(graft['size_mib']):.2f}")
    elif pick is not None:
        best.add_row("params / MiB", f"{pick.params:,} / {pick.size_mib:.2f}")
    if int8 and pick is not None and metrics.get("bits") in (None, pick.bits) \
            and getattr(pick, "int8_mib", None) is not None:
        best.add_row("int8 MiB (tensors)", f"{pick.int8_mib:.3f}")
    if search_acc is not None:
        best.add_row(searched, f"{search_acc:.4f}")
    for split, source in (("val", L.FINAL_VAL), ("test", L.FINAL_TEST)):
        acc = (graft.get(split) or {}).get("accuracy") if isinstance(graft.get(split), dict) else None
        if acc is not None:
            best.add_row(L.accuracy(source), f"{acc:.4f}")
    reduction = metrics.get("size_reduction")
    if isinstance(reduction, dict) and reduction.get("factor"):
        best.add_row("vs donor", f"{reduction['factor']:.2f}x smaller ({reduction['percent']:.1f}% "
                                 f"fewer parameters)")
    if outcome.final is not None:
        best.add_row("files", escape(str(outcome.run_dir / "best")))
    best.add_row("report", escape(str(outcome.report)))
    out.print(best)
    if result.feasible:  # otherwise the "nothing feasible" line on stderr says it
        out.print(result.message, highlight=False, markup=False)
