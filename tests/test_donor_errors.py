import subprocess
import sys

import pytest
import torch

import graftsearch as gs
from graftsearch._cli import main
from tiny import TinyCNN


def test_unknown_donor_suggests_close_names():
    with pytest.raises(gs.DonorError, match=r"Got 'vgg61' instead\. Did you mean .*'vgg16'"):
        gs.load_donor("vgg61")


def test_unknown_weights_name_lists_available():
    with pytest.raises(gs.DonorError, match=r"'weights' parameter must be .*IMAGENET1K_V1.*Got 'IMAGENET2K'"):
        gs.load_donor("vgg16", weights="IMAGENET2K")


def test_weights_download_failure_is_explained(monkeypatch):
    import urllib.error

    import torchvision

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(gs.DonorError, match=r"Could not download the weights .*efficientnet_lite0"):
        gs.load_donor("resnet18", weights="IMAGENET1K_V1")


def test_checkpoint_with_wrong_shapes_names_the_tensor(tmp_path):
    state = torch.nn.Linear(2, 2).state_dict()
    model = gs.load_donor("resnet18", weights="none", num_classes=9).module
    sd = model.state_dict()
    sd["fc.weight"] = torch.zeros(7, 512)
    sd["fc.bias"] = torch.zeros(7)
    path = tmp_path / "r18.pt"
    torch.save(sd, path)
    with pytest.raises(gs.errors.CheckpointError, match=r"'fc.weight': checkpoint \(7, 512\), 'resnet18' needs \(9, 512\)"):
        gs.load_donor("resnet18", checkpoint=str(path), num_classes=9)
    torch.save(state, path)
    with pytest.raises(gs.errors.CheckpointError, match=r"key\(s\) missing, first \['conv1.weight'"):
        gs.load_donor("resnet18", checkpoint=str(path), num_classes=9)


def test_state_dict_checkpoint_round_trip(tmp_path):
    model = gs.load_donor("resnet18", weights="none", num_classes=4).module
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    donor = gs.load_donor("resnet18", checkpoint=str(path), num_classes=4)
    torch.testing.assert_close(donor.module.fc.weight, model.fc.weight)


def test_graftsearch_donor_checkpoint_keeps_name_and_preprocessing(tmp_path):
    donor = gs.load_donor("paper_vgg16", weights="none", num_classes=3, image_size=64)
    path = tmp_path / "donor.pt"
    gs.donors.save_donor_checkpoint(donor, path, class_names=["a", "b", "c"])
    again = gs.load_donor(checkpoint=str(path))
    assert again.name == "paper_vgg16" and again.image_size == 64
    assert again.class_names == ["a", "b", "c"]
    torch.testing.assert_close(again.module.classifier[-1].weight, donor.module.classifier[-1].weight)


def test_pickled_model_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(TinyCNN(), path)
    with pytest.raises(gs.errors.CheckpointError, match=r"can run arbitrary code.*--trust-checkpoint"):
        gs.load_donor(checkpoint=str(path))
    donor = gs.load_donor(checkpoint=str(path), trust_checkpoint=True, image_size=32)
    assert len(donor.taps(32)) == 6


