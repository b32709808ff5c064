"""The default grafting path: auto cultivation with the standard recipe, relative size caps,
resume reusing the cultivated donor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import graftsearch as gs
from graftsearch._cli import main
from graftsearch.pipeline._settings import AUTO_CULTIVATE_EPOCHS, relative_size, resolve_size_max
from graftsearch.taps._trace import count_macs, count_params
from test_final import make_colour_folder


def test_relative_size_resolves_to_the_exact_share_of_the_donor():
    donor = gs.load_donor("mobilenet_v3_small", weights="none", num_classes=3)
    params = count_params(donor.module)
    assert resolve_size_max("30%", donor, "params", 32) == str(int(0.3 * params))
    assert resolve_size_max("12.5 %", donor, "params", 32) == str(int(0.125 * params))
    mib = gs.SearchSettings(objective="max-accuracy", size_metric="size_mib",
                            size_max=resolve_size_max("30%", donor, "size_mib", 32)).size_max
    assert mib == pytest.approx(0.3 * params * 4 / 2**20)
    macs = count_macs(donor.module, torch.zeros(1, 3, 32, 32))
    assert resolve_size_max("50%", donor, "macs", 32) == str(int(0.5 * macs))
    assert resolve_size_max("2M", donor, "params", 32) == "2M"  # absolute sizes pass through
    assert relative_size("100%") == 1.0 and relative_size("7.5MiB") is None


@pytest.mark.parametrize("value", ["0%", "130%", "30 %x", "%", "-5%"])
def test_bad_relative_sizes(value):
    with pytest.raises(gs.ParameterError, match=r"'size_max' parameter must be a size .* or a "
                                                r"share of the donor's size"):
        gs.RunSettings(objective="max-accuracy", size_max=value)


def test_cultivate_auto_only_when_the_classifier_does_not_fit():
    s = gs.RunSettings(p_min=0.5)
    assert s.cultivate == "auto"
    assert s.cultivate_epochs(donor_fits=False) == AUTO_CULTIVATE_EPOCHS
    assert s.cultivate_epochs(donor_fits=True) == 0
    assert gs.RunSettings(p_min=0.5, cultivate=3).cultivate_epochs(True) == 3  # a cap, from Python
    assert gs.RunSettings(p_min=0.5, cultivate="0").cultivate_epochs(False) == 0
    from graftsearch.pipeline._settings import settings_from

    assert settings_from({"preset": "demo", "p_min": 0.5}).cultivate_epochs(False) == 0


def test_standard_cultivation_lowers_the_training_loss(tiny, tmp_path):
    dataset = gs.load_dataset(str(make_colour_folder(tmp_path / "images", per_class=10)))
    settings = gs.CultivateSettings(epochs=4, device="cpu", patience=None, trainable_taps=None)
    assert settings.resolved_recipe().name == "standard"
    result = gs.cultivate_donor(tiny, dataset, settings=settings)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_epoch == 1 + int(np.argmin([h["val_loss"] for h in result.history]))
    paper = gs.CultivateSettings(recipe="paper")
    assert (paper.resolved_recipe().lr, paper.resolved_recipe().batch_size) == (1e-4, 16)
    assert gs.CultivateSettings(recipe="paper", lr=3e-3).resolved_recipe().lr == 3e-3


@pytest.mark.slow
def test_run_resolves_a_relative_cap_and_resume_reuses_the_cultivated_donor(tmp_path, monkeypatch):
    data = make_colour_folder(tmp_path / "images", per_class=12)
    run_dir = tmp_path / "run"
    argv = ["run", "--donor", "mobilenet_v3_small", "--weights", "none", "--data", str(data),
            "--image-size", "32", "--population", "6", "--generations", "1",
            "--final-epochs", "2", "--latency-runs", "0", "--cultivate", "1",
            "--fine-tune-epochs", "1", "--objective", "max-accuracy", "--size-max", "60%",
            "--head-width", "32",
            "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir), "--quiet"]
    assert main(argv) in (0, 1)
    cultivated = gs.load_donor(checkpoint=str(run_dir / "donor.pt"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["size_max"] == "60%"
    assert config["search"]["size_max"] == int(0.6 * count_params(cultivated.module))
    metrics = json.loads((run_dir / "best" / "metrics.json").read_text())
    # a cultivated donor is a teacher: head only, fine-tuned and distilled are all reported
    assert set(metrics["graft"]["variants"]) == {"head_only", "fine_tuned", "distilled"}
    assert metrics["graft"]["params"] <= config["search"]["size_max"]

    def no_training(*args, **kwargs):
        raise AssertionError("cultivated again on resume")

    monkeypatch.setattr("graftsearch.cultivate._cultivate.cultivate_donor", no_training)
    stamp = (run_dir / "donor.pt").stat().st_mtime_ns
    assert main(["resume", str(run_dir), "--quiet"]) in (0, 1)
    assert (run_dir / "donor.pt").stat().st_mtime_ns == stamp
