"""int8 copies of a graft: post-training and quantisation-aware, their files run without
graftsearch, and a failure never ends final training."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import graftsearch as gs
from graftsearch.graft._export import INT8_TORCHSCRIPT, QUANTIZED_ENGINE, read_torchscript_meta
from graftsearch.graft._quantize import OBSERVERS, quantization_engines
from graftsearch.training._schedule import TrainSchedule

from test_final import QUICK, data  # noqa: F401  (the tiny donor, images and cache)

INT8 = {**QUICK, "latency_runs": 0, "calibration_images": 16, "schedule":
        TrainSchedule(epochs=4, batch_size=8, lr=3e-3)}

# run in a fresh interpreter in which graftsearch cannot be imported: the int8 file must load
# and run with torch alone, its engine read from the description inside it
FRESH = textwrap.dedent("""
    import json, sys, zipfile
    sys.modules["graftsearch"] = None
    import torch
    path, inputs, expected = sys.argv[1:4]
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read(next(n for n in z.namelist() if n.endswith("/extra/graftsearch.json"))))
    torch.backends.quantized.engine = meta["quantized_engine"]
    model = torch.jit.load(path).eval()
    with torch.no_grad():
        got = model(torch.load(inputs))
    diff = float((got - torch.load(expected)).abs().max())
    print(json.dumps({"diff": diff, "classes": meta["class_names"]}))
