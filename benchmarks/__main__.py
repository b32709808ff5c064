"""Regenerate every benchmark table and ``benchmarks/RESULTS.md`` with one command.

``python -m benchmarks`` runs, one after the other and each in a fresh process (so that one
benchmark's threads, imports and memory cannot disturb the next): ``cache_extraction``,
``fitness_proxies``, ``search_quality``, ``graft_vs_donor``, ``peers``, ``peers_gp`` (Optuna's
GPSampler, beside ``peers``' graftsearch runs), ``peers_cost``, ``grafting`` (whose runs
are the worked example's, ``examples/plant_seedlings.py``: they fill the paper-vs-ours table),
``quantization`` (int8 copies of those runs' grafts and donors), ``cultivation``, ``startup`` and
``proxy_truth``.
Each benchmark writes its own ``results/<name>.csv`` and ``.md``; RESULTS.md gathers them with
the command, machine, threads and seeds of each, and the time each took; with ``--only`` the
other sections are the tables already in ``results/``, and the page says from when.

``--quick`` is a smoke test of the harness on tiny settings (seconds, not the reported
numbers): it writes into ``--out`` (a temporary directory by default), never over
``benchmarks/results``. BLAS runs on one thread; torch on the threads each benchmark states.

Usage: ``python -m benchmarks [--quick] [--out DIR] [--only NAME[,NAME]] [--page-only]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks._machine import cpu_name, last_commit

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
ORDER = ("cache_extraction", "fitness_proxies", "search_quality", "graft_vs_donor", "peers",
         "peers_gp", "peers_cost", "grafting", "quantization", "cultivation", "startup", "proxy_truth")
FULL_ARGS: Dict[str, List[str]] = {
    "cache_extraction": ["--reps", "2"],  # ABBA: baseline, cache, cache, baseline
    # 200 selections (the fitness issue's minimum); 15 for the settings table, which chose the
    # mlp defaults once and only needs to show why
    "fitness_proxies": ["--selections", "200", "--settings-selections", "15"],
    "search_quality": [],
    "graft_vs_donor": ["--runs", "50", "--warmup", "10", "--threads", "1"],
    "peers": ["--jobs", "2"],  # one process per problem, two at a time
    "peers_gp": ["--seeds", "5", "--jobs", "2"],  # after peers: it reads peers.csv
    "peers_cost": ["--jobs", "2"],
    "grafting": ["--seeds", "0,1,2", "--threads", "2"],
    # the grafting runs' grafts and donors (seeds without a finished run are listed as missing)
    "quantization": ["--seeds", "0,1,2", "--threads", "1"],
    "cultivation": ["--threads", "2"],
    "startup": ["--rounds", "5"],
    "proxy_truth": ["--selections", "150", "--jobs", "2"],
}
QUICK_ARGS: Dict[str, List[str]] = {
    "cache_extraction": ["--donors", "efficientnet_lite0", "--lite0-images", "24"],
    "fitness_proxies": ["--quick"],
    "search_quality": ["--quick"],
    "graft_vs_donor": ["--runs", "2", "--warmup", "1", "--no-int8"],
    "peers": ["--quick"],
    "peers_gp": ["--quick"],
    "peers_cost": ["--quick"],
    "grafting": ["--quick"],
    "quantization": ["--quick"],
    "cultivation": ["--quick"],
    "startup": ["--quick"],
    "proxy_truth": ["--quick"],
}
NEEDS_DATA = ("cache_extraction", "grafting", "quantization", "cultivation")
TITLES = {"peers": "Peers: graftsearch vs Optuna (NSGA-II, TPE), pymoo, random search, greedy, local search, the manual pick",
          "peers_gp": "Peers: Optuna's GPSampler at the smallest budget",
          "peers_cost": "Peers at mlp cost: wall-clock time to 0.95 and 0.99 of the exhaustive hypervolume",
          "search_quality": "Search quality: NSGA-II vs random search and greedy forward selection",
          "fitness_proxies": "Fitness proxies", "cache_extraction": "Cache extraction",
          "graft_vs_donor": "Graft vs donor at inference",
          "grafting": "Grafting: the pick against the cultivated donor, probes and the truncated donor",
          "quantization": "int8: float32 vs post-training vs quantisation-aware (graft and donor)",
          "cultivation": "Cultivation: the image store and the recipes",
          "startup": "Startup: the everyday commands beside `import torch`",
          "proxy_truth": "Fitness proxies judged by the final model"}
# Runs a benchmark's main() in a fresh interpreter, its tables going to OUT: modules that have
# no --out option write to their module-level RESULTS, which is pointed there first.
_RUN_ONE = """
import importlib, sys
from pathlib import Path
name, out = sys.argv[1], Path(sys.argv[2])
module = importlib.import_module("benchmarks." + name)
module.RESULTS = out
sys.exit(module.main(sys.argv[3:]) or 0)
"""
# The paper's own figures (knowledge-grafting.txt, Table 2, Table 3 and section 6).
PAPER = {"donor": {"params": 16_880_201, "mib": 64.39, "val": 0.8747, "test": None},
         "graft": {"params": 1_934_665, "mib": 7.38, "val": 0.8997, "test": 0.9045}}
PAPER_TABLE3 = [("Knowledge Grafting (paper)", "90.45", "92.64", "89.13", "1.93", "7.38"),
                ("Inception-v3", "95.1", "95.1", "93.3", "21.8", "83.8"),
                ("ResNet-50", "95.7", "95.7", "94.2", "25.6", "97.8"),
                ("EfficientNet V2", "97.03", "97.05", "96.01", "21.5", "82.7"),
                ("Vision Transformer", "95.37", "94.18", "93.97", "86.6", "330.4")]


def _table_date(md: Path):
    """When ``md`` was written, and how that is known: the time of the last commit that changed
    it while the file is as committed (a checkout gives every file the checkout's mtime), else
    the file's mtime."""
    try:
        git = dict(cwd=md.parent, capture_output=True, text=True, check=True, timeout=30)
        if not subprocess.run(["git", "status", "--porcelain", "--", md.name], **git).stdout.strip():
            when = subprocess.run(["git", "log", "-1", "--format=%ct", "--", md.name], **git).stdout.strip()
            if when:
                return datetime.fromtimestamp(int(when), timezone.utc), "committed"
    except (OSError, subprocess.SubprocessError):
        pass
    return datetime.fromtimestamp(md.stat().st_mtime, timezone.utc), "file time"


#: The benchmarks whose numbers come from graftsearch's search (grafting's runs search; the
#: quantization benchmark quantises those runs' grafts).
SEARCHING = ("search_quality", "peers", "peers_gp", "peers_cost", "grafting", "quantization")


def _search_changed():
    """(commit, time) of the last commit that changed the search's code, or None outside git."""
    last = last_commit(ROOT, "graftsearch/optimize")
    return None if last is None else (last[0][:7], datetime.fromtimestamp(last[1], timezone.utc))


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"  # the machine is shared: one BLAS thread per benchmark
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return env


def _available(name: str) -> bool:
    return (BENCH / f"{name}.py").is_file()


def _args_for(name: str, quick: bool) -> List[str]:
    args = list((QUICK_ARGS if quick else FULL_ARGS).get(name, []))
    if quick and "--quick" in args and "--quick" not in (BENCH / f"{name}.py").read_text():
        args.remove("--quick")  # a benchmark without a quick mode runs as it is
    return args


def run_benchmark(name: str, args: List[str], out: Path, log) -> dict:
    """Run one benchmark in a fresh process; return its record (status, seconds, command)."""
    command = " ".join(["python -m benchmarks." + name] + args)
    if name in NEEDS_DATA and not DATA.is_dir():
        log(f"[{name}] skipped: {DATA} is not there")
        return {"name": name, "command": command, "status": "skipped (no ../shared/data)", "seconds": 0.0}
    log(f"[{name}] {command}")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN_ONE, name, str(out), *args], cwd=ROOT, env=_env())
    seconds = time.perf_counter() - started
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    log(f"[{name}] {status} in {seconds:.0f} s")
    return {"name": name, "command": command, "status": status, "seconds": seconds}


