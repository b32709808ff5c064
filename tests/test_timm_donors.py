"""Donors from timm (`timm:NAME`): taps, exact costs, checkpoints, the whole run, and the error
without timm. Random weights only: nothing here downloads."""

import builtins
import json
import random

import pytest
import torch

from tiny import colour_folder

timm = pytest.importorskip("timm")

import graftsearch as gs  # noqa: E402
from graftsearch._cli import main  # noqa: E402
from graftsearch.errors import CheckpointError, DonorError  # noqa: E402

SIZE = 32

EXPECTED_TAPS = {
    "timm:resnet18": ["act1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                      "layer3.1", "layer4.0", "layer4.1"],
    "timm:mobilenetv3_small_100": ["bn1", "blocks.0.0", "blocks.1.0", "blocks.1.1", "blocks.2.0",
                                   "blocks.2.1", "blocks.2.2", "blocks.3.0", "blocks.3.1",
                                   "blocks.4.0", "blocks.4.1", "blocks.4.2", "blocks.5.0"],
    "timm:convnext_atto": ["stages.0.blocks.0", "stages.0.blocks.1", "stages.1.blocks.0",
                           "stages.1.blocks.1"] + [f"stages.2.blocks.{i}" for i in range(6)]
                          + ["stages.3.blocks.0", "stages.3.blocks.1"],
}


def _forward_order(donor, names):
    calls = []
    mods = dict(donor.module.named_modules())
    handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: calls.append(n)) for n in names]
    try:
        with torch.no_grad():
            donor.module(torch.zeros(1, 3, SIZE, SIZE))
    finally:
        for h in handles:
            h.remove()
    return calls


@pytest.mark.parametrize("name", [
    "timm:resnet18",
    pytest.param("timm:mobilenetv3_small_100", marks=pytest.mark.slow),
    pytest.param("timm:convnext_atto", marks=pytest.mark.slow),
])
def test_taps_are_every_block_in_forward_order_with_exact_costs(name):
    donor = gs.load_donor(name, weights="none")
    assert donor.name == name and donor.weights == "none"
    assert donor.image_size == 224 and donor.preprocessing.mean == (0.485, 0.456, 0.406)
    taps = donor.taps(SIZE)
    assert list(taps.names) == EXPECTED_TAPS[name]
    assert _forward_order(donor, taps.names) == list(taps.names)
    params = [t.params_upto for t in taps]
    assert params == sorted(params) and params[0] > 0
    head = gs.HeadSpec(num_classes=3)
    rng = random.Random(name)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    selections = [[1], [len(taps)]] + [sorted(rng.sample(range(1, len(taps) + 1), 3))
                                       for _ in range(2)]
    for sel in selections:
        model = gs.GraftedModel(donor, sel, head, taps=taps).eval()
        cost = taps.cost(sel, head)
        assert cost.params == sum(p.numel() for p in model.parameters()), sel
        assert cost == model.measured_cost(), sel
        # the graft holds only the donor prefix up to its deepest tap
        deepest = taps.tap(sel[-1]).name
        kept = {n.split(".")[0] for n, _ in model.trunk.named_parameters()}
        assert "fc" not in kept and "head" not in kept and "classifier" not in kept, deepest
        with torch.no_grad():
            assert model(x).shape == (2, 3)


def test_weights_resolve_to_timm_tags_without_the_network():
    from graftsearch.donors import DonorSpec
    from graftsearch.donors._zoo import describe_weights, resolve_weights

    default = timm.models.get_pretrained_cfg("resnet18").tag
    assert resolve_weights("timm:resnet18", "DEFAULT") == default
    assert resolve_weights("timm:resnet18", "resnet18.tv_in1k") == "tv_in1k"
    assert resolve_weights("timm:resnet18", "none") is None
    assert describe_weights(DonorSpec(name="timm:resnet18")) == f"weights {default}"
    with pytest.raises(DonorError, match=r"pretrained tag of 'timm:resnet18'.*tv_in1k"):
        resolve_weights("timm:resnet18", "no_such_tag")
    # taps and costs need the architecture only: named weights are checked, never downloaded
    donor = gs.load_donor("timm:resnet18", weights="tv_in1k", load_weights=False)
    assert donor.weights == "tv_in1k" and donor.image_size == 224
    with pytest.raises(DonorError, match=r"timm:NAME with NAME a timm model.*resnet18"):
        gs.load_donor("timm:resnet18x", weights="none")


def test_local_safetensors_and_pth_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    donor = gs.load_donor("timm:resnet18", checkpoint=str(path))
    assert donor.module.fc.out_features == 5  # read from the checkpoint
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(donor.module(x), source(x))
    pth = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.state_dict()}, pth)
    again = gs.load_donor("timm:resnet18", checkpoint=str(pth))
    assert again.fingerprint() == donor.fingerprint()
    wrong = tmp_path / "convnext.safetensors"
    save_file(timm.create_model("convnext_atto", pretrained=False).state_dict(), str(wrong))
    with pytest.raises(CheckpointError, match="does not fit the architecture 'timm:resnet18'"):
        gs.load_donor("timm:resnet18", checkpoint=str(wrong))


def test_without_timm_a_timm_donor_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(DonorError, match=r'pip install "graftsearch\[timm\]"'):
        gs.load_donor("timm:resnet18", weights="none")
    from graftsearch.donors import _timm

    assert _timm.families() == {}


def test_taps_list_shows_the_timm_families(capsys):
    assert main(["taps", "--list"]) == 0
    out = capsys.readouterr().out
    assert "vgg16" in out and "timm:NAME" in out
    assert "resnet: timm:" in out and "convnext: timm:" in out


@pytest.mark.slow
def test_timm_donor_run_end_to_end(tmp_path):
    data = colour_folder(tmp_path / "images", per_class=12)
    run_dir = tmp_path / "run"
    code = main(["run", "--donor", "timm:resnet18", "--weights", "none", "--data", str(data),
                 "--image-size", str(SIZE), "--population", "8", "--generations", "2",
                 "--final-epochs", "1", "--latency-runs", "0", "--refine", "none", "--batch-size", "16",
                 "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir), "--quiet",
                 "--objective", "min-size", "--p-min", "0.4", "--cultivate", "1",
                 "--fine-tune-epochs", "1"])
    assert code == 0
    # the whole default path on a timm donor: cultivated (a new 3-class classifier), the graft
    # fine-tuned with and without distillation from it, exported to TorchScript and ONNX
    for name in ("taps.csv", "pareto.csv", "donor.pt", "best/model.pt", "best/model.torchscript.pt",
                 "best/metrics.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert metrics["donor"]["name"] == "timm:resnet18"
    assert set(metrics["graft"]["variants"]) == {"head_only", "fine_tuned", "distilled"}
    pytest.importorskip("onnxruntime")
    assert "model.onnx" in metrics["export"]["files"], metrics["export"].get("onnx_note")
    scripted = torch.jit.load(str(run_dir / "best" / "model.torchscript.pt"))
    assert scripted(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 3)
    record = torch.load(run_dir / "best" / "model.pt", map_location="cpu", weights_only=True)
    assert record["donor"]["name"] == "timm:resnet18"  # rebuildable from its name
