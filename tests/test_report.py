"""report.md and its plots, rebuilt from a run directory's files alone (acceptance 4)."""

import itertools
import json

import pandas as pd
import pytest

import graftsearch as gs
from graftsearch._cli import main
from graftsearch.optimize._runfiles import COLUMNS, load_run
from graftsearch.report._report import pick_best, size_limit


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
    assert "| Test accuracy | 68.00% | 80.00% |  |" in text
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
        from graftsearch.training._headtrain import TrainSchedule, train_head

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

    from graftsearch.training._headtrain import TrainSchedule

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
    assert f"| Test accuracy | n/a | {100 * final.test.accuracy:.2f}% |" in text
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
