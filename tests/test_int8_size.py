"""``--size-metric int8_mib``: the int8 size of a graft, exact from the tap list."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import graftsearch as gs
from graftsearch.graft._model import GraftedModel
from graftsearch.graft._quantize import Int8Recipe, quantize_int8
from graftsearch.optimize._settings import parse_size
from graftsearch.taps._int8 import int8_payload_bytes, quantization_engines, state_bytes
from graftsearch.taps._records import MIB
from tiny import tiny_donor

ENGINES = [e for e in ("x86", "qnnpack") if e in torch.backends.quantized.supported_engines]


@pytest.fixture(scope="module")
def donor():
    return tiny_donor()


def _calibration(n=6, side=32):
    return [torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("hidden", [0, 8])
def test_int8_mib_is_the_tensors_of_the_built_int8_graft(donor, engine, hidden):
    """Every hand-made selection: the tap-list size equals the bytes of the tensor entries of the
    file torch.save writes for the int8 graft (x86: per-channel weights; qnnpack: per-tensor)."""
    taps = donor.taps(32).with_int8_sizes(donor.module, engine=engine)
    head = gs.HeadSpec(num_classes=3, hidden=hidden)
    for selection in ([1], [2, 3], [4], [1, 4, 5], [3, 6], [1, 2, 3, 4, 5, 6]):
        graft = GraftedModel(donor, selection, head, taps=taps).eval()
        quantized = quantize_int8(graft, _calibration(), recipe=Int8Recipe(engine))
        measured = int8_payload_bytes(quantized)
        assert measured == state_bytes(quantized)  # two independent counts agree
        assert taps.cost(selection, head).int8_mib * MIB == measured, (engine, selection)
    # the int8 sizes grow with depth, and the residual block's add keeps its own scale
    assert list(taps.int8_bytes_upto) == sorted(taps.int8_bytes_upto)
    assert taps.int8_per_channel == (engine != "qnnpack")


def test_int8_sizes_of_a_real_donor_match_its_pruned_trunks():
    donor = gs.load_donor("mobilenet_v3_small", weights="none", num_classes=3)
    taps = donor.taps(64).with_int8_sizes(donor.module, engine=quantization_engines()[0])
    head = gs.HeadSpec(num_classes=3, hidden=16)
    for selection in ([2], [3, 6], [len(taps)]):
        graft = GraftedModel(donor, selection, head, taps=taps).eval()
        quantized = quantize_int8(graft, _calibration(side=64), recipe=Int8Recipe(
            quantization_engines()[0]))
        assert taps.cost(selection, head).int8_mib * MIB == int8_payload_bytes(quantized)
    # int8 is about a quarter of float32 for the donor prefix, never more than a third
    full = taps.cost(list(range(1, len(taps) + 1)), head)
    assert 0.25 < full.int8_mib / full.size_mib < 1 / 3


def test_a_tap_list_without_int8_sizes_says_how_to_measure_them(donor):
    taps = donor.taps(32)
    cost = taps.cost([2], gs.HeadSpec(num_classes=3))
    assert cost.int8_mib is None
    with pytest.raises(gs.ParameterError, match=r"needs the int8 sizes of the taps.*with_int8_sizes"):
        cost.metric("int8_mib")


def test_the_search_refuses_int8_mib_on_taps_without_int8_sizes(donor):
    settings = gs.SearchSettings(objective="max-accuracy", size_max="1MiB",
                                 size_metric="int8_mib", population=4, generations=1)
    with pytest.raises(gs.ParameterError, match=r"the given tap list has none"):
        gs.run_search(donor.taps(32), gs.HeadSpec(num_classes=3), lambda ctx: 0.5, settings)


@pytest.mark.parametrize("value, mib", [("1.5MiB", 1.5), ("800KiB", 800 / 1024), (0.25, 0.25),
                                        ("300000B", 300000 / MIB)])
def test_int8_size_caps_are_bytes(value, mib):
    assert parse_size(value, "int8_mib") == pytest.approx(mib)


def test_an_int8_cap_given_as_a_parameter_count_is_refused():
    with pytest.raises(gs.ParameterError, match=r"a byte size .* when size_metric='int8_mib'"):
        gs.SearchSettings(objective="max-accuracy", size_max="2M", size_metric="int8_mib")


def _array_features(taps, seed=0, n=24):
    from graftsearch.features._source import ArrayFeatures

    rng = np.random.default_rng(seed)
    labels = {s: rng.integers(0, 3, n) for s in ("train", "val")}
    features = {s: [rng.normal(size=(n, t.channels)).astype(np.float32) + labels[s][:, None]
                    * (t.index / 6) for t in taps] for s in ("train", "val")}
    return ArrayFeatures(taps, ["a", "b", "c"], features, labels)


def test_a_search_on_int8_mib_keeps_every_feasible_graft_under_the_cap(donor, tmp_path):
    taps = donor.taps(32).with_int8_sizes(donor.module)
    head = gs.HeadSpec(num_classes=3, hidden=8)
    sizes = sorted(taps.cost([i], head).int8_mib for i in range(1, len(taps) + 1))
    cap = sizes[len(sizes) // 2]
    result = gs.search(features=_array_features(taps), fitness="fast", objective="max-accuracy",
                       size_max=cap, size_metric="int8_mib", head=head, population=6,
                       generations=2, refine="none", run_dir=str(tmp_path / "run"), seed=1)
    frame = result.archive
    assert (frame["int8_mib"] == [taps.cost(taps.normalize(b), head).int8_mib
                                  for b in frame["bits"]]).all()
    feasible = frame[frame["feasible"].astype(bool)]
    assert len(feasible) and (feasible["int8_mib"] <= cap).all()
    assert (frame[frame["int8_mib"] > cap]["feasible"].astype(bool) == False).all()  # noqa: E712
    assert result.best.int8_mib <= cap
    from graftsearch.optimize._runfiles import EVALUATIONS, read_records

    written = read_records(tmp_path / "run" / EVALUATIONS)
    np.testing.assert_allclose(written["int8_mib"], frame["int8_mib"])


def test_features_alone_cannot_search_int8_mib_without_int8_taps(donor):
    with pytest.raises(gs.ParameterError, match=r"taps carry int8 sizes"):
        gs.search(features=_array_features(donor.taps(32)), objective="max-accuracy",
                  size_max=1.0, size_metric="int8_mib")


def test_older_evaluation_files_read_int8_mib_as_missing(tmp_path):
    from graftsearch.optimize._runfiles import COLUMNS, read_records

    old = [c for c in COLUMNS if c not in ("int8_mib", "val_accuracy_se")]
    row = {"bits": "011", "taps": "2;3", "n_taps": "2", "deepest_tap": "3", "params": "10",
           "size_mib": "0.1", "macs": "5", "val_accuracy": "0.5", "val_loss": "1.0",
           "feasible": "True", "violation": "0.0", "generation": "0",
           "evaluated_at": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "evaluations.csv").write_text(",".join(old) + "\n" + ",".join(row[c] for c in old) + "\n")
    frame = read_records(tmp_path / "evaluations.csv")
    assert list(frame.columns[:9]) == ["bits", "taps", "n_taps", "deepest_tap", "params",
                                       "size_mib", "macs", "int8_mib", "val_accuracy"]
    assert np.isnan(frame["int8_mib"][0]) and np.isnan(frame["val_accuracy_se"][0])


@pytest.mark.slow
def test_run_with_a_relative_int8_cap(tmp_path):
    from graftsearch._cli import main
    from graftsearch.taps._int8 import donor_int8_bytes
    from test_final import make_colour_folder

    data = make_colour_folder(tmp_path / "images", per_class=10)
    run_dir = tmp_path / "run"
    argv = ["run", "--donor", "mobilenet_v3_small", "--weights", "none", "--data", str(data),
            "--image-size", "32", "--population", "6", "--generations", "1",
            "--final-epochs", "2", "--latency-runs", "0", "--cultivate", "0", "--no-fine-tune",
            "--objective", "max-accuracy", "--size-max", "40%", "--size-metric", "int8_mib",
            "--head-width", "32", "--quantize", "ptq",
            "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir), "--quiet"]
    assert main(argv) in (0, 1)
    config = json.loads((run_dir / "config.json").read_text())
    donor = gs.load_donor("mobilenet_v3_small", weights="none")  # the run's: not cultivated
    want = 0.4 * donor_int8_bytes(donor.module, 32) / MIB
    assert config["search"]["size_max"] == pytest.approx(want)
    assert "int8 MiB" in (run_dir / "report.md").read_text()
    assert "int8 MiB" in (run_dir / "log.txt").read_text()
    metrics = json.loads((run_dir / "best" / "metrics.json").read_text())
    q = metrics["int8"]
    assert "error" not in q, q
    from graftsearch.optimize._runfiles import PARETO, read_records

    front = read_records(run_dir / PARETO)
    chosen = front[front["bits"] == metrics["bits"]]["int8_mib"].iloc[0]
    assert chosen <= want
    if not q["float_layers"]:  # the shipped tensors are what the search counted
        assert q["int8_tensors_mib"] == pytest.approx(chosen, abs=1e-12)
