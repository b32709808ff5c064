"""Final training, test metrics, donor comparison, latency / memory / int8, and export fidelity."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import graftsearch as gs
from graftsearch.training._schedule import TrainSchedule
from graftsearch.data._images import load_image
from graftsearch.graft._record import FinalMetrics

SHORT = TrainSchedule(epochs=4, batch_size=8, lr=3e-3)
# head-only unless a test fine-tunes: fine-tuning is on by default whenever images are given
QUICK = dict(schedule=SHORT, latency_runs=3, latency_warmup=1, memory=False, num_workers=0,
             fine_tune=False)
CLASSES = ["blue", "green", "red"]


def make_colour_folder(root, per_class=15, size=24, seed=0):
    """Images whose dominant channel is their class: a grafted head can learn them."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        channel = {"blue": 2, "green": 1, "red": 0}[name]
        for i in range(per_class):
            arr = rng.integers(0, 120, (size, size, 3)).astype(np.uint8)
            arr[..., channel] = rng.integers(110, 256, (size, size))
            Image.fromarray(arr).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("final")
    dataset = gs.load_dataset(str(make_colour_folder(root / "images")))
    from tiny import tiny_donor

    donor = tiny_donor()
    cache = gs.build_cache(donor, dataset, image_size=32, cache_dir=root / "cache", num_workers=0,
                           device="cpu")
    return donor, dataset, cache


def test_exported_logits_equal_head_on_cached_features(data, tmp_path):
    """Acceptance 2: the deployed file reproduces head(cached features) on the test split."""
    donor, dataset, cache = data
    final = gs.train_final(donor, cache, [2, 4], dataset=dataset,
                           settings=gs.FinalSettings(**QUICK), out_dir=tmp_path / "best")
    test = dataset.split("test")
    x = torch.stack([load_image(p, cache.preprocessing, normalize=False) for p in test.paths])
    scripted = torch.jit.load(str(tmp_path / "best" / "model.torchscript.pt"))
    features = np.concatenate([cache.features("test", 2), cache.features("test", 4)], axis=1)
    with torch.no_grad():
        want = final.graft.head(torch.from_numpy(np.asarray(features)))
        np.testing.assert_allclose(scripted(x), want, atol=1e-4)
        np.testing.assert_allclose(gs.load_model(tmp_path / "best" / "model.pt", donor=donor)(x),
                                   want, atol=1e-4)
    # the reported test metrics are those of the deployed model
    assert final.test.accuracy == pytest.approx(float((want.argmax(1).numpy() == test.labels).mean()))
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert metrics["taps"] == "2;4" and metrics["class_names"] == CLASSES
    assert metrics["graft"]["test"]["accuracy"] == pytest.approx(final.test.accuracy)
    assert metrics["graft"]["params"] == final.graft.num_params() == final.model.graft.num_params()
    assert metrics["graft"]["val"]["accuracy"] == pytest.approx(final.fit.val_accuracy)
    assert metrics["donor"]["test"] is None and "cultivate" in metrics["donor"]["note"]
    assert metrics["latency"]["graft"]["runs"] == 3 and metrics["latency"]["ratio"] > 0
    # the file is the record final training returned, and reads back as it
    assert metrics == final.metrics == FinalMetrics.read(tmp_path / "best" / "metrics.json").to_json()
    confusion = (tmp_path / "best" / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "true \\ predicted,blue,green,red"
    assert sum(int(v) for row in confusion[1:] for v in row.split(",")[1:]) == len(test)


def test_final_training_is_deterministic(data):
    donor, dataset, cache = data
    settings = gs.FinalSettings(**{**QUICK, "latency_runs": 0})
    a = gs.train_final(donor, cache, "010100", settings=settings)
    b = gs.train_final(donor, cache, [2, 4], settings=settings)
    for (k, va), (_, vb) in zip(a.graft.state_dict().items(), b.graft.state_dict().items()):
        assert torch.equal(va, vb), k
    assert a.metrics["graft"]["history"] == b.metrics["graft"]["history"]


def test_donor_metrics_for_a_donor_with_these_classes(data):
    donor, dataset, cache = data
    named = gs.Donor(donor.module, name="tiny", spec=donor.spec, image_size=32,
                     mean=donor.preprocessing.mean, std=donor.preprocessing.std, class_names=CLASSES)
    final = gs.train_final(named, cache, [6], dataset=dataset,
                           settings=gs.FinalSettings(**{**QUICK, "latency_runs": 0}))
    test = dataset.split("test")
    x = torch.stack([load_image(p, cache.preprocessing) for p in test.paths])
    with torch.no_grad():
        direct = (donor.module(x).argmax(1).numpy() == test.labels).mean()
    assert final.donor_test.accuracy == pytest.approx(direct)
    d = final.metrics["donor"]
    assert d["params"] == sum(p.numel() for p in donor.module.parameters())
    assert final.metrics["size_reduction"]["factor"] == pytest.approx(d["params"] / final.graft.num_params())


@pytest.mark.slow
def test_fine_tune_and_int8(data, tmp_path):
    donor, dataset, cache = data
    settings = gs.FinalSettings(**{**QUICK, "latency_runs": 0, "fine_tune": True,
                                   "fine_tune_epochs": 1, "fine_tune_lr": 1e-2, "quantize": "ptq",
                                   "calibration_images": 16})
    final = gs.train_final(donor, cache, [2, 4], dataset=dataset, settings=settings,
                           out_dir=tmp_path)
    graft = final.metrics["graft"]
    # the tiny donor's classifier is not one for these classes: nothing to distil from
    assert set(graft["variants"]) == {"head_only", "fine_tuned"} and graft["distill_note"]
    trunk_w = final.graft.trunk.state_dict()["features.0.weight"]
    trained = not torch.equal(trunk_w, donor.module.features[0].weight)
    assert trained == (graft["variant"] == "fine_tuned")
    # after fine-tuning the test metrics come from images through the exported model
    test = dataset.split("test")
    x = torch.stack([load_image(p, cache.preprocessing, normalize=False) for p in test.paths])
    scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))
    with torch.no_grad():
        acc = (scripted(x).argmax(1).numpy() == test.labels).mean()
    assert final.test.accuracy == pytest.approx(acc)
    q = final.metrics["int8"]
    assert "error" not in q, q
    assert q["calibration_images"] == 16 and q["int8_mib"] < q["float32_mib"]
    assert q["float32_test_accuracy"] == pytest.approx(acc)
    assert 0 <= q["int8_test_accuracy"] <= 1


