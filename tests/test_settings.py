"""One source for every setting: the parts' defaults, the commands' shared flags, the API's
defaults and the donor's default weights agree everywhere."""

import argparse
import dataclasses
import inspect
import json

import pytest

import graftsearch as gs
from graftsearch._cli import build_parser, main
from graftsearch._cli._common import CACHE_SETTINGS, DATA_SETTINGS, DONOR_SETTINGS
from graftsearch.donors._zoo import resolve_weights
from graftsearch.features._cache import build_cache
from graftsearch.features._options import CacheOptions
from graftsearch.pipeline._settings import (DEFAULTS, FIELDS, PARTS, cache_kwargs, settings_from,
                                            values_from)
from tiny import colour_folder


def _subparser(command: str, action: str = None) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = sub.choices[command]
    if action is not None:
        inner = next(a for a in found._actions if isinstance(a, argparse._SubParsersAction))
        found = inner.choices[action]
    return found


def _flag_help(parser: argparse.ArgumentParser) -> dict:
    return {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}


# ---------------------------------------------------------------------------------------------
# the donor's weights


def test_default_weights_resolve_per_family_without_loading():
    assert gs.donors.DonorSpec().weights == "DEFAULT" == DEFAULTS["weights"]
    assert resolve_weights("vgg16", "DEFAULT") == "IMAGENET1K_V1"
    assert resolve_weights("paper_vgg16", "default") == "IMAGENET1K_V1"
    assert resolve_weights("efficientnet_lite0", "DEFAULT") == "IMAGENET"
    assert resolve_weights("efficientnet_lite0", "IMAGENET1K_V1") == "IMAGENET"
    for random in (None, "none", "None", "NONE"):
        assert resolve_weights("vgg16", random) is None
        assert gs.donors.DonorSpec(name="vgg16", weights=random).weights is None
    donor = gs.load_donor("vgg16", load_weights=False)
    assert donor.weights == "IMAGENET1K_V1" and donor.weights_text == "weights IMAGENET1K_V1"
    assert gs.load_donor("resnet18", weights="none").weights_text == "random weights (none)"


def test_weights_with_a_checkpoint_is_an_error():
    with pytest.raises(gs.ParameterError, match=r"'weights' parameter must be unset, 'DEFAULT' or "
                                                r"'none' with a checkpoint .*Got 'IMAGENET1K_V1'"):
        gs.donors.DonorSpec(name="resnet18", checkpoint="ft.pt", weights="IMAGENET1K_V1")
    assert gs.donors.DonorSpec(checkpoint="ft.pt").weights is None  # the checkpoint's own


def test_weights_must_be_text():
    with pytest.raises(gs.ParameterError, match=r"'weights' parameter must be a weights name, "
                                                r"'DEFAULT' .* or 'none' .*Got 3 instead"):
        gs.donors.DonorSpec(name="vgg16", weights=3)


def test_lite0_weights_name_lists_the_choices():
    with pytest.raises(gs.DonorError, match=r"'weights' parameter must be one of IMAGENET, "
                                            r"IMAGENET1K, IMAGENET1K_V1, DEFAULT or 'none'"):
        gs.load_donor("efficientnet_lite0", weights="IMAGENET2K")


