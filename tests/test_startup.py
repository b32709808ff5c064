"""Commands that answer without a donor start without torch: --help, the donor list, argument
errors (graftsearch._utils.lazy, graftsearch.donors._names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from graftsearch._utils.lazy import lazy_exports

PROBE = """
import sys, io, contextlib, json
import graftsearch._cli as cli
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
    rc = cli.main(sys.argv[1:])
print(json.dumps([rc, 'torch' in sys.modules, 'numpy' in sys.modules, out.getvalue(),
                  err.getvalue()]))
"""


def _start(args, cache):
    env = {**os.environ, "GRAFTSEARCH_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rc, torch, numpy, printed, err = json.loads(done.stdout.strip().splitlines()[-1])
    return rc, torch, numpy, printed, " ".join(err.split())


@pytest.mark.parametrize("args,code", [
    (["--help"], 0),
    (["run", "--help"], 0),
    (["taps", "--help"], 0),
    (["predict", "--help"], 0),
    (["run", "--generations", "x"], 2),
    (["run", "--no-such-flag"], 2),
    (["taps", "--donor", "vgg16", "--image-size", "0"], 2),
])
def test_help_and_argument_errors_do_not_import_torch(tmp_path, args, code):
    rc, torch, numpy, _, _ = _start(args, tmp_path)
    assert rc == code
    assert not torch and not numpy


def test_donor_list_and_misspelt_donor_answer_from_the_kept_names(tmp_path):
    rc, torch, _, printed_first, _ = _start(["taps", "--list"], tmp_path)
    assert rc == 0 and torch  # the first listing imports torchvision to learn the names
    kept = list((tmp_path / "donor-names").glob("*.json"))
    assert len(kept) == 1 and "vgg16" in json.loads(kept[0].read_text())["torchvision"]
    rc, torch, _, printed_again, _ = _start(["taps", "--list"], tmp_path)
    assert rc == 0 and not torch and printed_again == printed_first
    run = ["run", "--preset", "demo", "--p-min", "0.9", "--run-dir", str(tmp_path / "run")]
    for command in (["taps"], run):
        rc, torch, _, _, err = _start(command + ["--donor", "vgg1"], tmp_path)
        assert rc == 2 and not torch and "Did you mean 'vgg19', 'vgg16'" in err, command


def test_damaged_or_unwritable_name_list_is_recomputed(tmp_path, monkeypatch):
    from graftsearch.donors import _names

    monkeypatch.setenv("GRAFTSEARCH_CACHE", str(tmp_path))
    names = _names.donor_names()
    kept = next((tmp_path / "donor-names").glob("*.json"))
    kept.write_text("{not json")
    assert _names.donor_names() == names
    assert json.loads(kept.read_text())["format"] == 1
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("GRAFTSEARCH_CACHE", str(blocked))  # a file: nothing can be kept under it
    assert _names.donor_names() == names


def test_lazy_namespace_imports_on_first_use_and_lists_its_names():
    module = type(sys)("lazy_probe")
    sys.modules["lazy_probe"] = module
    try:
        names, getattr_, dir_ = lazy_exports("lazy_probe", {"json": ("dumps",), "os.path": ("join",)})
        module.__getattr__, module.__dir__ = getattr_, dir_
        assert names == ["dumps", "join"]
        assert module.dumps is json.dumps and "dumps" in vars(module)  # kept after first use
        assert {"dumps", "join"} <= set(dir(module))
        with pytest.raises(AttributeError, match="module 'lazy_probe' has no attribute 'loads'"):
            module.loads
    finally:
        del sys.modules["lazy_probe"]


def test_a_name_exported_twice_is_refused():
    with pytest.raises(ValueError, match="'dumps' is exported from two modules"):
        lazy_exports("p", {"json": ("dumps",), "pickle": ("dumps",)})


def test_stage_packages_are_attributes_of_the_package_after_a_bare_import():
    code = ("import graftsearch as gs, sys; assert 'graftsearch.taps' not in sys.modules; "
            "print(gs.taps.TapList.__name__, gs.optimize.SearchSettings.__name__, "
            "'taps' in dir(gs))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TapList", "SearchSettings", "True"]
