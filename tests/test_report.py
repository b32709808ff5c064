"""report.md and its plots, rebuilt from a run directory's files alone (acceptance 4)."""

import itertools
import json
import re

import pandas as pd
import pytest

import graftsearch as gs
from graftsearch._cli import main
from graftsearch.optimize._runfiles import COLUMNS, load_run
from graftsearch.graft._record import read_metrics
from graftsearch.optimize._result import order_front
from graftsearch._utils import labels as L
from graftsearch.report._plots import draw_convergence, draw_pareto
from graftsearch.report._report import (front_source, pick_best, read_refined, report_points,
                                        size_limit)


def _front(frame):
    keep = []
    feas = frame[frame["feasible"]]
    for i, r in feas.iterrows():
        dominated = ((feas["params"] <= r["params"]) & (feas["val_accuracy"] >= r["val_accuracy"])
                     & ((feas["params"] < r["params"]) | (feas["val_accuracy"] > r["val_accuracy"])))
        if not dominated.any():
            keep.append(i)
    return frame.loc[keep]


def write_fake_run(run_dir, *, n_taps=6, p_min=0.6, objective="min-size", size_max=None,
                   metrics=None):
    """A run directory with the files of DESIGN.md, from a made-up problem (deterministic)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, combo in enumerate(c for r in range(1, n_taps + 1)
                              for c in itertools.combinations(range(1, n_taps + 1), r)):
        params = 1000 * max(combo) ** 2 + 100 * len(combo)
        acc = min(0.95, 0.3 + 0.08 * max(combo) + 0.02 * len(combo))
        feasible = acc >= p_min if objective == "min-size" else params <= size_limit(size_max, "params")
        rows.append({"bits": "".join("1" if i in combo else "0" for i in range(1, n_taps + 1)),
                     "taps": ";".join(map(str, combo)), "n_taps": len(combo),
                     "deepest_tap": max(combo), "params": params, "size_mib": params * 4 / 2**20,
                     "macs": params * 50, "val_accuracy": acc, "val_loss": 1 - acc,
                     "feasible": feasible,
                     "violation": 0.0 if feasible else max(0.0, p_min - acc),
                     "generation": k % 4, "evaluated_at": f"2025-01-01T00:00:{k % 60:02d}"})
    evaluations = pd.DataFrame(rows, columns=list(COLUMNS))
    evaluations.to_csv(run_dir / "evaluations.csv", index=False)
    pareto = _front(evaluations).assign(rank=1)
    pareto.to_csv(run_dir / "pareto.csv", index=False)
    conv = pd.DataFrame({"generation": [0, 1, 2, 3], "evaluations": [16, 32, 48, len(rows)],
                         "hypervolume": [0.1, 0.2, 0.25, 0.26], "best_bits": ["000100"] * 4,
                         "best_size": [16400, 9200, 9200, 9200],
                         "best_val_accuracy": [0.64, 0.62, 0.62, 0.62], "n_feasible": [5, 9, 12, 14],
                         "elapsed_s": [1.0, 2.0, 3.0, 4.0]})
    conv.to_csv(run_dir / "convergence.csv", index=False)
    pd.DataFrame({"index": range(1, n_taps + 1), "name": [f"features.{i}" for i in range(n_taps)]}
                 ).to_csv(run_dir / "taps.csv", index=False)
    config = {"search": {"objective": objective, "p_min": p_min, "size_max": size_max,
                         "size_metric": "params", "seed": 0},
              "donor": {"name": "tiny"}, "versions": {"graftsearch": gs.__version__}}
    (run_dir / "config.json").write_text(json.dumps(config))
    if metrics is not None:
        (run_dir / "best").mkdir(exist_ok=True)
        (run_dir / "best" / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


METRICS = {
    "bits": "000101", "taps": "4;6", "tap_names": ["features.3", "features.5"],
    "class_names": ["a", "b"],
    "donor": {"name": "tiny", "params": 100000, "size_mib": 0.38, "macs": 5_000_000,
              "val": {"accuracy": 0.7, "loss": 0.8}, "test": {"accuracy": 0.68, "loss": 0.85}},
    "graft": {"params": 36600, "size_mib": 0.14, "val": {"accuracy": 0.82, "loss": 0.5},
              "test": {"accuracy": 0.8, "loss": 0.55, "n": 10, "precision_macro": 0.81,
                       "roc_auc_macro": 0.9},
              "per_class": [{"class": "a", "precision": 0.8, "recall": 0.8, "f1": 0.8,
                             "roc_auc": 0.9, "support": 5},
                            {"class": "b", "precision": 0.8, "recall": 0.8, "f1": 0.8,
                             "roc_auc": 0.9, "support": 5}],
              "confusion": [[4, 1], [1, 4]]},
    "size_reduction": {"params": 63400, "factor": 2.73, "percent": 63.4},
    "latency": {"graft": {"median_ms": 1.5, "p90_ms": 2.0, "runs": 20, "warmup": 3, "threads": 1},
                "donor": {"median_ms": 3.0, "p90_ms": 3.5}, "ratio": 2.0},
    "memory": {"graft": {"loaded_mib": 0.5, "peak_mib": 2.0},
               "donor": {"loaded_mib": 1.0, "peak_mib": 4.0}},
    "int8": {"float32_mib": 0.14, "int8_mib": 0.05, "float32_test_accuracy": 0.8,
             "int8_test_accuracy": 0.79, "engine": "x86", "calibration_images": 32},
}


def test_report_and_plots_from_files_alone(tmp_path):
    run = write_fake_run(tmp_path / "run", metrics=METRICS)
    path = gs.write_report(run)
    text = path.read_text()
    for png in ("pareto.png", "convergence.png"):
        data = (run / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({png})" in text
    assert "| Total parameters | 100,000 | 36,600 | 63,400 |" in text
    assert "| final test accuracy | 68.00% | 80.00% |  |" in text
    assert "**2.73x smaller**" in text and "63.40% fewer parameters" in text
    assert "| a | 4 | 1 |" in text  # confusion matrix
    assert "| Serialized size (MiB) | 0.14 | 0.05 |" in text
    assert "4;6 (chosen)" in text
    # the same files give the same report, byte for byte (plots included)
    before = {p: (run / p).read_bytes() for p in ("report.md", "pareto.png", "convergence.png")}
    for p in before:
        (run / p).unlink()
    assert main(["report", str(run)]) == 0
    assert {p: (run / p).read_bytes() for p in before} == before


def test_report_before_final_training_shows_best_pick(tmp_path):
    run = write_fake_run(tmp_path / "run", p_min=0.6)
    text = gs.write_report(run).read_text()
    # smallest feasible: acc = 0.3 + 0.08 * deepest + 0.02 * n >= 0.6 first for taps 1, 2, 3
    assert "Best pick of the search (not yet trained and tested): taps **1;2;3**" in text
    assert "Donor vs rootstock" not in text


def test_report_for_max_accuracy_draws_size_limit(tmp_path):
    run = write_fake_run(tmp_path / "run", objective="max-accuracy", size_max="20k")
    files = load_run(run)
    best = pick_best(files.pareto, "max-accuracy")
    assert best["params"] <= 20000 and best["val_accuracy"] == files.pareto[
        files.pareto["params"] <= 20000]["val_accuracy"].max()
    assert "params <= size_max = 20k" in gs.write_report(run).read_text()


def test_bits_keep_leading_zeros(tmp_path):
    run = write_fake_run(tmp_path / "run")
    assert load_run(run).evaluations["bits"].iloc[0] == "100000"


@pytest.mark.parametrize("value,metric,expected", [("2M", "params", 2e6), ("1934665", "params", 1934665),
                                                   ("7.5MiB", "params", 7.5 * 2**18),
                                                   ("7.5MiB", "size_mib", 7.5), (7.38, "size_mib", 7.38)])
def test_size_limit_units(value, metric, expected):
    assert size_limit(value, metric) == pytest.approx(expected)


def test_report_missing_run_dir(tmp_path):
    with pytest.raises(gs.ParameterError, match="The 'run_dir' parameter must be an existing run directory"):
        gs.write_report(tmp_path / "nope")


def test_report_missing_csv(tmp_path):
    run = write_fake_run(tmp_path / "run")
    (run / "pareto.csv").unlink()
    with pytest.raises(gs.SearchError, match="lacks pareto.csv.*graftsearch resume"):
        gs.write_report(run)


def test_report_cli_error_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "run_dir" in err and "Traceback" not in err


class _HeadFitness(gs.Fitness):
    """P = validation accuracy of a briefly trained head (a stand-in for the proxies)."""

    def __init__(self, cache):
        self.cache = cache

    def evaluate(self, selection):
        from graftsearch.fitness._evaluation import Evaluation
        from graftsearch.features._source import selection_features
        from graftsearch.training._headtrain import train_head
        from graftsearch.training._schedule import TrainSchedule

        c = self.cache
        fit = train_head(selection_features(c, "train", selection), c.labels("train"),
                         selection_features(c, "val", selection), c.labels("val"),
                         head=gs.HeadSpec(num_classes=len(c.classes)),
                         schedule=TrainSchedule(epochs=3, batch_size=8, lr=3e-3), seed=0)
        return Evaluation(val_accuracy=fit.val_accuracy, val_loss=fit.val_loss)

    def key(self):
        return "head-fitness"


@pytest.mark.slow
def test_report_after_a_tiny_run(tmp_path):
    """Acceptance 4: search, final model and report on a tiny donor and generated images."""
    from test_final import make_colour_folder
    from tiny import tiny_donor

    from graftsearch.training._schedule import TrainSchedule

    donor = tiny_donor()
    dataset = gs.load_dataset(str(make_colour_folder(tmp_path / "images", per_class=10)))
    cache = gs.build_cache(donor, dataset, image_size=32, cache_dir=tmp_path / "cache",
                           num_workers=0, device="cpu")
    run = tmp_path / "run"
    settings = gs.SearchSettings(objective="min-size", p_min=0.5, population=8, generations=2,
                                 seed=0)
    head = gs.HeadSpec(num_classes=3)
    gs.run_search(cache.taps, head, _HeadFitness(cache), settings, run_dir=run)
    (run / "config.json").write_text(json.dumps({"search": settings.as_dict(),
                                                 "donor": {"name": donor.name}}))
    final = gs.train_final_from_run(run, donor, cache, dataset=dataset, settings=gs.FinalSettings(
        schedule=TrainSchedule(epochs=3, batch_size=8, lr=3e-3), latency_runs=3, memory=False))
    path = gs.write_report(run)
    text = path.read_text()
    assert (run / "pareto.png").stat().st_size > 5000 and (run / "convergence.png").stat().st_size > 5000
    assert f"| {final.metrics['taps']} (chosen) |" in text
    assert f"| final test accuracy | n/a | {100 * final.test.accuracy:.2f}% |" in text
    for section in ("## Donor vs rootstock", "## Test metrics", "## Deployment cost",
                    "## Pareto front", "## Convergence", "## Settings"):
        assert section in text
    for name in ("model.pt", "model.torchscript.pt", "metrics.json", "confusion.csv"):
        assert (run / "best" / name).is_file()
        assert f"`best/{name}`" in text
    before = {p: (run / p).read_bytes() for p in ("report.md", "pareto.png", "convergence.png")}
    for p in before:
        (run / p).unlink()
    assert main(["report", str(run)]) == 0
    assert {p: (run / p).read_bytes() for p in before} == before


def test_regenerate_command_works_pasted_where_the_run_started(tmp_path, monkeypatch, capsys):
    import shlex

    start = tmp_path / "project"
    run = write_fake_run(start / "runs" / "exp 1")
    config = json.loads((run / "config.json").read_text())
    config["settings"] = {"run_dir": "runs/exp 1"}  # as `graftsearch run --run-dir` was given it
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)  # the report is rebuilt from elsewhere: it still names that path
    text = gs.write_report(run.relative_to(tmp_path)).read_text()
    assert "Regenerate this report with `graftsearch report 'runs/exp 1'`." in text
    command = text.split("Regenerate this report with `")[1].split("`")[0]
    monkeypatch.chdir(start)
    assert main(shlex.split(command)[1:]) == 0
    capsys.readouterr()

    # a search run from Python has no run settings: the path the report was written with
    del config["settings"]
    (run / "config.json").write_text(json.dumps(config))
    text = gs.write_report(run).read_text()
    assert f"`graftsearch report {shlex.quote(str(run))}`" in text


# ---------------------------------------------------------------------------------------------
# every accuracy names its source (issue 17): proxy val, refined val, final val, final test


def refine_fake_run(run_dir, *, p_min=0.6, drop=0.05):
    """Refine a fake run's front as the search does: refined.csv holds the front re-evaluated
    (here ``drop`` lower, a little more for odd tap counts, so the refined front differs), and
    the final pareto.csv is refined.csv's front, from which the pick is made."""
    proxy = pd.read_csv(run_dir / "pareto.csv", dtype={"bits": str}).drop(columns=["rank"])
    refined = proxy.copy()
    refined["val_accuracy"] = (proxy["val_accuracy"] - drop - 0.02 * (proxy["n_taps"] % 2)).round(4)
    refined["val_loss"] = 1 - refined["val_accuracy"]
    refined["feasible"] = refined["val_accuracy"] >= p_min
    refined["violation"] = (p_min - refined["val_accuracy"]).clip(lower=0.0)
    refined["generation"] = 4
    refined.to_csv(run_dir / "refined.csv", index=False)
    front = _front(refined)
    ordered = order_front(front.assign(rank=1), "min-size")
    ordered.assign(rank=range(1, len(ordered) + 1)).to_csv(run_dir / "pareto.csv", index=False)
    return run_dir