""")


def _runs_without_graftsearch(final, best, tmp_path):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    engine = final.metrics["int8"]["engine"]
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with torch.no_grad():
            want = final.int8_model(x)
    finally:
        torch.backends.quantized.engine = previous
    torch.save(x, tmp_path / "x.pt")
    torch.save(want, tmp_path / "want.pt")
    done = subprocess.run([sys.executable, "-c", FRESH, str(best / INT8_TORCHSCRIPT),
                           str(tmp_path / "x.pt"), str(tmp_path / "want.pt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ptq_copy_is_chosen_on_val_and_runs_without_graftsearch(data, tmp_path, capsys):
    donor, dataset, cache = data
    final = gs.train_final(donor, cache, [2, 4], dataset=dataset,
                           settings=gs.FinalSettings(**INT8, quantize="ptq"),
                           out_dir=tmp_path / "best")
    q = final.metrics["int8"]
    assert "error" not in q, q
    assert q["method"] == "ptq" and q["calibration_images"] == 16
    from graftsearch.graft._record import FinalMetrics
    from graftsearch.report._report import _section_deployment

    text = "\n".join(_section_deployment(FinalMetrics.from_json(final.metrics)))
    assert "### int8 copy" in text and f"({q['engine']} engine" in text
    # every engine x observer was tried on val, and the kept one is the best of them
    candidates = q["ptq_candidates"]
    plain = [(c["engine"], c["observer"]) for c in candidates if not c["float_layers"]]
    assert plain == [(e, o) for e in quantization_engines() for o in OBSERVERS]
    assert q["ptq_val_accuracy"] == q["int8_val_accuracy"] == max(c["val_accuracy"]
                                                                  for c in candidates)
    kept = next(c for c in candidates if c["val_accuracy"] == q["ptq_val_accuracy"])
    assert (q["engine"], q["observer"]) == (kept["engine"], kept["observer"])
    assert "qat_val_accuracy" not in q  # ptq never fine-tunes
    best = tmp_path / "best"
    assert read_torchscript_meta(best / INT8_TORCHSCRIPT)[QUANTIZED_ENGINE] == q["engine"]
    saved = json.loads((best / "metrics.json").read_text())
    assert INT8_TORCHSCRIPT in saved["export"]["files"]
    assert saved["int8"]["file_mib"] == pytest.approx((best / INT8_TORCHSCRIPT).stat().st_size / 2**20)
    assert saved["export"]["max_abs_diff"]["int8_torchscript"] <= 1e-5
    fresh = _runs_without_graftsearch(final, best, tmp_path)
    assert fresh["diff"] <= 1e-5 and fresh["classes"] == list(dataset.classes)
    from graftsearch._cli import main

    image = dataset.split("test").paths[0]
    assert main(["predict", "--json", str(best / INT8_TORCHSCRIPT), str(image)]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["predictions"][0]["class"] in dataset.classes
    # the int8 test accuracy is that of the kept copy on the test images
    from graftsearch.data._images import load_image

    test = dataset.split("test")
    x = torch.stack([load_image(p, cache.preprocessing, normalize=False) for p in test.paths])
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = q["engine"]
    try:
        with torch.no_grad():
            acc = (final.int8_model(x).argmax(1).numpy() == test.labels).mean()
    finally:
        torch.backends.quantized.engine = previous
    assert q["int8_test_accuracy"] == pytest.approx(acc)


@pytest.mark.slow
def test_qat_fine_tunes_when_ptq_loses_val_accuracy(data, tmp_path, monkeypatch):
    import graftsearch.graft._int8 as int8

    donor, dataset, cache = data
    # the tiny problem quantises almost losslessly: a negative trigger makes QAT run anyway
    monkeypatch.setattr(int8, "QAT_TRIGGER", -1.0)
    final = gs.train_final(donor, cache, [2, 4], dataset=dataset,
                           settings=gs.FinalSettings(**INT8, quantize="qat", qat_epochs=2,
                                                     qat_lr=1e-3),
                           out_dir=tmp_path / "best")
    q = final.metrics["int8"]
    assert "error" not in q, q
    assert [h["epoch"] for h in q["qat_history"]] == [1, 2] == list(range(1, q["qat_epochs"] + 1))
    # the better of post-training and quantisation-aware on val is kept
    assert q["method"] == ("qat" if q["qat_val_accuracy"] > q["ptq_val_accuracy"] else "ptq")
    assert q["int8_val_accuracy"] == max(q["qat_val_accuracy"], q["ptq_val_accuracy"])
    fresh = _runs_without_graftsearch(final, tmp_path / "best", tmp_path)
    assert fresh["diff"] <= 1e-5
    # whichever copy was kept, the quantisation-aware one exports and runs on its own as well
    from graftsearch.graft._export import DeployableModel, export_int8
    from graftsearch.graft._final import fine_tune
    from graftsearch.graft._int8 import calibration_batches, quantization_aware
    from graftsearch.graft._quantize import Int8Recipe

    settings = gs.FinalSettings(**INT8, quantize="qat", qat_epochs=1, qat_lr=1e-3)
    pre = cache.preprocessing
    calibration, _ = calibration_batches(dataset, pre, settings, gs.graft._final.make_loader_for,
                                         False)
    engine = q["engine"]
    _, qat, history = quantization_aware(
        final.graft, calibration, Int8Recipe(engine), settings,
        lambda module, *, settings, teacher, tag: fine_tune(module, dataset, pre, settings,
                                                            teacher=teacher, tag=tag))
    assert len(history) == 1
    model = DeployableModel(qat, mean=pre.mean, std=pre.std, image_size=pre.image_size,
                            class_names=list(dataset.classes)).eval()
    other = tmp_path / "qat"
    other.mkdir()
    assert export_int8(model, other / INT8_TORCHSCRIPT, engine=engine, method="qat") <= 1e-5
    final.int8_model, final.metrics["int8"]["engine"] = model, engine
    assert _runs_without_graftsearch(final, other, tmp_path)["diff"] <= 1e-5


@pytest.mark.slow
def test_a_failed_quantisation_is_reported_and_the_run_goes_on(data, tmp_path, monkeypatch):
    import graftsearch.graft._int8 as int8

    def fail(*args, **kwargs):
        raise RuntimeError("no kernel for this layer")

    monkeypatch.setattr(int8, "quantize_int8", fail)
    donor, dataset, cache = data
    final = gs.train_final(donor, cache, [2], dataset=dataset,
                           settings=gs.FinalSettings(**INT8, quantize="ptq"),
                           out_dir=tmp_path / "best")
    saved = json.loads((tmp_path / "best" / "metrics.json").read_text())
    q = saved["int8"]
    assert q["mode"] == "ptq" and q["error"].startswith(
        "every int8 candidate failed (RuntimeError: no kernel for this layer;")
    assert [c["error"] for c in q["ptq_candidates"]] == \
        ["RuntimeError: no kernel for this layer"] * (2 * len(quantization_engines()))
    assert final.int8_model is None and not (tmp_path / "best" / INT8_TORCHSCRIPT).exists()
    assert (tmp_path / "best" / "model.torchscript.pt").is_file()
    from graftsearch.graft._record import FinalMetrics
    from graftsearch.report._report import _section_deployment

    text = "\n".join(_section_deployment(FinalMetrics.from_json(saved)))
    assert "int8 quantisation: not available (every int8 candidate failed (RuntimeError" in text


def test_quantize_modes_and_older_settings():
    assert gs.FinalSettings(quantize=True).quantize == "ptq"
    assert gs.FinalSettings(quantize=False).quantize is None
    with pytest.raises(gs.errors.ParameterError, match=r"'quantize' parameter must be None or one "
                                                       r"of \['ptq', 'qat'\]"):
        gs.FinalSettings(quantize="int4")
    with pytest.raises(gs.errors.ParameterError, match="'qat_lr' parameter must be a float > 0"):
        gs.FinalSettings(qat_lr=0)
    with pytest.raises(gs.errors.ParameterError, match="'qat_epochs' parameter must be an integer"):
        gs.FinalSettings(qat_epochs=0)


def test_cli_refuses_an_unknown_quantize_mode(capsys):
    from graftsearch._cli import main

    assert main(["run", "--data", "x", "--quantize", "int4"]) == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_a_run_directory_from_before_the_int8_modes_still_resumes(tmp_path):
    from graftsearch.pipeline._pipeline import _check_run_dir

    settings = gs.RunSettings(data="x", donor="efficientnet_lite0", objective="max-accuracy",
                              size_max="1M")
    (tmp_path / "checkpoint.pkl").write_bytes(b"")
    for old in (False, True):
        stored = {**settings.as_dict(), "quantize": old}
        (tmp_path / "config.json").write_text(json.dumps({"settings": stored}))
        now = settings if not old else gs.RunSettings(**{**settings.as_dict(), "quantize": "ptq"})
        _check_run_dir(tmp_path, now)  # the same run: no error
    with pytest.raises(gs.errors.SearchError, match=r"settings differ: quantize \('ptq' -> None\)"):
        _check_run_dir(tmp_path, settings)


def test_cli_quantize_flag_alone_means_ptq():
    from graftsearch._cli import build_parser
    from graftsearch._cli._run import _settings as resolve

    base = ["run", "--data", "x", "--donor", "efficientnet_lite0", "--objective", "max-accuracy",
            "--size-max", "1M"]
    assert resolve(build_parser().parse_args(base + ["--quantize"])).quantize == "ptq"
    assert resolve(build_parser().parse_args(base + ["--quantize", "qat"])).quantize == "qat"
    assert resolve(build_parser().parse_args(base)).quantize is None


def test_qat_runs_only_past_the_trigger_and_is_kept_only_when_better_on_val():
    from graftsearch.graft._int8 import QAT_TRIGGER, kept_method, loses_too_much

    assert QAT_TRIGGER == 0.01
    assert loses_too_much(0.90, 0.8899) and not loses_too_much(0.90, 0.8901)
    assert kept_method(0.90, 0.85, 0.86) == "qat"
    assert kept_method(0.90, 0.85, 0.85) == "ptq"  # a tie keeps the cheaper copy
    assert kept_method(0.90, 0.895, 0.99) == "ptq"  # within the trigger no fine-tune runs
    assert kept_method(0.90, 0.85, None) == "ptq"  # the fine-tune failed or did not run
