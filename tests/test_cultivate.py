"""Donor cultivation: heads, freezing, early stopping, determinism, checkpoint and CLI."""

import numpy as np
import pytest
import torch

import graftsearch as gs
from graftsearch._cli import main
from graftsearch.cultivate._cultivate import build_cultivar, freeze_prefix
from graftsearch.data._images import load_image
from test_final import CLASSES, make_colour_folder

FAST = dict(epochs=2, batch_size=8, lr=3e-3, device="cpu", patience=None)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cultivate")
    return gs.load_dataset(str(make_colour_folder(root / "images", per_class=10)))


def test_cultivate_tiny_donor_freezes_prefix_and_reports_table_row(tiny, dataset):
    before = {k: v.clone() for k, v in tiny.module.state_dict().items()}
    settings = gs.CultivateSettings(trainable_taps=2, **FAST)  # 6 taps: taps 1-4 frozen
    result = gs.cultivate_donor(tiny, dataset, settings=settings)
    state = result.donor.module.state_dict()
    # everything taps 1..4 need (features.0 .. features.6) is unchanged, the rest trained
    frozen = [k for k in before if k.startswith(("features.0.", "features.1.", "features.4.",
                                                 "features.6."))]
    assert sorted(result.frozen) == sorted(k for k in frozen if "running" not in k
                                           and "num_batches" not in k)
    for k in frozen:  # frozen batch norm keeps its statistics too
        assert torch.equal(state[k], before[k]), k
    assert not torch.equal(state["features.8.weight"], before["features.8.weight"])
    assert state["fc.weight"].shape == (3, 32)
    assert torch.equal(tiny.module.state_dict()["fc.weight"], before["fc.weight"])  # not modified
    assert result.donor.class_names == CLASSES
    row = result.table_row()
    assert row["params"] == sum(p.numel() for p in result.donor.module.parameters())
    assert row["size_mib"] == pytest.approx(row["params"] * 4 / 2**20)
    assert result.trainable_params == row["params"] - sum(
        before[k].numel() for k in result.frozen)
    # test accuracy is that of the returned donor on the test images
    test = dataset.split("test")
    pre = result.donor.preprocessing
    x = torch.stack([load_image(p, pre) for p in test.paths])
    with torch.no_grad():
        acc = (result.donor.module(x).argmax(1).numpy() == test.labels).mean()
    assert row["test_accuracy"] == pytest.approx(acc)
    assert len(result.history) == 2 and result.best_epoch == 1 + int(np.argmin(
        [h["val_loss"] for h in result.history]))


def test_cultivation_is_deterministic(tiny, dataset):
    settings = gs.CultivateSettings(trainable_taps=None, **{**FAST, "epochs": 1}, augment=True)
    a = gs.cultivate_donor(tiny, dataset, settings=settings)
    b = gs.cultivate_donor(tiny, dataset, settings=settings)
    for (k, va), vb in zip(a.donor.module.state_dict().items(), b.donor.module.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.history == b.history and a.frozen == []


def test_early_stopping_keeps_best_epoch(tiny, dataset):
    settings = gs.CultivateSettings(**{**FAST, "epochs": 4, "patience": 1, "lr": 0.05})
    result = gs.cultivate_donor(tiny, dataset, settings=settings)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    stopped_early = len(losses) < 4
    assert not stopped_early or len(losses) - result.best_epoch == 1
    assert result.metrics["val"]["loss"] == pytest.approx(min(losses), rel=1e-5)


@pytest.mark.slow
def test_paper_head_and_freezing_on_vgg16():
    """The paper's donor: 16,880,201 parameters for 9 classes at 128 px, block1_conv1 frozen."""
    vgg = gs.load_donor("vgg16", load_weights=False)
    settings = gs.CultivateSettings(head="auto")
    module, name, size = build_cultivar(vgg, 9, settings)
    assert (name, size) == ("paper_vgg16", 128) and isinstance(module, gs.donors.PaperDonor)
    assert sum(p.numel() for p in module.parameters()) == 16_880_201
    frozen, _ = freeze_prefix(module, size, settings.trainable_taps)
    assert frozen == ["features.0.weight", "features.0.bias"]
    assert [n for n, p in module.named_parameters() if not p.requires_grad] == frozen
    assert torch.equal(module.features[2].weight, vgg.module.features[2].weight)  # trunk copied


@pytest.mark.slow
def test_cli_trains_checkpoint_that_load_donor_reads(dataset, tmp_path, capsys):
    out = tmp_path / "donor.pt"
    code = main(["donor", "train", "--donor", "mobilenet_v3_small", "--weights", "none",
                 "--data", str(dataset.root),
                 "--image-size", "32", "--trainable-taps", "2", "--epochs", "1",
                 "--batch-size", "8", "--lr", "1e-3", "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and str(out) in printed
    donor = gs.load_donor(checkpoint=str(out))
    assert donor.name == "mobilenet_v3_small" and donor.class_names == CLASSES
    assert donor.image_size == 32
    meta = torch.load(out, weights_only=True)["meta"]["cultivation"]["table_row"]
    test = dataset.split("test")
    x = torch.stack([load_image(p, donor.preprocessing) for p in test.paths])
    with torch.no_grad():
        acc = (donor.module(x).argmax(1).numpy() == test.labels).mean()
    assert meta["test_accuracy"] == pytest.approx(acc)
    assert meta["params"] == sum(p.numel() for p in donor.module.parameters())


def test_paper_head_needs_vgg16(tiny, dataset):
    with pytest.raises(gs.DonorError, match="'paper' needs a VGG16 donor"):
        gs.cultivate_donor(tiny, dataset, settings=gs.CultivateSettings(head="paper", **FAST))


def test_donor_without_linear_classifier(dataset):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    donor = gs.Donor.from_module(module, image_size=32)
    with pytest.raises(gs.DonorError, match="no Linear classifier layer to replace"):
        gs.cultivate_donor(donor, dataset, settings=gs.CultivateSettings(**FAST))


def test_settings_errors():
    with pytest.raises(gs.ParameterError, match="The 'head' parameter must be one of"):
        gs.CultivateSettings(head="big")


def test_settings_bad_lr():
    with pytest.raises(gs.ParameterError, match="The 'lr' parameter must be a float > 0"):
        gs.CultivateSettings(lr=0)


def test_cli_bad_trainable_taps(dataset, capsys):
    assert main(["donor", "train", "--donor", "resnet18", "--data", str(dataset.root),
                 "--trainable-taps", "many"]) == 2
    assert "trainable_taps" in capsys.readouterr().err
