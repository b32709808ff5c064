"""Smoke tests of the benchmark harness (``python -m benchmarks --quick``) and the peers harness.

Tiny generated problems only: these check that the harness runs and measures what it claims,
not the reported numbers (those come from the full run, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the repository, not an installed package

pytest.importorskip("optuna")
pytest.importorskip("pymoo")

from benchmarks import peers  # noqa: E402
import benchmarks.__main__ as bench_main  # noqa: E402
from benchmarks._problems import (Objective, exhaustive_table, hv_of, mask_of,  # noqa: E402
                                  synthetic_problem)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 7-tap generated problem (127 selections) and its exhaustive table, in a private cache."""
    import benchmarks._problems as problems

    saved = problems.TABLES
    problems.TABLES = tmp_path_factory.mktemp("tables")
    try:
        problem = synthetic_problem(n_taps=7, name="tiny", sizes=(300, 200))
        table, _ = exhaustive_table(problem, log=lambda m: None)
    finally:
        problems.TABLES = saved
    manual = mask_of(problem.manual)
    return problem, table, (Objective.min_size(float(table[manual])), Objective.max_accuracy(problem.size(manual)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["GRAFTSEARCH_CACHE"] = env.get("GRAFTSEARCH_CACHE", str(Path.home() / ".cache" / "graftsearch"))
    return env


@pytest.mark.parametrize("tool", peers.TOOLS)
def test_smaller_budget_is_a_prefix_of_the_larger(tiny, tool):
    # the peers table reads budgets 1-10% off one run at 10%: valid only if a run with a
    # smaller budget makes exactly the first calls of the longer run
    problem, table, objectives = tiny
    for objective in objectives:
        long, _, _, _ = peers.run_tool(tool, problem, objective, table, 40, seed=3)
        short, _, _, _ = peers.run_tool(tool, problem, objective, table, 17, seed=3)
        assert short.n == 17
        assert list(short.calls) == list(long.calls)[:17]


def test_tools_respect_the_budget_and_graftsearch_never_repeats(tiny):
    problem, table, objectives = tiny
    for objective in objectives:
        for tool in peers.TOOLS:
            meter, asks, wall, _ = peers.run_tool(tool, problem, objective, table, 30, seed=0)
            assert meter.n <= 30 and wall > meter.seconds > 0
            calls = list(meter.calls)
            if objective.kind == "max-accuracy":
                # nothing over size_max is ever trained, by any tool
                assert all(problem.size(m) <= objective.limit for m in calls)
            if tool != "greedy":
                assert meter.n == 30
            if tool == "graftsearch":
                assert len(set(calls)) == len(calls)


def test_meter_answers_repeats_free_and_stops_a_tool_at_its_budget(tiny):
    problem, table, _ = tiny
    meter = peers.Meter(table, "k", budget=2)
    assert meter.p(1) == meter.p(1) == float(table[1])  # the repeat costs no budget
    meter.p(2)
    assert meter.p(1) == float(table[1]) and meter.repeats == 2
    with pytest.raises(peers.BudgetSpent):
        meter.p(3)
    assert list(meter.calls) == [1, 2]


def test_time_to_a_hypervolume_is_the_first_prefix_that_reaches_it(tiny):
    from benchmarks import peers_cost
    from benchmarks._problems import hv_of

    problem, table, objectives = tiny
    for objective in objectives:
        meter, _, wall, _ = peers.run_tool("graftsearch", problem, objective, table, 40, seed=1)
        calls = [int(m) for m in meter.calls]
        # the tool's own time before each evaluation grows and stays within its wall time
        stamps = meter.stamps[:meter.n]
        assert (np.diff(stamps) >= 0).all() and 0 <= stamps[0] and stamps[-1] < wall
        whole = hv_of(calls, problem, table, objective, at_constraint=True)
        for share in (0.5, 0.9, 1.0):
            k = peers_cost.first_reaching(calls, problem, table, objective, share * whole)
            scan = next(j for j in range(1, len(calls) + 1)
                        if hv_of(calls[:j], problem, table, objective, at_constraint=True) >= share * whole)
            assert k == scan
        assert peers_cost.first_reaching(calls, problem, table, objective, whole * 1.01 + 1e-9) is None


def test_the_peers_discussion_names_a_tool_that_beats_graftsearch_and_each_ablation():
    import pandas as pd

    rows, runs = [], []
    for seed in range(10):
        for tool, hv in (("graftsearch", 0.90), ("greedy", 0.95), ("graftsearch-no-screen", 0.85)):
            rows.append({"problem": "p", "objective": "min-size", "budget_pct": 1, "budget": 100, "tool": tool,
                         "seed": seed, "hv_c_fraction": hv + seed * 1e-4, "hv_fraction": hv})
            runs.append({"problem": "p", "objective": "min-size", "tool": tool, "seed": seed,
                         "fitness_calls": 100, "generations": 4, "overhead_us_per_call": 10.0,
                         "asks": 120, "cache_repeats": 3})
    runs.append(dict(runs[0], tool="graftsearch+files"))
    text = "\n".join(peers.discussion(pd.DataFrame(rows), pd.DataFrame(runs),
                                      [{"problem": "p", "n": 6, "ms_per_eval": 1.0}]))
    assert "worse in 1: greedy 1 times, at budgets 1%" in text
    assert "(initial='random')" in text
    assert "Ablation `graftsearch-no-screen`**, screen=0" in text and "worse in 1" in text


def test_a_tie_where_both_tools_reach_the_whole_front_says_so():
    """At a budget where graftsearch and an NSGA-II peer both reach the exhaustive front's
    hypervolume in every seed, the target line says that no tool can be better there; a tie
    short of it says nothing more."""
    import pandas as pd

    rows = []
    for seed in range(10):
        for tool, pct, hv in (("graftsearch", 1, 1.0), ("pymoo", 1, 1.0),
                              ("graftsearch", 2, 0.99 + seed * 1e-4), ("pymoo", 2, 0.99 + seed * 1e-4)):
            rows.append({"problem": "p", "objective": "min-size", "budget_pct": pct, "budget": 100,
                         "tool": tool, "seed": seed, "hv_c_fraction": hv, "hv_fraction": hv})
    runs = pd.DataFrame([{"problem": "p", "objective": "min-size", "tool": t, "seed": 0,
                          "overhead_us_per_call": 1.0} for t in ("graftsearch",) + peers.PEERS])
    lines = peers.verdicts(pd.DataFrame(rows), runs)
    at = {pct: next(x for x in lines if f"at {pct}%" in x and "pymoo" in x) for pct in (1, 2)}
    assert "both reached the exhaustive front's hypervolume in every seed" in at[1]
    assert "both reached" not in at[2]


def test_local_search_finds_the_best_neighbour_of_the_best_single_tap():
    """A hand-made 4-tap problem: P is the number of taps chosen among {1, 2}, minus 0.1 per
    other tap; min-size with p_min 2 is met only by taps {1, 2}, one flip from tap 1 or 2."""
    from benchmarks._problems import Objective, local_search

    class Four:
        n = 4
        size_ref = 4.0

        def size(self, m):
            return float(bin(m).count("1"))

    def p(m):
        return float((m & 1) + (m >> 1 & 1)) - 0.1 * bin(m >> 2).count("1")

    asked = []
    found = local_search(Four(), lambda m: asked.append(m) or p(m), 12, 0, Objective.min_size(2.0))
    assert asked[:4] == [1, 2, 4, 8]  # every single tap first
    assert 3 in found and asked.index(3) <= 7  # then the best single's improving neighbour
    assert len(set(asked)) == len(asked)  # never the same selection twice


def test_hypervolume_fraction_of_the_exhaustive_front_is_one_and_of_a_subset_less(tiny):
    problem, table, objectives = tiny
    every = range(1, 2**problem.n)
    for objective in objectives:
        whole = hv_of(every, problem, table, objective)
        assert whole > 0
        assert hv_of([mask_of(problem.manual)], problem, table, objective) < whole


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`python -m benchmarks --quick` once (about 2 minutes on 2 cores): every module, tiny
    settings (the grafting benchmark cultivates, searches and fine-tunes, so it takes longest)."""
    out = tmp_path_factory.mktemp("quick")
    reported = ROOT / "benchmarks" / "results"
    before = {p.name: p.stat().st_mtime_ns for p in reported.glob("*")} if reported.is_dir() else {}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=1500)
    after = {p.name: p.stat().st_mtime_ns for p in reported.glob("*")} if reported.is_dir() else {}
    return out, proc, before, after


def test_quick_run_writes_every_table_and_leaves_the_reported_ones_alone(quick_run):
    out, proc, before, after = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = ["search_quality", "graft_vs_donor", "peers", "peers_gp", "peers_cost", "startup",
             "proxy_truth"]
    has_data = (ROOT.parent / "shared" / "data" / "plant-seedlings" / "images").is_dir()
    if has_data:
        names += ["cache_extraction", "grafting", "quantization", "cultivation"]
    for name in names:
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").is_file(), name
    assert (out / "peers_runs.csv").is_file()
    assert after == before  # quick mode never writes over benchmarks/results

    results = (out / "RESULTS.md").read_text()
    assert "Quick mode" in results
    steps = results.split("Raw numbers")[0]
    assert "failed" not in steps
    for name in names:
        assert f"python -m benchmarks.{name}" in steps
    assert "3 of the 3 commands that need no donor" in (out / "startup.md").read_text()
    truth = (out / "proxy_truth.md").read_text()
    assert "| fast (lda) |" in truth and "| LogME |" in truth and "| fast (logistic) |" in truth
    assert "min-size pick / table's size" in truth
    assert "the target (spearman" in truth.lower() or "meets the target" in truth
    assert "### The logistic probe's settings" in truth
    assert set(bench_main.SECTIONS) == set(bench_main.ORDER)  # every benchmark has its section
    for heading in ("## Targets", "## The paper's figures beside our worked example", "## Peers:",
                    "## Peers at mlp cost",
                    "## Search quality", "## Graft vs donor", "| params | 16,880,201 | 1,934,665 |"):
        assert heading in results, heading
    if has_data:  # the grafting runs fill the worked example's column
        assert "## Grafting" in results and "| our graft (plant seedlings, test) |" in results
        assert "## Cultivation" in results and "ImageFolder + DataLoader, 2 workers" in results
        int8 = (out / "quantization.md").read_text()
        for row in ("| graft | float32 |", "| graft | PTQ |", "| graft | QAT |",
                    "| graft | PTQ (ONNX Runtime) |", "| graft | kept by --quantize qat |"):
            assert row in int8, row
        assert "The graft's PTQ copy: test accuracy" in int8


def test_peers_gp_render_compares_the_saved_runs_with_the_current_peers_csv(quick_run, tmp_path):
    import shutil

    from benchmarks import peers_gp

    out, proc, _, _ = quick_run
    assert proc.returncode == 0
    here = tmp_path / "results"
    shutil.copytree(out, here)
    assert peers_gp.main(["--out", str(here), "--render"]) == 0
    again = (here / "peers_gp.md").read_text()
    assert "Written again by `python -m benchmarks.peers_gp --render`" in again
    # the same runs, so the same table
    assert again.split("| problem |")[1] == (out / "peers_gp.md").read_text().split("| problem |")[1]
    # graftsearch's runs changed: the page follows them, GPSampler's runs stay as saved
    ours = (here / "peers.csv").read_text().splitlines()
    columns = ours[0].split(",")
    tool, hv = columns.index("tool"), columns.index("hv_c_fraction")
    rows = [line.split(",") for line in ours[1:]]
    for row in rows:
        if row[tool] == "graftsearch":
            row[hv] = "0.0"
    (here / "peers.csv").write_text("\n".join([ours[0]] + [",".join(r) for r in rows]) + "\n")
    assert peers_gp.main(["--out", str(here), "--render"]) == 0
    page = (here / "peers_gp.md").read_text()
    assert page != (out / "peers_gp.md").read_text()
    assert "0.0000 ± 0.0000" in page
    (here / "peers_gp_meta.json").unlink()
    assert peers_gp.main(["--out", str(here), "--render"]) == 1


def test_quick_peers_table_measures_every_tool_and_objective(quick_run):
    out, proc, _, _ = quick_run
    assert proc.returncode == 0
    rows = list(csv.DictReader((out / "peers.csv").open()))
    assert {r["tool"] for r in rows} == set(peers.TOOLS)
    assert {r["objective"] for r in rows} == {"min-size", "max-accuracy"}
    assert {float(r["budget_pct"]) for r in rows} == set(peers.QUICK_BUDGET_PCTS)
    assert len({r["seed"] for r in rows}) == 2
    hv = np.array([float(r["hv_fraction"]) for r in rows])
    assert ((hv >= 0) & (hv <= 1 + 1e-9)).all()
    runs = list(csv.DictReader((out / "peers_runs.csv").open()))
    assert {r["tool"] for r in runs} == set(peers.TOOLS) | {"graftsearch+files"}
    ours = [r for r in runs if r["tool"] == "graftsearch"]
    assert all(int(r["wasted_calls"]) == 0 for r in runs)  # one cache: a repeat is never a call
    assert all(int(r["cache_repeats"]) == 0 for r in ours)  # its archive answers its repeats
    assert {"hv_c_fraction"} <= set(rows[0])
    assert all(float(r["overhead_us_per_call"]) > 0 for r in runs)
    # peak memory is measured once per tool and objective (seed 0)
    measured = [r for r in runs if r["peak_kib"] not in ("", "nan")]
    assert {(r["tool"], r["objective"], r["seed"]) for r in measured} == \
        {(t, o, "0") for t in peers.TOOLS for o in ("min-size", "max-accuracy")}


def test_peers_page_renders_again_from_what_the_run_saved(quick_run, tmp_path):
    import shutil

    out = quick_run[0]
    for name in ("peers.csv", "peers_runs.csv", "peers_meta.json"):
        shutil.copy(out / name, tmp_path / name)
    assert peers.main(["--render", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "peers.md").read_text() == (out / "peers.md").read_text()
    (tmp_path / "peers_meta.json").unlink()
    assert peers.main(["--render", "--out", str(tmp_path)]) == 2  # nothing to render from


def test_quick_refuses_to_write_over_the_reported_tables():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out",
                           str(ROOT / "benchmarks" / "results")], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "must not write over benchmarks/results" in proc.stderr


def test_worked_example_is_the_mean_of_each_seeds_donor_and_kept_variant(tmp_path):
    from benchmarks.__main__ import paper_vs_ours, worked_example
    from benchmarks.grafting import COLUMNS, ROWS, VARIANT_ROWS

    def row(seed, name, params, val, test, latency):
        return {"seed": seed, "row": name, "taps": "3;5", "params": params,
                "size_mib": params * 4 / 2**20, "macs": 1, "latency_ms": latency,
                "val_accuracy": val, "test_accuracy": test, "test_f1_macro": test, "seconds": 1}

    rows = [row(0, ROWS[0], 1000, 0.8, 0.7, 10.0), row(0, VARIANT_ROWS["head_only"], 300, 0.5, 0.5, 4.0),
            row(0, VARIANT_ROWS["distilled"], 300, 0.9, 0.8, 4.0),
            row(1, ROWS[0], 1000, 0.6, 0.5, 10.0), row(1, VARIANT_ROWS["fine_tuned"], 200, 0.7, 0.6, 6.0),
            {"seed": 0, "row": "whole graftsearch run", "kept": "distilled"},
            {"seed": 1, "row": "whole graftsearch run", "kept": "fine_tuned"}]
    with open(tmp_path / "grafting.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS + ["kept", "size_max"])
        w.writeheader()
        w.writerows(rows)
    ours = worked_example(tmp_path)
    assert ours["seeds"] == 2
    assert ours["donor"]["test_accuracy"] == pytest.approx(0.6)
    assert ours["graft"]["test_accuracy"] == pytest.approx(0.7)  # the kept variants only
    assert ours["graft"]["params"] == pytest.approx(250)
    page = "\n".join(paper_vs_ours(tmp_path))
    assert "| test accuracy | not reported | 90.45% | 60.00% | 70.00% |" in page
    assert "| latency donor / graft (CPU, batch 1) | not reported | not reported |  | 2.00x |" in page


def test_local_search_ends_when_everything_within_the_size_limit_is_evaluated():
    from benchmarks._problems import Objective, local_search

    class Five:
        n = 5
        size_ref = 5.0

        def size(self, m):
            return float(bin(m).count("1"))

    asked = []
    found = local_search(Five(), lambda m: asked.append(m) or 0.1 * bin(m).count("1"), 100, 0,
                         Objective.max_accuracy(1.0))
    assert sorted(found) == [1, 2, 4, 8, 16] and len(asked) == 5  # all that fits, then it stops


def test_int8_verdicts_count_the_seeds_that_meet_each_target_on_their_own():
    from benchmarks import quantization

    def row(seed, variant, test, mib, ms):
        return {"seed": seed, "model": "graft", "variant": variant, "test_accuracy": test,
                "val_accuracy": test, "file_mib": mib, "stored_mib": mib, "latency_ms": ms}

    # seed 1's QAT copy loses 1.5 pp and is slower; the means still meet both targets
    rows = [row(0, "float32", 0.90, 4.0, 10.0), row(0, "QAT", 0.91, 1.0, 5.0),
            row(1, "float32", 0.90, 4.0, 10.0), row(1, "QAT", 0.885, 1.0, 11.0)]
    text = quantization._verdicts(rows)
    assert ("0.25 pp lost; target: at most 1 pp lost, met by the mean; seeds meeting it: 1 of 2, "
            "not seed 1)") in text
    assert "4.00x smaller (target >= 3.5x: met by the mean; seeds meeting it: 2 of 2, 4.00x" in text
    assert ("latency 8.00 ms against 10.00 ms (target <= float32's: met by the mean; seeds "
            "meeting it: 1 of 2, not seed 1)") in text
    one = quantization._verdicts([r for r in rows if r["seed"] == 0])
    assert "1.00 pp gained; target: at most 1 pp lost, met)" in one  # one seed: no count


def test_int8_kept_row_is_the_copy_the_librarys_rule_keeps_by_val():
    from benchmarks import quantization

    def row(seed, variant, val, test, seconds=float("nan")):
        return {"seed": seed, "model": "graft", "variant": variant, "val_accuracy": val,
                "test_accuracy": test, "file_mib": 1.0, "stored_mib": 1.0, "latency_ms": 1.0,
                "seconds": seconds, "recipe": variant}

    rows = [  # seed 0: PTQ loses 3 pp on val, QAT is better there (worse on test: test decides nothing)
            row(0, "float32", 0.90, 0.90), row(0, "PTQ", 0.87, 0.89, 10.0), row(0, "QAT", 0.89, 0.85, 30.0),
            # seed 1: PTQ within 1 pp on val: no fine-tune would run, though QAT's row is better
            row(1, "float32", 0.90, 0.90), row(1, "PTQ", 0.895, 0.88, 11.0), row(1, "QAT", 0.90, 0.90, 31.0),
            # seed 2: QAT ran and was worse on val: PTQ stays
            row(2, "float32", 0.90, 0.90), row(2, "PTQ", 0.85, 0.86, 12.0), row(2, "QAT", 0.84, 0.90, 32.0)]
    kept = {r["seed"]: r for r in quantization.shipped_rows(rows)}
    assert {s: r["kept"] for s, r in kept.items()} == {0: "QAT", 1: "PTQ", 2: "PTQ"}
    assert [kept[s]["test_accuracy"] for s in (0, 1, 2)] == [0.85, 0.88, 0.86]
    assert [kept[s]["seconds"] for s in (0, 1, 2)] == [40.0, 11.0, 44.0]  # the fine-tune's time counts when it runs
    assert {r["variant"] for r in kept.values()} == {quantization.SHIPPED}
    text = quantization._kept_sentence(rows + list(kept.values()))
    assert "seed 1: PTQ (PTQ loses 0.50 pp on val, within 1 pp, so no fine-tune runs)" in text
    assert "seed 2: PTQ (PTQ loses 5.00 pp on val, so QAT runs and reaches 84.00%" in text


def test_int8_library_choice_counts_every_target_per_seed_and_breaks_ties_by_latency():
    from benchmarks import quantization

    def row(seed, variant, test, mib, ms, **extra):
        return {"seed": seed, "model": "graft", "variant": variant, "test_accuracy": test,
                "val_accuracy": test, "file_mib": mib, "stored_mib": mib, "latency_ms": ms,
                "seconds": 1.0, **extra}

    rows = []
    for seed in (0, 1):
        rows += [row(seed, "float32", 0.90, 4.0, 8.0), row(seed, "PTQ", 0.895, 1.0, 4.0),
                 row(seed, "float32 (ONNX Runtime)", 0.90, 4.0, 3.0),
                 # ONNX Runtime: accurate and fast, but its file is only 3x smaller
                 row(seed, "PTQ (ONNX Runtime)", 0.90, 4.0 / 3, 2.0),
                 row(seed, "float32 (torch.compile)", 0.90, float("nan"), 9.0),
                 row(seed, "PTQ (torchao PT2E)", 0.90 if seed == 0 else 0.88, 1.0, 8.5,
                     torchscript_float32_ms=8.0)]
    rows += quantization.shipped_rows(rows)
    text = " ".join(quantization._library_choice(rows))
    assert ("ONNX Runtime's static quantiser (no quantisation-aware fine-tune), on the same "
            "calibration images: test accuracy 90.00% (within 1 pp of float32 on 2 of 2 seeds), a "
            "file 3.00x smaller than the float32 TorchScript file (>= 3.5x on 0), 2.00 ms per image "
            "against its own runtime's float32 3.00 ms (no slower on 2).") in text
    assert ("(within 1 pp of float32 on 1 of 2 seeds), a file 4.00x smaller than the float32 "
            "TorchScript file (>= 3.5x on 2), 8.50 ms per image against its own runtime's float32 "
            "9.00 ms (no slower on 2) and the float32 TorchScript file's 8.00 ms") in text
    assert ("Seeds on which every target holds: torch.ao (the copy `--quantize qat` keeps) on 2, "
            "ONNX Runtime's static quantiser on 0, torchao's PT2E quantiser on 1 of 2; graftsearch "
            "ships torch.ao's int8, the one path that meets them on the most seeds.") in text
    # torchao on both seeds: a tie, decided by latency
    rows = [dict(r, test_accuracy=0.90) if r["variant"] == "PTQ (torchao PT2E)" else r
            for r in rows]
    text = " ".join(quantization._library_choice(rows))
    assert ("meets them on as many seeds as torchao's PT2E quantiser, and runs fastest of these "
            "(4.00 ms per image against 8.50 ms).") in text


def test_a_searching_section_older_than_the_search_code_is_marked_so(tmp_path):
    import os

    changed = bench_main._search_changed()
    assert changed is not None  # the tests run in a clone: git knows the search's last change
    for name, when in (("peers", changed[1].timestamp() - 3600), ("grafting", changed[1].timestamp() + 3600),
                       ("cultivation", changed[1].timestamp() - 3600)):
        md = tmp_path / f"{name}.md"
        md.write_text(f"# {name}\n\nCommand: `python -m benchmarks.{name}`.\n\n## Targets\n\n- a verdict\n")
        os.utime(md, (when, when))
    page = bench_main.write_results(tmp_path, [], command="python -m benchmarks --page-only", total=0.0,
                                    quick=False, cold=False).read_text()
    # the targets lifted to the top say that they are the earlier search's
    targets = page.split("## Targets (from the peer comparison below)")[1].split("- a verdict")[0]
    assert f"These verdicts are of the search before its code last changed (commit {changed[0]})" in targets
    rows = {line.split(" | ")[0].strip("| "): line for line in page.splitlines()
            if line.startswith("| ") and "not run this time" in line}
    assert "before** the search's code last changed" in rows["peers"]
    assert changed[0] in rows["peers"]
    assert "before" not in rows["grafting"]
    assert "before" not in rows["cultivation"]  # it does not search
    fresh = changed[1].timestamp() + 3600
    os.utime(tmp_path / "peers.md", (fresh, fresh))
    page = bench_main.write_results(tmp_path, [], command="python -m benchmarks --page-only", total=0.0,
                                    quick=False, cold=False).read_text()
    assert "- a verdict" in page and "These verdicts are of the search before" not in page


def test_grafting_keeps_a_seeds_rows_only_for_the_same_settings_and_graftsearch(tmp_path, monkeypatch):
    import benchmarks.grafting as grafting

    stamp = {"threads": 2, "run": {"seed": 1, "size_max": "30%"}}
    rows = [{"seed": 1, "row": "cultivated donor", "test_accuracy": np.float64(0.9)}]
    path = tmp_path / "kept" / "seed1.json"
    assert grafting.kept_rows(path, stamp, "abc") is None  # nothing kept yet
    grafting.keep_rows(path, stamp, "abc", rows)
    assert grafting.kept_rows(path, stamp, "abc") == [{"seed": 1, "row": "cultivated donor",
                                                        "test_accuracy": 0.9}]
    assert grafting.kept_rows(path, dict(stamp, threads=1), "abc") is None
    assert grafting.kept_rows(path, stamp, "def") is None

    # which graftsearch measured them: the last commit under graftsearch/, none while it has changes
    repo = tmp_path / "repo"
    (repo / "graftsearch").mkdir(parents=True)
    (repo / "graftsearch" / "a.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.setattr(grafting, "ROOT", repo)
    assert grafting._package_commit() == head
    (repo / "other.txt").write_text("not the package\n")
    assert grafting._package_commit() == head
    (repo / "graftsearch" / "a.py").write_text("x = 2\n")
    assert grafting._package_commit() is None