def _refined_pick(run_dir):
    run = load_run(run_dir)
    return pick_best(run.pareto, run.objective, run.size_metric)


def _with_bits(metrics, bits, taps):
    m = json.loads(json.dumps(metrics))
    m["bits"], m["taps"] = bits, taps
    return m


def _train_pick(run_dir, pick):
    """best/metrics.json as final training writes it for ``pick`` (METRICS, its selection)."""
    (run_dir / "best").mkdir()
    (run_dir / "best" / "metrics.json").write_text(
        json.dumps(_with_bits(METRICS, pick["bits"], pick["taps"])))


def test_accuracy_labels_are_one_wording_per_source():
    assert [L.accuracy(s) for s in (L.PROXY_VAL, L.REFINED_VAL, L.FINAL_VAL, L.FINAL_TEST)] == [
        "proxy val accuracy", "refined val accuracy", "final val accuracy", "final test accuracy"]
    assert L.search_source(True) == L.REFINED_VAL and L.search_source(False) == L.PROXY_VAL
    with pytest.raises(ValueError):
        L.accuracy("val")


def test_front_source_is_refined_only_when_pareto_holds_refined_values(tmp_path):
    plain = write_fake_run(tmp_path / "plain")
    assert front_source(load_run(plain), read_refined(load_run(plain))) == L.PROXY_VAL
    refined = refine_fake_run(write_fake_run(tmp_path / "refined"))
    assert front_source(load_run(refined), read_refined(load_run(refined))) == L.REFINED_VAL
    # a resumed, longer search rewrites pareto.csv with proxy values beside the old refined.csv
    stale = refine_fake_run(write_fake_run(tmp_path / "stale"))
    evaluations = pd.read_csv(stale / "evaluations.csv", dtype={"bits": str})
    _front(evaluations).assign(rank=1).to_csv(stale / "pareto.csv", index=False)
    assert front_source(load_run(stale), read_refined(load_run(stale))) == L.PROXY_VAL