@pytest.mark.slow
def test_final_from_run_top_k(data, tmp_path):
    from test_report import write_fake_run

    donor, dataset, cache = data
    run = write_fake_run(tmp_path / "run", p_min=0.6)  # 6 taps, like the tiny donor
    final = gs.train_final_from_run(run, donor, cache, top_k=3,
                                    settings=gs.FinalSettings(**{**QUICK, "latency_runs": 0}))
    metrics = json.loads((run / "best" / "metrics.json").read_text())
    candidates = metrics["search_pick"]["candidates"]
    assert [c["taps"] for c in candidates] == ["1;2;3", "4", "3;4"]  # ties: bits ascending
    # the fake run has no refined.csv: the picks carry the search's proxy accuracy
    assert {c["search_source"] for c in candidates} == {metrics["search_pick"]["search_source"]} \
        == {"proxy val"}
    reaching = [c for c in candidates if c["final_val_accuracy"] >= 0.6]
    expected = reaching[0] if reaching else max(candidates, key=lambda c: c["final_val_accuracy"])
    assert metrics["bits"] == expected["bits"] == final.metrics["bits"]
    text = gs.write_report(run).read_text()
    assert "## Donor vs rootstock" in text and f"| {metrics['taps']} (chosen) |" in text


@pytest.mark.slow
def test_latency_and_memory_of_graft_and_donor(tiny):
    from graftsearch.graft._measure import compare_latency

    graft = gs.GraftedModel(tiny, [2], gs.HeadSpec(num_classes=3, hidden=0))
    before = torch.get_num_threads()
    lat = compare_latency({"graft": graft, "donor": tiny.module}, 32, runs=5, warmup=1, threads=1)
    assert set(lat) == {"graft", "donor"}
    assert all(v.runs == 5 and v.threads == 1 and 0 < v.min_ms <= v.median_ms <= v.p90_ms
               for v in lat.values())
    assert torch.get_num_threads() == before  # measuring at 1 thread restores the caller's
    mem = gs.graft.measure_peak_memory(graft, 32)
    if mem.peak_mib is None:
        pytest.skip(mem.method)
    assert mem.params == graft.num_params() and mem.peak_mib >= mem.loaded_mib >= 0