def test_taps_neither_reads_nor_downloads_weights(monkeypatch, capsys):
    import torchvision

    def offline(*a, **k):
        raise AssertionError("taps tried to read the weights")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    assert main(["taps", "--donor", "resnet18"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "donor resnet18: weights IMAGENET1K_V1 (not read" in out


def test_a_run_dir_of_the_old_default_weights_is_the_same_run(tmp_path):
    from graftsearch.pipeline._pipeline import _check_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = dict(settings_from({"p_min": 0.9, "run_dir": str(run_dir)}).as_dict(),
               weights="IMAGENET1K_V1")  # what a run stored before DEFAULT was the default
    (run_dir / "config.json").write_text(json.dumps({"settings": old}))
    (run_dir / "checkpoint.pkl").write_bytes(b"")
    _check_run_dir(run_dir, settings_from({"p_min": 0.9, "run_dir": str(run_dir)}))
    with pytest.raises(gs.SearchError, match=r"weights \('IMAGENET1K_V1' -> None\)"):
        _check_run_dir(run_dir, settings_from({"p_min": 0.9, "run_dir": str(run_dir),
                                               "weights": "none"}))


# ---------------------------------------------------------------------------------------------
# the cache of `graftsearch cache` is the cache of `graftsearch run`


def _cache_path(capsys) -> str:
    out = capsys.readouterr().out
    return out.split("feature cache: ")[1].split("\n")[0].strip(), out


def test_cache_command_builds_the_cache_run_uses(tmp_path, capsys):
    data = colour_folder(tmp_path / "images", per_class=8)
    cache_dir = tmp_path / "cache"
    argv = ["cache", "--donor", "efficientnet_lite0", "--data", str(data),
            "--cache-dir", str(cache_dir), "--workers", "0"]
    assert main(argv) == 0
    path, out = _cache_path(capsys)
    assert "donor efficientnet_lite0: weights IMAGENET" in out

    # what `graftsearch run --donor efficientnet_lite0 --data DIR` builds, with its defaults
    settings = settings_from({"donor": "efficientnet_lite0", "data": str(data), "p_min": 0.9,
                              "cache_dir": str(cache_dir), "workers": 0})
    donor = gs.load_donor(settings.donor_spec())
    assert donor.fingerprint() == gs.load_donor("efficientnet_lite0", weights="DEFAULT").fingerprint()
    cache = build_cache(donor, gs.load_dataset(settings.data_spec()),
                        **cache_kwargs(settings.as_dict()))
    assert str(cache.path) == path and cache.image_size == 128

    assert main(argv + ["--weights", "none"]) == 0
    random_path, out = _cache_path(capsys)
    assert "random weights (none)" in out
    assert random_path != path
    random = gs.FeatureCache.open(random_path)
    assert random.fingerprint != cache.fingerprint
    assert random.manifest["inputs"]["donor"]["weights_sha256"] == \
        gs.load_donor("efficientnet_lite0", weights=None).fingerprint()


@pytest.mark.slow
def test_cache_command_cache_is_the_one_a_real_run_reuses(tmp_path, capsys):
    data = colour_folder(tmp_path / "images", per_class=8)
    cache_dir = tmp_path / "cache"
    assert main(["cache", "--donor", "efficientnet_lite0", "--data", str(data),
                 "--cache-dir", str(cache_dir)]) == 0
    path, _ = _cache_path(capsys)
    run_dir = tmp_path / "run"
    code = main(["run", "--donor", "efficientnet_lite0", "--data", str(data), "--cache-dir",
                 str(cache_dir), "--p-min", "0.3", "--population", "4", "--generations", "0",
                 "--final-epochs", "1", "--latency-runs", "0", "--run-dir", str(run_dir),
                 # from the pretrained weights as they are: a cultivated donor has its own cache
                 "--cultivate", "0", "--no-fine-tune", "--quiet"])
    assert code in (0, 1)
    log = (run_dir / "log.txt").read_text()
    assert f"reusing the feature cache {path}" in log
    assert "loading the donor efficientnet_lite0 with weights IMAGENET" in log


# ---------------------------------------------------------------------------------------------
# RunSettings is its parts


def test_run_settings_defaults_are_the_parts_defaults():
    settings = settings_from({"p_min": 0.9})
    # a run re-ranks its front with the mlp proxy; the bare search has no second fitness
    assert settings.search_settings() == gs.SearchSettings(p_min=0.9, refine="front")
    assert settings.mlp_settings() == gs.MLPSettings()
    assert settings.head_spec(9) == gs.HeadSpec(num_classes=9)
    assert settings.final_settings() == gs.FinalSettings()
    assert settings.final_settings().schedule == gs.training.PAPER_SCHEDULE
    assert settings.cache_options() == CacheOptions(image_size=128)
    assert settings.donor_spec() == gs.donors.DonorSpec(image_size=128)
    assert settings.data_spec() == gs.data.DataSpec(source="deepweeds")


def test_parts_that_share_a_setting_agree_on_its_default():
    # RunSettings takes a shared setting's default from its first part; the others must agree
    own = {name for name, f in FIELDS.items()
           if f.metadata["part"] is None or f.default != PARTS[f.metadata["part"]].default(name)}
    assert own == {"data", "image_size", "cultivate", "proxy", "refine", "top_k", "run_dir",
                   "preset"}
    # CultivateSettings' num_workers (0) is filled from `workers` (unset: by cores), which only
    # decides how fast images are decoded, never what is computed
    derived = {("cultivate", "workers")}
    for key, part in PARTS.items():
        for name in part.fields:
            if name not in own and (key, name) not in derived:
                assert part.default(name) == DEFAULTS[name], (key, name)


def test_api_search_has_the_run_defaults():
    params = inspect.signature(gs.search).parameters
    for arg, setting in (("weights", "weights"), ("fitness", "proxy"), ("refine", "refine"),
                         ("objective", "objective"), ("image_size", "image_size"),
                         ("cache_dir", "cache_dir"), ("seed", "seed")):
        assert params[arg].default == DEFAULTS[setting], arg
    assert DEFAULTS["refine"] == "front" != gs.SearchSettings(p_min=0.5).refine
    assert DEFAULTS["weights"] == "DEFAULT" == gs.donors.DonorSpec().weights


def test_checkpoint_every_reaches_the_search_settings(tmp_path):
    from graftsearch._cli._run import _settings

    args = build_parser().parse_args(["run", "--p-min", "0.9", "--checkpoint-every", "3"])
    settings = _settings(args)
    assert settings.checkpoint_every == 3 and settings.search_settings().checkpoint_every == 3
    resume = build_parser().parse_args(["resume", str(tmp_path), "--checkpoint-every", "5"])
    assert resume.checkpoint_every == 5


def test_a_part_error_names_the_run_setting(capfd):
    with pytest.raises(gs.ParameterError, match=r"The 'proxy_epochs' parameter must be an integer >= 1"):
        settings_from({"p_min": 0.9, "proxy_epochs": 0})
    with pytest.raises(gs.ParameterError, match=r"The 'head_width' parameter must be an integer >= 0"):
        settings_from({"p_min": 0.9, "head_width": -1})
    with pytest.raises(gs.ParameterError, match=r"The 'final_lr' parameter must be a float > 0"):
        settings_from({"p_min": 0.9, "final_lr": 0.0})
    assert main(["run", "--p-min", "0.9", "--workers", "-1"]) == 2
    assert "argument --workers: The 'workers' parameter" in capfd.readouterr().err
    assert main(["run", "--p-min", "0.9", "--checkpoint-every", "0"]) == 2
    assert ("argument --checkpoint-every: The 'checkpoint_every' parameter must be an integer >= 1"
            in capfd.readouterr().err)


# ---------------------------------------------------------------------------------------------
# every command's shared flags


@pytest.mark.parametrize("command, names", [
    (("cache",), DONOR_SETTINGS + DATA_SETTINGS + CACHE_SETTINGS),
    (("taps",), DONOR_SETTINGS + ("image_size", "head_width")),
    (("donor", "train"), DONOR_SETTINGS + DATA_SETTINGS + ("image_size", "device", "workers")),
])
def test_commands_share_the_flags_of_run(command, names):
    run = _flag_help(_subparser("run"))
    other = _flag_help(_subparser(*command))
    for name in names:
        flag = "--" + name.replace("_", "-")
        assert other[flag] == run[flag], flag
    # and without flags they resolve to run's defaults
    args = build_parser().parse_args(list(command) + (["--data", "x"] if "data" in names else []))
    values = values_from({k: v for k, v in vars(args).items() if k in FIELDS})
    for name in names:
        if name != "data":
            assert values[name] == DEFAULTS[name], name


def test_donor_train_is_the_runs_cultivation():
    from graftsearch.pipeline._settings import build_part

    args = build_parser().parse_args(["donor", "train", "--data", "x", "--workers", "0"])
    values = values_from({k: v for k, v in vars(args).items() if k in FIELDS})
    trained = build_part("cultivate", values, epochs=args.epochs)
    in_run = settings_from({"p_min": 0.9, "cultivate": args.epochs, "workers": 0})
    assert trained == in_run.cultivate_settings(in_run.cultivate_epochs(donor_fits=False))
    assert dataclasses.replace(trained, image_size=None) == gs.CultivateSettings(num_workers=0)


def test_loaded_weights_need_their_own_classifier():
    with pytest.raises(gs.DonorError, match=r"'num_classes' parameter must be 1000 \(the classes of "
                                            r"the weights .*Got 9 instead.*--weights none"):
        gs.load_donor("resnet18", num_classes=9)
    # the architecture alone (taps, costs) may have any classifier
    donor = gs.load_donor("resnet18", num_classes=9, load_weights=False)
    assert donor.module.fc.out_features == 9 and donor.class_names is None


@pytest.mark.parametrize("command", [["run"], ["resume"], ["taps"], ["cache"], ["donor", "train"],
                                     ["data", "download"], ["report"], ["predict"]])
def test_every_command_help_renders(command, capsys):
    # argparse formats help text with %: a literal '%' in a setting's help must not break it
    try:
        code = main(command + ["--help"])
    except SystemExit as done:  # argparse's own exit after printing the help
        code = done.code
    assert code == 0
    assert "usage: graftsearch" in capsys.readouterr().out