def _drawn(fig):
    """The coordinates pareto.png draws, read back from the figure's artists by gid."""
    ax = fig.axes[0]
    line = next(a for a in ax.get_lines() if a.get_gid() == "front")
    front = list(zip(line.get_xdata().astype(float), line.get_ydata().astype(float)))
    points = {c.get_gid(): [tuple(map(float, o)) for o in c.get_offsets()]
              for c in ax.collections}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    return front, points, legend


@pytest.mark.parametrize("refined", [False, True])
@pytest.mark.parametrize("trained", [False, True])
def test_chosen_model_lies_on_the_drawn_front(tmp_path, refined, trained):
    run_dir = write_fake_run(tmp_path / "run")
    if refined:
        refine_fake_run(run_dir)
    pick = _refined_pick(run_dir)
    if trained:
        _train_pick(run_dir, pick)
    run = load_run(run_dir)
    points = report_points(run, read_metrics(run_dir))
    assert points.chosen == (float(pick["params"]), float(pick["val_accuracy"]))
    assert points.chosen in points.front and points.chosen_on_front
    front, drawn, legend = _drawn(draw_pareto(points))
    assert drawn["chosen"] == [points.chosen] and points.chosen in front
    assert drawn["front points"] == front == points.front


def test_a_chosen_model_off_the_current_front_is_drawn_and_labelled_as_such(tmp_path):
    # metrics.json of an earlier front (the search was resumed longer after final training)
    run_dir = write_fake_run(tmp_path / "run", metrics=_with_bits(METRICS, "110000", "1;2"))
    points = report_points(load_run(run_dir), read_metrics(run_dir))
    assert points.chosen == (4200.0, pytest.approx(0.5)) and not points.chosen_on_front
    assert points.chosen not in points.front
    _, drawn, legend = _drawn(draw_pareto(points))
    assert drawn["chosen"] == [points.chosen]
    assert "chosen model (proxy val accuracy, not on this front)" in legend