# ---------------------------------------------------------------------------------------------
# RESULTS.md

def _machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores (shared with other jobs)"


def _demoted(text: str) -> str:
    """A benchmark's markdown one heading level down (it becomes a section of RESULTS.md)."""
    lines = []
    for line in text.splitlines():
        lines.append("#" + line if line.startswith("#") else line)
    return "\n".join(lines).strip()


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def worked_example(out: Path) -> Optional[Dict[str, Dict[str, float]]]:
    """Donor and kept graft of each seed of ``grafting.csv``, averaged over the seeds.

    The grafting benchmark's runs are the worked example's runs (``examples/plant_seedlings.py``
    builds the same settings); the graft of a seed is the variant its run kept (best on val).
    """
    import csv
    import statistics

    from benchmarks.grafting import ROWS, VARIANT_ROWS

    path = out / "grafting.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = {r["seed"]: r["kept"] for r in rows if r["row"] == "whole graftsearch run"}
    pairs = []
    for seed, variant in kept.items():
        donor = [r for r in rows if r["seed"] == seed and r["row"] == ROWS[0]]
        graft = [r for r in rows if r["seed"] == seed and r["row"] == VARIANT_ROWS.get(variant)]
        if donor and graft:
            pairs.append((donor[0], graft[0]))
    if not pairs:
        return None

    def mean(i: int, key: str) -> Optional[float]:
        vals = [float(p[i][key]) for p in pairs if p[i][key] not in ("", "nan")]
        return statistics.mean(vals) if vals else None

    keys = ("params", "size_mib", "val_accuracy", "test_accuracy", "test_f1_macro", "latency_ms")
    return {"seeds": len(pairs), "first_seed": pairs[0][1]["seed"], "taps": pairs[0][1]["taps"],
            "donor": {k: mean(0, k) for k in keys}, "graft": {k: mean(1, k) for k in keys}}


