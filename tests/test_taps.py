import random

import pytest
import torch

import graftsearch as gs
from graftsearch.taps import discover_taps
from tiny import TINY_CHANNELS, TINY_TAPS, tiny_donor

VGG16_TAPS = ["features.1", "features.3", "features.4", "features.6", "features.8", "features.9",
              "features.11", "features.13", "features.15", "features.16", "features.18",
              "features.20", "features.22", "features.23", "features.25", "features.27",
              "features.29", "features.30"]


def test_tiny_taps_hand_listed(tiny):
    taps = tiny.taps(32)
    assert list(taps.names) == TINY_TAPS
    assert list(taps.channels) == TINY_CHANNELS
    assert [t.spatial for t in taps] == [(32, 32), (16, 16), (16, 16), (16, 16), (8, 8), (8, 8)]
    assert taps.tap(1).index == 1 and taps.tap(6).name == "features.8"
    # params of each prefix, by hand: conv 3->8 (224) + bn (16); conv 8->16 (1168); residual
    # conv 16->16 (2320) + bn (32); conv 16->32 (4640)
    assert [t.params_upto for t in taps] == [240, 240, 1408, 3760, 3760, 8400]


def test_vgg16_has_the_papers_18_keras_taps():
    donor = gs.load_donor("vgg16", weights="none")
    taps = donor.taps(128)
    assert list(taps.names) == VGG16_TAPS
    assert taps.tap(8).channels == 256 and taps.tap(10).spatial == (16, 16)


def test_block_networks_tap_block_outputs():
    eff = gs.load_donor("efficientnet_b0", weights="none").taps(64)
    assert len(eff) == 18
    assert eff.names[0] == "features.0" and eff.names[1] == "features.1.0"
    assert eff.names[-1] == "features.8"
    res = gs.load_donor("resnet18", weights="none").taps(64)
    assert list(res.names) == ["relu", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                               "layer3.0", "layer3.1", "layer4.0", "layer4.1"]


def test_paper_numbers_vgg16_graft_and_donor():
    head = gs.HeadSpec(num_classes=9)
    taps = gs.load_donor("vgg16", weights="none").taps(128)
    cost = taps.cost([8, 9, 10], head)
    assert cost.params == 1_934_665
    assert round(cost.size_mib, 2) == 7.38
    paper = gs.load_donor("paper_vgg16", weights="none", num_classes=9, image_size=128)
    n = sum(p.numel() for p in paper.module.parameters())
    assert n == 16_880_201
    assert round(n * 4 / 2**20, 2) == 64.39


def _hooked_gap(donor, names, x):
    got = {}
    mods = dict(donor.module.named_modules())
    handles = [mods[n].register_forward_hook(
        lambda m, i, o, n=n: got.__setitem__(n, o.mean(dim=(2, 3)).clone())) for n in names]
    try:
        with torch.no_grad():
            try:
                donor.module(x)
            except RuntimeError:
                pass  # the donor's own classifier may not fit this image size
    finally:
        for h in handles:
            h.remove()
    return got


def _donor(name):
    if name == "tiny":
        return tiny_donor(), 32
    if name == "efficientnet_lite0":
        return gs.load_donor(name, weights="IMAGENET"), 64
    return gs.load_donor(name, weights="none"), 64


@pytest.mark.parametrize("name", ["tiny", "vgg16", "resnet18", "mobilenet_v3_small",
                                  "efficientnet_b0", "efficientnet_lite0"])
def test_cost_model_and_logits_equal_built_model(name):
    donor, size = _donor(name)
    taps = donor.taps(size)
    head = gs.HeadSpec(num_classes=5)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    x = (x - 0.5) / 0.25
    pooled = _hooked_gap(donor, taps.names, x)
    rng = random.Random(name)
    for _ in range(20):
        k = rng.randint(1, len(taps))
        sel = sorted(rng.sample(range(1, len(taps) + 1), k))
        torch.manual_seed(0)
        model = gs.GraftedModel(donor, sel, head, taps=taps).eval()
        cost = taps.cost(sel, head)
        assert cost.params == sum(p.numel() for p in model.parameters()), sel
        assert cost == model.measured_cost(), sel
        with torch.no_grad():
            got = model(x)
            want = model.head(torch.cat([pooled[taps.tap(i).name] for i in sel], dim=1))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_graft_holds_no_unused_donor_parameters(tiny):
    model = gs.GraftedModel(tiny, [2], gs.HeadSpec(num_classes=3), image_size=32)
    names = {n for n, _ in model.trunk.named_parameters()}
    assert names == {"features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias"}
    # its own copy: training the graft leaves the donor untouched
    before = tiny.module.features[0].weight.clone()
    with torch.no_grad():
        model.trunk.get_submodule("features.0").weight.add_(1.0)
    torch.testing.assert_close(tiny.module.features[0].weight, before)