def test_chosen_model_of_a_refined_run_is_at_its_refined_accuracy(tmp_path):
    run_dir = refine_fake_run(write_fake_run(tmp_path / "run"))
    pick = _refined_pick(run_dir)
    _train_pick(run_dir, pick)
    evaluations = load_run(run_dir).evaluations
    proxy = float(evaluations.loc[evaluations["bits"] == pick["bits"], "val_accuracy"].iloc[0])
    refined = pd.read_csv(run_dir / "refined.csv", dtype={"bits": str})
    refined_acc = float(refined.loc[refined["bits"] == pick["bits"], "val_accuracy"].iloc[0])
    assert proxy != refined_acc
    points = report_points(load_run(run_dir), read_metrics(run_dir))
    assert points.chosen[1] == refined_acc and points.front_source == L.REFINED_VAL


def test_pareto_legend_and_axis_name_each_points_source(tmp_path):
    run_dir = refine_fake_run(write_fake_run(tmp_path / "run"))
    pick = _refined_pick(run_dir)
    _train_pick(run_dir, pick)
    fig = draw_pareto(report_points(load_run(run_dir), read_metrics(run_dir)))
    _, drawn, legend = _drawn(fig)
    run = load_run(run_dir)
    n_feasible = int(run.evaluations["feasible"].sum())
    n_front, n_refined = len(run.pareto), len(pd.read_csv(run_dir / "refined.csv"))
    assert f"evaluated, feasible ({n_feasible}; proxy val accuracy)" in legend
    assert f"evaluated, infeasible ({len(run.evaluations) - n_feasible}; proxy val accuracy)" \
        in legend
    assert f"re-evaluated ({n_refined}; refined val accuracy)" in legend
    assert f"Pareto front ({n_front}; refined val accuracy)" in legend
    assert "chosen model (refined val accuracy)" in legend
    assert "chosen model, trained (final val accuracy)" in legend
    assert "chosen model, trained (final test accuracy)" in legend
    assert "donor (final val accuracy)" in legend
    assert fig.axes[0].get_ylabel() == \
        "accuracy (proxy val, refined val, final val, final test)"