def test_torchscript_donor_is_tapped_like_the_original(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    path = tmp_path / "tiny.torchscript.pt"
    torch.jit.script(model).save(str(path))
    donor = gs.load_donor(checkpoint=str(path), image_size=32)
    plain = gs.Donor.from_module(model, image_size=32).taps(32)
    assert donor.taps(32).names == plain.names
    assert [t.params_upto for t in donor.taps(32)] == [t.params_upto for t in plain]
    x = torch.randn(2, 3, 32, 32)
    graft = gs.GraftedModel(donor, [3, 5], gs.HeadSpec(num_classes=3), image_size=32).eval()
    ref = gs.GraftedModel(gs.Donor.from_module(model, image_size=32), [3, 5],
                          graft.head, image_size=32).eval()
    with torch.no_grad():
        torch.testing.assert_close(graft(x), ref(x))


def test_missing_checkpoint_file():
    with pytest.raises(gs.errors.CheckpointError, match=r"'checkpoint' parameter must be an existing file"):
        gs.load_donor("resnet18", checkpoint="/nonexistent/x.pt")


def test_tap_index_out_of_range(tiny):
    with pytest.raises(gs.errors.SelectionError, match=r"tap indices in 1\.\.6\. Got 7 instead.*graftsearch taps --donor tiny"):
        tiny.taps(32).cost([1, 7], gs.HeadSpec(num_classes=3))


def test_tap_index_duplicated(tiny):
    with pytest.raises(gs.errors.SelectionError, match=r"distinct tap indices\. Got duplicates \[2\]"):
        tiny.taps(32).normalize([2, 2, 3])


def test_empty_selection(tiny):
    with pytest.raises(gs.errors.SelectionError, match=r"at least one tap\. Got an empty selection"):
        gs.GraftedModel(tiny, "000000", gs.HeadSpec(num_classes=3), image_size=32)


def test_explicit_tap_that_is_not_a_module():
    donor = gs.load_donor("vgg16", weights="none", taps=["features.1", "features.99"])
    with pytest.raises(gs.errors.TapError, match=r"Got 'features.99' instead\. Did you mean 'features.9'"):
        donor.taps(64)


def test_explicit_taps_off_the_main_path():
    donor = gs.load_donor("resnet18", weights="none", taps=["layer2.0.conv1", "layer2.0.downsample"])
    with pytest.raises(gs.errors.TapError, match=r"does not depend on the earlier tap"):
        donor.taps(64)


def test_image_size_too_small_for_deepest_tap():
    with pytest.raises(gs.ParameterError, match=r"'image_size' parameter must be at least 32 .*Got 16 instead"):
        gs.load_donor("vgg16", weights="none").taps(16)


def test_image_size_below_the_downsampling_of_a_padded_donor():
    # padding keeps every map at >= 1 px, so nothing fails: the size itself must be refused
    donor = gs.load_donor("efficientnet_lite0", weights="none")
    with pytest.raises(gs.ParameterError, match=r"'image_size' parameter must be at least 32 for "
                                                r"the donor 'efficientnet_lite0' \(it downsamples "
                                                r"32x.*Got 8 instead"):
        donor.taps(8)
    assert len(donor.taps(32)) == 18
    early = gs.load_donor("efficientnet_lite0", weights="none", taps=["features.1.0", "features.2.1"])
    assert [t.height for t in early.taps(8)] == [4, 2]  # early taps alone still see the image


@pytest.mark.parametrize("argv, pattern", [
    (["taps", "--donor", "vgg61"], "Did you mean"),
    (["taps", "--donor", "vgg16", "--weights", "NOPE"], "'weights' parameter"),
    (["taps", "--donor", "vgg16", "--image-size", "16"], "at least 32"),
    (["taps", "--donor", "efficientnet_lite0", "--image-size", "8"], "at least 32"),
    (["taps", "--donor", "vgg16", "--taps", "features.1,nope"], "'taps' parameter"),
])
def test_cli_prints_one_line_and_exits_2(argv, pattern, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert pattern in err
    assert "Traceback" not in err
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_cli_error_in_a_real_process_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "graftsearch", "taps", "--donor", "vgg61"],
                          capture_output=True, text=True, env={"COLUMNS": "1000", "PATH": ""})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Did you mean" in proc.stderr


def test_cli_taps_writes_csv(tmp_path, capsys):
    out = tmp_path / "taps.csv"
    assert main(["taps", "--donor", "vgg16", "--csv", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "index,name,channels,height,width,params_upto,macs_upto"
    assert len(lines) == 19 and lines[9].startswith("9,features.15,256,32,32,1735488,")


def test_cli_taps_table_fits_80_columns_without_cutting_numbers(monkeypatch):
    import io

    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr("graftsearch._cli._taps.console", lambda: Console(file=screen, width=80))
    assert main(["taps", "--donor", "vgg16", "--image-size", "224"]) == 0
    text = screen.getvalue()
    assert "…" not in text
    table = text.split("'graft' columns")[0]
    assert max(len(line) for line in table.splitlines()) <= 80
    taps = gs.load_donor("vgg16", weights="none").taps(224)
    head = gs.HeadSpec(num_classes=9, hidden=256)
    for t in taps:
        for number in (t.params_upto, t.macs_upto, taps.cost([t.index], head).params):
            assert f" {number:,} " in table or f" {number:,}\n" in table, number
    assert "7,635,264" in table  # features.23, cut to "7,635,2…" before