def test_final_settings_errors():
    with pytest.raises(gs.ParameterError, match="The 'fine_tune_epochs' parameter must be an integer >= 1"):
        gs.FinalSettings(fine_tune_epochs=0)


def test_final_needs_images_for_fine_tuning(data):
    donor, _, cache = data
    with pytest.raises(gs.ParameterError, match="The 'dataset' parameter must be the ImageDataset"):
        gs.train_final(donor, cache, [2], settings=gs.FinalSettings(fine_tune=True))


def test_final_head_must_match_classes(data):
    donor, _, cache = data
    with pytest.raises(gs.ParameterError, match="The 'head' parameter must be a HeadSpec with num_classes=3"):
        gs.train_final(donor, cache, [2], head=gs.HeadSpec(num_classes=4))


def test_final_from_run_without_feasible_pick(data, tmp_path):
    from test_report import write_fake_run

    donor, _, cache = data
    run = write_fake_run(tmp_path / "run", p_min=0.99)
    with pytest.raises(gs.SearchError, match="has no feasible selection to train"):
        gs.train_final_from_run(run, donor, cache)


def test_unfolded_standardisation_is_the_same_head():
    from graftsearch.graft._quantize import unfold_standardisation

    torch.manual_seed(0)
    head = gs.HeadSpec(num_classes=3, hidden=8).build(5).eval()
    x = torch.randn(64, 5) * torch.tensor([1e-3, 1.0, 10.0, 100.0, 0.1]) + 3.0
    unfolded = unfold_standardisation(head, x).eval()
    with torch.no_grad():
        np.testing.assert_allclose(unfolded(x), head(x), rtol=1e-4, atol=1e-4)
        z = unfolded[0](x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


@pytest.mark.slow
def test_plant_seedlings_example_runs_end_to_end(tmp_path):
    """The worked example's whole path (acceptance 5), on generated images so it stays quick."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "plant_seedlings.py"
    spec = importlib.util.spec_from_file_location("plant_seedlings_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    images = make_colour_folder(tmp_path / "images", per_class=8, size=40)
    run = tmp_path / "run"
    assert example.main(["--data", str(images), "--run-dir", str(run), "--cache-dir",
                         str(tmp_path / "cache"), "--smoke", "--threads", "1",
                         "--latency-runs", "2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["donor"]["test_accuracy"] is not None  # the cultivated donor was tested
    # the default path: a relative cap resolved to an exact count, all three variants trained
    assert summary["size_max_params"] == int(0.3 * summary["donor"]["params"])
    assert set(summary["variants"]) == {"head_only", "fine_tuned", "distilled"}
    assert summary["graft"]["params"] <= summary["size_max_params"]
    for name in ("report.md", "donor.pt", "best/model.pt",
                 "best/model.torchscript.pt", "best/metrics.json"):
        assert (run / name).is_file(), name


def test_final_refuses_another_donor_than_the_cache(data):
    from tiny import tiny_donor

    _, _, cache = data
    with pytest.raises(gs.ParameterError, match="The 'donor' parameter must be the donor the feature cache was built from"):
        gs.train_final(tiny_donor(seed=1), cache, [2])


def test_parts_workflow_max_accuracy_trains_the_search_pick(data, tmp_path):
    """run_search (no pipeline) then train_final_from_run: the objective comes from the run's
    config.json, so the final model is the search's rank-1 pick, not the smallest selection."""
    donor, _, cache = data
    run_dir = tmp_path / "run"
    settings = gs.SearchSettings(objective="max-accuracy", size_max=10 ** 9, population=6,
                                 generations=2, seed=3)


    class MoreTapsBetter(gs.Fitness):
        """P grows with the number of taps: max-accuracy's pick is the largest selection,
        min-size's would be a single tap."""

        def key(self):
            return "more-taps-better"

        def evaluate(self, selection):
            return gs.Evaluation(val_accuracy=0.4 + 0.1 * len(selection))

    result = gs.run_search(donor.taps(), gs.HeadSpec(num_classes=3), MoreTapsBetter(), settings,
                           run_dir=run_dir)
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["search"]["objective"] == "max-accuracy"
    assert result.best.bits.count("1") > 1  # not what min-size would pick
    final = gs.train_final_from_run(run_dir, donor, cache,
                                    settings=gs.FinalSettings(**{**QUICK, "latency_runs": 0}))
    assert final.metrics["bits"] == result.best.bits
    assert "max-accuracy" in gs.write_report(run_dir).read_text()


@pytest.mark.slow
def test_fine_tuning_with_distillation_reports_every_variant_and_keeps_the_best_on_val(data, tmp_path):
    from tiny import tiny_donor

    _, dataset, _ = data
    donor = tiny_donor(seed=1)
    donor.class_names = list(dataset.classes)  # as a cultivated donor's are: a teacher
    cache = gs.build_cache(donor, dataset, image_size=32, cache_dir=tmp_path / "cache",
                           num_workers=0, device="cpu")
    settings = gs.FinalSettings(**{**QUICK, "latency_runs": 0, "fine_tune": None,
                                   "fine_tune_epochs": 2, "fine_tune_patience": None,
                                   "distill_temperature": 2.0, "distill_alpha": 0.7})
    final = gs.train_final(donor, cache, [2, 4], dataset=dataset, settings=settings,
                           out_dir=tmp_path / "best")
    graft = json.loads((tmp_path / "best" / "metrics.json").read_text())["graft"]
    variants = graft["variants"]
    assert set(variants) == {"head_only", "fine_tuned", "distilled"}
    assert all(v["epochs"] == 2 for k, v in variants.items() if k != "head_only")
    best_val = max(v["val"]["accuracy"] for v in variants.values())
    assert variants[graft["variant"]]["val"]["accuracy"] == best_val
    assert final.test.accuracy == pytest.approx(variants[graft["variant"]]["test"]["accuracy"])


def test_picks_from_a_refined_front_say_so(tmp_path):
    import shutil

    from test_report import write_fake_run
    from graftsearch.graft._final import _front_source, front_picks

    run = write_fake_run(tmp_path / "run", p_min=0.6)
    picks, _ = front_picks(run, top_k=2)
    assert _front_source(run, picks) == "proxy val"
    shutil.copy(run / "pareto.csv", run / "refined.csv")  # the front is the refined one
    assert _front_source(run, picks) == "refined val"
    lines = (run / "refined.csv").read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")
    first[header.index("val_accuracy")] = "0.123"  # a refined.csv from before a longer search
    (run / "refined.csv").write_text("\n".join([lines[0], ",".join(first)] + lines[2:]) + "\n")
    assert _front_source(run, picks) == "proxy val"


@pytest.mark.slow
def test_final_from_run_top_k_keeps_the_one_se_rule(data, tmp_path):
    from test_report import write_fake_run
    from graftsearch.fitness._evaluation import binomial_se

    donor, dataset, cache = data
    run = write_fake_run(tmp_path / "run", objective="max-accuracy", size_max="40k", p_min=None)
    config = json.loads((run / "config.json").read_text())
    config["search"]["pick"] = "one-se"
    (run / "config.json").write_text(json.dumps(config))
    gs.train_final_from_run(run, donor, cache, top_k=4,
                            settings=gs.FinalSettings(**{**QUICK, "latency_runs": 0}))
    metrics = json.loads((run / "best" / "metrics.json").read_text())
    candidates = metrics["search_pick"]["candidates"]
    top = max(candidates, key=lambda c: c["final_val_accuracy"])
    floor = top["final_val_accuracy"] - binomial_se(top["final_val_accuracy"],
                                                     len(cache.labels("val")))
    within = [c for c in candidates if c["final_val_accuracy"] >= floor]
    assert metrics["bits"] == min(within, key=lambda c: (c["params"], -c["final_val_accuracy"],
                                                         c["bits"]))["bits"]