def test_trained_graft_is_drawn_at_its_final_accuracies_beside_the_chosen_point(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", metrics=METRICS)
    points = report_points(load_run(run_dir), read_metrics(run_dir))
    x = points.chosen[0]
    assert points.final == [(L.FINAL_VAL, x, 0.82), (L.FINAL_TEST, x, 0.8)]
    _, drawn, _ = _drawn(draw_pareto(points))
    assert drawn["final val"] == [(x, 0.82)] and drawn["final test"] == [(x, 0.8)]


def test_convergence_plot_says_its_accuracy_is_the_proxys(tmp_path):
    run = load_run(write_fake_run(tmp_path / "run"))
    fig = draw_convergence(run.convergence)
    bottom = fig.axes[1]
    assert bottom.get_ylabel() == "proxy val accuracy"
    assert [t.get_text() for t in bottom.get_legend().get_texts()][0] == \
        "best feasible: proxy val accuracy"


def test_report_front_table_of_a_refined_run_names_both_accuracies(tmp_path):
    run_dir = refine_fake_run(write_fake_run(tmp_path / "run"))
    text = gs.write_report(run_dir).read_text()
    assert ("| Taps | n | Params | MiB | MACs | refined val accuracy | refined val loss "
            "| proxy val accuracy | Feasible |") in text
    pick = _refined_pick(run_dir)
    evaluations = load_run(run_dir).evaluations
    proxy = float(evaluations.loc[evaluations["bits"] == pick["bits"], "val_accuracy"].iloc[0])
    row = next(line for line in text.splitlines() if line.startswith(f"| {pick['taps']} (chosen) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == f"{100 * pick['val_accuracy']:.2f}%" and cells[7] == f"{100 * proxy:.2f}%"
    assert (f"taps **{pick['taps']}**, {pick['params']:,} parameters") in text
    assert f"refined val accuracy {100 * pick['val_accuracy']:.2f}%." in text


def test_report_front_table_without_refining_names_the_proxy(tmp_path):
    text = gs.write_report(write_fake_run(tmp_path / "run")).read_text()
    assert "| Taps | n | Params | MiB | MACs | proxy val accuracy | proxy val loss | Feasible |" in text
    assert "Best pick of the search (not yet trained and tested): taps **1;2;3**, 9,300 " \
           "parameters, 0.04 MiB, proxy val accuracy 60.00%." in text


def test_report_result_line_names_final_and_search_accuracies(tmp_path):
    run_dir = refine_fake_run(write_fake_run(tmp_path / "run"))
    pick = _refined_pick(run_dir)
    _train_pick(run_dir, pick)
    text = gs.write_report(run_dir).read_text()
    assert (f"final val accuracy 82.00%, final test accuracy 80.00% (refined val accuracy "
            f"{100 * pick['val_accuracy']:.2f}% in the search).") in text


def test_every_accuracy_in_report_md_names_its_source(tmp_path):
    metrics = json.loads(json.dumps(METRICS))
    metrics["graft"]["variant"] = "fine_tuned"
    metrics["graft"]["variants"] = {
        "head_only": {"val": {"accuracy": 0.8}, "test": {"accuracy": 0.78}},
        "fine_tuned": {"val": {"accuracy": 0.82}, "test": {"accuracy": 0.8}, "best_epoch": 2}}
    metrics["int8"]["ptq_candidates"] = [
        {"engine": "x86", "observer": "histogram", "float_layers": [], "val_accuracy": 0.81},
        {"engine": "x86", "observer": "minmax", "float_layers": ["features.0"], "val_accuracy": 0.6}]
    metrics["int8"]["qat_error"] = "RuntimeError: no fake quantiser"
    run_dir = refine_fake_run(write_fake_run(tmp_path / "run", metrics=metrics))
    text = gs.write_report(run_dir).read_text()
    assert "| final val accuracy | 70.00% | 82.00% |  |" in text  # donor vs rootstock
    assert "| Graft | final val accuracy | final test accuracy | Best epoch |" in text
    assert "| final test accuracy | 80.00% | 68.00% |" in text  # test metrics
    assert "| final test accuracy | 80.00% | 79.00% |" in text  # float32 vs int8
    assert ("Post-training candidates on final val accuracy: x86/histogram 81.00%, x86/minmax "
            "with features.0 in float32 60.00%") in text
    assert "Quantisation-aware fine-tuning failed: RuntimeError: no fake quantiser" in text
    assert "best feasible proxy val accuracy 62.00%." in text  # convergence
    body = text.split("## Settings")[0]
    found = list(re.finditer(r"(?i)\b(?:acc|accuracy|accuracies)\b", body))
    assert len(found) > 10
    bare = [body[max(0, m.start() - 30):m.end()] for m in found
            if not body[:m.start()].endswith(tuple(f"{s} " for s in L.SOURCES))]
    assert not bare, bare


def test_front_table_shows_each_accuracy_with_its_standard_error(tmp_path):
    run = write_fake_run(tmp_path / "run")
    pareto = pd.read_csv(run / "pareto.csv")
    pareto["val_accuracy_se"] = 0.0123
    pareto.to_csv(run / "pareto.csv", index=False)
    text = gs.write_report(run).read_text()
    first = next(line for line in text.splitlines() if "(chosen)" in line)
    assert "% ± 1.23 |" in first
    plain = write_fake_run(tmp_path / "plain")  # no standard error: no ± at all
    assert "±" not in gs.write_report(plain).read_text().split("## Settings")[0]