def test_selection_forms_agree(tiny):
    taps = tiny.taps(32)
    assert taps.normalize("010100") == (2, 4)
    assert taps.normalize([4, 2]) == (2, 4)
    assert taps.normalize("2;4") == (2, 4)
    assert taps.normalize([False, True, False, True, False, False]) == (2, 4)
    assert taps.bits((2, 4)) == "010100"


def test_tap_list_csv_round_trip(tiny, tmp_path):
    taps = tiny.taps(32)
    path = tmp_path / "taps.csv"
    taps.to_csv(path)
    import csv

    rows = list(csv.DictReader(path.open()))
    again = gs.taps.TapList.from_records(rows, donor_name="tiny", image_size=32)
    assert again == taps


@pytest.mark.slow
def test_efficientnet_lite0_weights_are_real():
    skimage_data = pytest.importorskip("skimage.data")
    donor = gs.load_donor("efficientnet_lite0", weights="IMAGENET")
    assert donor.preprocessing.mean == (0.5, 0.5, 0.5) and donor.image_size == 224
    cats = donor.class_names
    import torchvision.transforms.functional as F

    def top1(image):
        t = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        t = F.resize(t, [224, 224], antialias=True)
        t = (t - 0.5) / 0.5
        with torch.no_grad():
            return cats[int(donor.module(t[None]).argmax())]

    assert top1(skimage_data.chelsea()) in {"tabby", "tiger cat", "Persian cat", "Siamese cat",
                                            "Egyptian cat"}
    assert top1(skimage_data.coffee()) in {"espresso", "cup", "coffee mug"}


def _per_prefix_reference(module, names, size):
    # What discovery did before it counted in one pass: cut the donor after each tap and count
    # the cut trunk's parameters and its MACs with torch's flop counter.
    from graftsearch.taps._trace import build_trunk, count_macs, count_params

    example = torch.zeros(1, 3, size, size)
    out = []
    for n in names:
        trunk = build_trunk(module, [n])
        out.append((count_params(trunk), count_macs(trunk, example)))
    return out


@pytest.mark.parametrize("name,size", [("tiny", 32), ("vgg16", 64), ("efficientnet_lite0", 128)])
def test_one_pass_costs_equal_the_flop_counter_on_each_prefix(name, size):
    donor, _ = _donor(name)
    taps = discover_taps(donor.module, size)
    want = _per_prefix_reference(donor.module, taps.names, size)
    assert [(t.params_upto, t.macs_upto) for t in taps] == want
    assert taps.tap(len(taps)).macs_upto > taps.tap(1).macs_upto > 0


def test_nested_tap_names_are_cut_one_by_one(tiny):
    # "features.6" is the residual block and "features.6.conv" its layer: together, torchvision
    # would resolve them to other nodes than each alone, so their costs come from separate cuts.
    from graftsearch.taps._trace import prefix_costs

    names = ["features.2", "features.6.conv", "features.6"]
    got = prefix_costs(tiny.module, names, torch.zeros(1, 3, 32, 32))
    assert [(p, m) for _, p, m in got] == _per_prefix_reference(tiny.module, names, 32)


def test_discovery_leaves_the_donor_as_it_was(tiny):
    module = tiny.module.train()
    module.features[1].eval()  # a frozen batch norm inside a training donor
    bn = module.features[1]
    before = (bn.running_mean.clone(), int(bn.num_batches_tracked))
    discover_taps(module, 32)
    assert module.training and not module.features[1].training
    assert all(m.training for i, m in enumerate(module.features) if i != 1)
    assert torch.equal(bn.running_mean, before[0]) and int(bn.num_batches_tracked) == before[1]