def paper_vs_ours(out: Path) -> List[str]:
    """The paper's Table 2 and 3 beside our worked example (donor vs kept graft)."""
    ours = worked_example(out)
    lines = ["## The paper's figures beside our worked example", "",
             "The paper: VGG16 donor cultivated on DeepWeeds (9 classes, 256 px), rootstock = taps "
             "block3_conv2, block3_conv3, block3_pool picked by hand (Table 2; accuracies from "
             "section 6). Ours: the runs of the grafting benchmark below, which are "
             "`examples/plant_seedlings.py` (the default path: EfficientNet-Lite0 cultivated with "
             "the standard recipe on plant seedlings, 12 classes, 128 px; the most accurate graft "
             "within 30% of the donor's parameters; fine-tuned, with and without distillation, the "
             "variant best on val kept; test split used once). Different donors and data sets: "
             "compare the shape of the trade-off, not the numbers.", ""]
    if ours is not None:
        g, d = ours["graft"], ours["donor"]
        ratio = d["latency_ms"] / g["latency_ms"] if d["latency_ms"] and g["latency_ms"] else None
        ours_note = (f"Ours: mean of {ours['seeds']} seed(s) of `grafting.csv` (the taps differ per "
                     f"seed; seed {ours['first_seed']} chose {ours['taps']}).")
    else:
        g = d = None
        ratio = None
        ours_note = ("**No worked example: `results/grafting.csv` is missing** (run "
                     "`python -m benchmarks --only grafting`).")
    vgg_ratio = _paper_pair_latency(out)
    rows = [("params", f"{PAPER['donor']['params']:,}", f"{PAPER['graft']['params']:,}",
             f"{d['params']:,.0f}" if d else "TBD", f"{g['params']:,.0f}" if g else "TBD"),
            ("size (MiB, float32)", f"{PAPER['donor']['mib']:.2f}", f"{PAPER['graft']['mib']:.2f}",
             f"{d['size_mib']:.2f}" if d else "TBD", f"{g['size_mib']:.2f}" if g else "TBD"),
            ("size reduction", "", f"{1 - PAPER['graft']['params'] / PAPER['donor']['params']:.2%} "
             f"({PAPER['donor']['params'] / PAPER['graft']['params']:.2f}x)", "",
             f"{1 - g['params'] / d['params']:.2%} ({d['params'] / g['params']:.2f}x)" if g else "TBD"),
            ("val accuracy", _pct(PAPER["donor"]["val"]), _pct(PAPER["graft"]["val"]),
             _pct(d["val_accuracy"]) if d else "TBD", _pct(g["val_accuracy"]) if g else "TBD"),
            ("test accuracy", "not reported", _pct(PAPER["graft"]["test"]),
             _pct(d["test_accuracy"]) if d else "TBD", _pct(g["test_accuracy"]) if g else "TBD"),
            ("latency donor / graft (CPU, batch 1)", "not reported",
             f"not reported (we measure {vgg_ratio} for this pair)" if vgg_ratio else "not reported", "",
             f"{ratio:.2f}x" if ratio else "TBD")]
    lines += ["| | paper donor (VGG16) | paper rootstock | our donor (EfficientNet-Lite0) | our kept graft |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows]
    lines += ["", ours_note, ""]
    lines += ["The paper's Table 3 (DeepWeeds) with our graft added (plant seedlings: another data set):", "",
              "| model | acc. (%) | prec. (%) | recall (%) | params (M) | size (MB) |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {' | '.join(r)} |" for r in PAPER_TABLE3]
    if g is not None:
        lines.append(f"| our graft (plant seedlings, test) | {100 * g['test_accuracy']:.2f} | "
                     f"F1 macro {100 * g['test_f1_macro']:.2f} | not measured | "
                     f"{g['params'] / 1e6:.2f} | {g['size_mib']:.2f} |")
    else:
        lines.append("| our graft | TBD | TBD | TBD | TBD | TBD |")
    lines.append("")
    return lines


def _paper_pair_latency(out: Path) -> Optional[str]:
    """donor / graft latency of the paper's VGG16 pair from graft_vs_donor.csv, if measured."""
    import csv

    path = out / "graft_vs_donor.csv"
    if not path.is_file():
        return None
    rows = {r["model"]: r for r in csv.DictReader(path.open()) if r["pair"].startswith("vgg16")}
    try:
        return f"{float(rows['donor']['latency_median_ms']) / float(rows['graft']['latency_median_ms']):.2f}x"
    except (KeyError, ValueError, ZeroDivisionError):
        return None


def headline(out: Path, stale: str = "") -> List[str]:
    """The peers' verdict on the targets, lifted to the top of the page; ``stale``, when the
    peers' table was made before the search's code last changed, says so above them."""
    md = out / "peers.md"
    if not md.is_file():
        return []
    text = md.read_text().split("\n## Targets\n", 1)
    if len(text) < 2:
        return []
    block = text[1].split("\n## ", 1)[0].strip()
    lines = ["## Targets (from the peer comparison below)", ""]
    if stale:
        lines += [f"These verdicts are of the search before its code last changed ({stale}); the "
                  "step table above says when each page was made.", ""]
    lines += [block]
    gp = out / "peers_gp.md"
    if gp.is_file():  # its verdict sentence, computed from its table
        found = re.search(r"^graftsearch is significantly better than GPSampler.*$", gp.read_text(), re.M)
        if found:
            lines.append(f"- Optuna's GPSampler at one budget (`peers_gp`): {found.group(0)}")
    return lines + [""]


def _cache_dir() -> Path:
    return Path(os.environ.get("GRAFTSEARCH_CACHE", Path.home() / ".cache" / "graftsearch"))


SECTIONS = ("grafting", "quantization", "cultivation", "peers", "peers_gp", "peers_cost", "search_quality",
            "fitness_proxies", "cache_extraction", "graft_vs_donor", "startup", "proxy_truth")


def write_results(out: Path, records: List[dict], *, command: str, total: float, quick: bool,
                  cold: bool) -> Path:
    ran = {r["name"] for r in records}
    lines = ["# graftsearch: benchmark results", "",
             f"Regenerated by `{command}` in {total / 60:.1f} min on {_machine()}, every benchmark in its "
             f"own process with 1 BLAS thread and the torch threads its section states (the machine is "
             f"shared: compare ratios measured side by side in one run, not absolute times across runs); "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Feature caches and exhaustive tables "
             f"live in $GRAFTSEARCH_CACHE ({'empty when this run started: everything was computed' if cold else 'reused where present'}).",
             ""]
    if quick:
        lines += ["**Quick mode: a smoke test of the harness on tiny settings. These are not the reported "
                  "numbers.**", ""]
    lines += ["| step | command | status | minutes |", "|---|---|---|---:|"]
    lines += [f"| {r['name']} | `{r['command']}` | {r['status']} | {r['seconds'] / 60:.1f} |" for r in records]
    changed = _search_changed()
    stale_peers = ""
    for name in SECTIONS:
        md = out / f"{name}.md"
        if name not in ran and md.is_file():  # --only: the other sections are an earlier run's
            stamp, how = _table_date(md)
            used = re.search(r"Command: `([^`]+)`", md.read_text())
            command = used.group(1) if used else " ".join(
                ["python -m benchmarks." + name] + FULL_ARGS.get(name, []))
            stale = ""
            if name in SEARCHING and changed is not None and stamp < changed[1]:
                if name == "peers":
                    stale_peers = f"commit {changed[0]}"
                stale = (f"; made **before** the search's code last changed (commit {changed[0]}, "
                         f"{changed[1]:%Y-%m-%d %H:%M} UTC), so its graftsearch numbers are the "
                         "earlier search's")
            lines.append(f"| {name} | `{command}` | not run this time: its table of "
                         f"{stamp:%Y-%m-%d %H:%M} UTC ({how}) is shown{stale} | |")
    lines += ["", "Raw numbers: `benchmarks/results/*.csv`; each section below is that benchmark's own "
              "`results/<name>.md` (command, settings, machine, threads, seeds).", ""]
    lines += headline(out, stale_peers)
    lines += paper_vs_ours(out)
    for name in SECTIONS:
        md = out / f"{name}.md"
        if md.is_file():
            lines += [_demoted(md.read_text()), ""]
        elif _available(name):
            lines += [f"## {TITLES[name]}", "", "No table: this benchmark did not run or failed (see above).", ""]
    # the reported page sits beside results/; any other --out gets its own page
    path = BENCH / "RESULTS.md" if out == RESULTS.resolve() else out / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test of the harness on tiny settings")
    parser.add_argument("--out", default=None,
                        help="where the tables go (default: benchmarks/results; --quick: a temporary directory)")
    parser.add_argument("--only", default=None, help="comma-separated benchmarks to run (default: all)")
    parser.add_argument("--page-only", action="store_true",
                        help="run nothing: rebuild RESULTS.md from the tables already in --out")
    args = parser.parse_args(argv)
    if args.out is not None:
        out = Path(args.out).resolve()
    elif args.quick:
        out = Path(tempfile.mkdtemp(prefix="graftsearch-bench-quick-"))
    else:
        out = RESULTS
    if args.quick and out == RESULTS.resolve():
        parser.error("--quick must not write over benchmarks/results; pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in ORDER if _available(n)]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in ORDER]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(ORDER)}")
        names = [n for n in names if n in wanted]
    if args.page_only:
        names = []

    def log(message: str) -> None:
        print(message, flush=True)

    cold = not _cache_dir().exists()
    started = time.perf_counter()
    records = [run_benchmark(name, _args_for(name, args.quick), out, log) for name in names]
    total = time.perf_counter() - started
    command = " ".join(["python -m benchmarks"] + list(argv if argv is not None else sys.argv[1:]))
    path = write_results(out, records, command=command, total=total, quick=args.quick, cold=cold)
    log(f"wrote {path} ({total / 60:.1f} min)")
    return 0 if all(not r["status"].startswith("failed") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
