"""``graftsearch report RUN_DIR``: rebuild report.md and the plots from a run's files."""

from __future__ import annotations

import argparse

from ._common import console


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild a run's report.md, pareto.png and convergence.png",
                       description="Rebuild report.md, pareto.png and convergence.png of a run "
                                   "directory from its config.json and CSV files (and "
                                   "best/metrics.json when the best model was trained).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # pandas and matplotlib load here, not with the parser (--help stays quick)
    from graftsearch.report._report import CONVERGENCE_PNG, PARETO_PNG, write_report

    path = write_report(args.run_dir)
    console().print(f"wrote {path}, {path.parent / PARETO_PNG}, {path.parent / CONVERGENCE_PNG}",
                    highlight=False, markup=False)
    return 0
