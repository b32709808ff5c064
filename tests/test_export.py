"""Export: model.pt / TorchScript / ONNX reproduce the eager model; load_model rebuilds it."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import graftsearch as gs
from graftsearch.graft._export import load_torchscript, read_record


def _deployable(donor, selection=(2, 4), seed=0):
    torch.manual_seed(seed)
    graft = gs.GraftedModel(donor, list(selection), gs.HeadSpec(num_classes=3, hidden=8))
    return gs.graft.DeployableModel(graft, mean=donor.preprocessing.mean, std=donor.preprocessing.std,
                                    image_size=donor.image_size, class_names=["ant", "bee", "cat"]).eval()


@pytest.fixture
def images():
    return torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_deployable_model_normalises_then_grafts(tiny, images):
    model = _deployable(tiny)
    with torch.no_grad():
        want = model.graft((images - 0.5) / 0.25)  # the tiny donor's mean and std
        np.testing.assert_allclose(model(images), want, atol=1e-6)
    idx, prob = model.predict(images)
    assert idx.shape == (5,) and torch.all((prob > 1 / 3) & (prob <= 1))
    assert model.describe()["selection"] == [2, 4]
    assert sum(p.numel() for p in model.parameters()) == model.graft.num_params()  # no extra params


def test_export_files_reproduce_eager_model(tiny, images, tmp_path):
    model = _deployable(tiny)
    result = gs.export_model(model, tmp_path / "best", donor=tiny, metrics={"test": {"accuracy": 0.5}})
    assert result.model_pt.name == "model.pt" and result.torchscript.name == "model.torchscript.pt"
    assert result.max_abs_diff["torchscript"] <= 1e-5
    scripted, meta = load_torchscript(result.torchscript)
    assert meta["class_names"] == ["ant", "bee", "cat"] and meta["image_size"] == 32
    with torch.no_grad():
        want = model(images)
        np.testing.assert_allclose(scripted(images), want, atol=1e-5)
        np.testing.assert_allclose(scripted(images[:1]), want[:1], atol=1e-5)  # any batch size
    record = read_record(result.model_pt)
    assert record["metrics"] == {"test": {"accuracy": 0.5}}
    assert record["donor"] is None  # an in-memory module cannot be rebuilt from its name
    torch.load(result.model_pt, weights_only=True)  # loads without trusting pickles


def test_torchscript_file_is_frozen_compressed_and_reproducible(tiny, images, tmp_path):
    import zipfile

    from graftsearch.graft._export import _deflated, save_torchscript

    model = _deployable(tiny)
    a = save_torchscript(model, tmp_path / "a.pt")
    with zipfile.ZipFile(a) as archive:
        entries = archive.infolist()
        assert {e.compress_type for e in entries} == {zipfile.ZIP_DEFLATED}
        # frozen: one inlined graph, no code for the graft's submodules
        code = [e.filename for e in entries if "/code/" in e.filename and e.filename.endswith(".py")]
        assert len(code) == 1, code
        stored = sum(e.file_size for e in entries)
    assert a.stat().st_size < stored
    scripted, meta = load_torchscript(a)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(images), model(images), atol=1e-5)
    assert meta["class_names"] == ["ant", "bee", "cat"]
    # the rewrite keeps every entry's bytes, in order, and is itself deterministic
    _deflated(a.read_bytes(), tmp_path / "b.pt")
    _deflated(a.read_bytes(), tmp_path / "c.pt")
    assert (tmp_path / "b.pt").read_bytes() == (tmp_path / "c.pt").read_bytes()
    with zipfile.ZipFile(a) as x, zipfile.ZipFile(tmp_path / "b.pt") as y:
        assert x.namelist() == y.namelist()
        assert all(x.read(n) == y.read(n) for n in x.namelist())


def test_onnx_output_equals_eager_with_onnxruntime(tiny, images, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _deployable(tiny)
    result = gs.export_model(model, tmp_path, onnx=True)
    assert result.onnx is not None and result.max_abs_diff["onnx"] <= 1e-4
    session = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]  # another batch size than exported
    with torch.no_grad():
        np.testing.assert_allclose(got, model(images).numpy(), atol=1e-4)


@pytest.mark.slow
def test_torchscript_in_fresh_process_without_graftsearch(tiny, images, tmp_path):
    """Acceptance 1: plain torch in a new process gives the same predictions."""
    model = _deployable(tiny)
    result = gs.export_model(model, tmp_path, onnx=False)
    torch.save(images, tmp_path / "x.pt")
    code = textwrap.dedent(f"""
        import sys, json, torch
        m = torch.jit.load({str(result.torchscript)!r})
        x = torch.load({str(tmp_path / 'x.pt')!r})
        with torch.no_grad():
            logits = m(x)
        print(json.dumps({{"graftsearch_imported": any(k.startswith("graftsearch") for k in sys.modules),
                           "pred": logits.argmax(1).tolist(), "logits": logits.tolist()}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["graftsearch_imported"] is False
    with torch.no_grad():
        want = model(images)
    assert got["pred"] == want.argmax(1).tolist()
    np.testing.assert_allclose(np.array(got["logits"]), want.numpy(), atol=1e-5)


def test_load_model_needs_donor_for_in_memory_module(tiny, images, tmp_path):
    model = _deployable(tiny)
    gs.export_model(model, tmp_path, donor=tiny, onnx=False)
    with pytest.raises(gs.errors.ExportError, match="cannot rebuild from a name.*model.torchscript.pt"):
        gs.load_model(tmp_path / "model.pt")
    from tiny import tiny_donor

    other = tiny_donor(seed=5)  # same architecture, other weights: the saved ones replace them
    loaded = gs.load_model(tmp_path / "model.pt", donor=other)
    assert loaded.class_names == ["ant", "bee", "cat"] and loaded.image_size == 32
    with torch.no_grad():
        np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)


@pytest.fixture(scope="module")
def mobilenet():
    return gs.load_donor("mobilenet_v3_small", weights="none", image_size=32)  # no download


@pytest.mark.slow
def test_load_model_rebuilds_named_donor_without_weights(mobilenet, tmp_path):
    model = _deployable(mobilenet, selection=(2, 3))
    gs.export_model(model, tmp_path, donor=mobilenet, onnx=False)
    record = read_record(tmp_path / "model.pt")
    assert record["donor"]["name"] == "mobilenet_v3_small" and record["donor"]["checkpoint"] is None
    loaded = gs.load_model(tmp_path / "model.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    # the rebuilt model holds the graft's parameters and nothing of the rest of the donor
    assert loaded.graft.num_params() == model.graft.num_params()


def test_load_model_missing_file(tmp_path):
    with pytest.raises(gs.errors.ExportError, match="The 'path' parameter must be an existing model.pt file"):
        gs.load_model(tmp_path / "nope.pt")


def test_load_model_on_torchscript_file(tiny, tmp_path):
    result = gs.export_model(_deployable(tiny), tmp_path, onnx=False)
    with pytest.raises(gs.errors.ExportError, match="is a TorchScript file; load it with torch.jit.load"):
        gs.load_model(result.torchscript)


def test_load_model_on_foreign_file(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(gs.errors.ExportError, match="is not a graftsearch model.pt"):
        gs.load_model(tmp_path / "other.pt")


def test_export_rejects_plain_module(tmp_path):
    with pytest.raises(gs.ParameterError, match="The 'model' parameter must be a DeployableModel"):
        gs.export_model(torch.nn.Linear(2, 2), tmp_path)


def _save_pngs(tmp_path, n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"photo[{i}].png"  # brackets: printed as-is, not as rich markup
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_predict_cli_prints_class_and_probability(tiny, tmp_path, capsys):
    from graftsearch._cli import main
    from graftsearch.data._images import load_image

    model = _deployable(tiny)
    gs.export_model(model, tmp_path / "best", donor=tiny, onnx=False)
    paths = _save_pngs(tmp_path)
    x = torch.stack([load_image(p, tiny.preprocessing, normalize=False) for p in paths])
    idx, prob = model.predict(x)
    # model.pt of an in-memory donor cannot be rebuilt: predict falls back to TorchScript
    for target in (tmp_path / "best", tmp_path / "best" / "model.pt"):
        assert main(["predict", str(target)] + [str(p) for p in paths]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 3
        for line, p, i, q in zip(lines, paths, idx.tolist(), prob.tolist()):
            name, shown = line.split("\t")
            assert name == str(p) and shown == f"{model.class_names[i]} {q:.4f}"
    assert main(["predict", "--json", "--top", "2", str(tmp_path / "best" / "model.torchscript.pt"),
                 str(paths[0])]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [r["class"] for r in record["predictions"]][0] == model.class_names[idx[0]]
    assert len(record["predictions"]) == 2


def test_predict_cli_bad_image(tiny, tmp_path, capsys):
    from graftsearch._cli import main

    gs.export_model(_deployable(tiny), tmp_path, onnx=False)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(tmp_path), str(tmp_path / "broken.png")]) == 1
    err = capsys.readouterr().err
    assert "cannot be decoded" in err and "Traceback" not in err


def test_predict_cli_bad_image_in_a_batch_spares_the_others(tiny, tmp_path, capsys):
    from graftsearch._cli import main

    gs.export_model(_deployable(tiny), tmp_path / "best", donor=tiny, onnx=False)
    good = _save_pngs(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    images = [str(good[0]), str(broken), str(good[1]), str(tmp_path / "gone.png"), str(good[2])]
    assert main(["predict", "--batch-size", "4", str(tmp_path / "best")] + images) == 1
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.strip().splitlines()] == [str(p) for p in good]
    err = " ".join(err.split())
    assert "broken.png' cannot be decoded" in err and "gone.png' does not exist" in err
    assert "2 of 5 image(s) could not be read" in err and "Traceback" not in err
    assert main(["predict", "--json", str(tmp_path / "best")] + images) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in records] == images
    assert ["error" in r for r in records] == [False, True, False, True, False]
    assert "exit codes: 0 every image classified, 1 some image could not be read" in " ".join(
        _help(["predict", "--help"]).split())


def _help(argv):
    import contextlib
    import io

    from graftsearch._cli import main

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert main(argv) == 0
    return text.getvalue()


def _fake_run_dir(run_dir, *, feasible):
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"settings": {}}))
    (run_dir / "pareto.csv").write_text(f"bits,taps,feasible\n010100,2;4,{feasible}\n")
    return run_dir


def test_predict_cli_takes_a_run_directory(tiny, tmp_path, capsys):
    from graftsearch._cli import main

    run_dir = _fake_run_dir(tmp_path / "run", feasible=True)
    gs.export_model(_deployable(tiny), run_dir / "best", donor=tiny, onnx=False)
    image = _save_pngs(tmp_path, 1)[0]
    assert main(["predict", str(run_dir), str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")


def test_predict_of_a_run_with_nothing_feasible_says_so(tmp_path, capsys):
    from graftsearch._cli import main
    from graftsearch._cli._predict import open_model

    run_dir = _fake_run_dir(tmp_path / "run", feasible=False)
    with pytest.raises(gs.errors.ExportError, match=r"holds no model: its search found nothing "
                                                    r"feasible.*Relax --p-min or --size-max"):
        open_model(run_dir)
    assert main(["predict", str(run_dir), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "nothing feasible" in err and len(err.strip().splitlines()) == 1


def test_predict_of_a_run_stopped_before_its_model_says_resume(tmp_path):
    from graftsearch._cli._predict import open_model

    run_dir = _fake_run_dir(tmp_path / "run", feasible=True)
    with pytest.raises(gs.errors.ExportError, match=r"holds no best/ model yet.*graftsearch resume"):
        open_model(run_dir)


def test_predict_lets_no_future_warning_escape(tiny, tmp_path):
    import warnings

    from graftsearch._cli._predict import open_model, predict_files

    gs.export_model(_deployable(tiny), tmp_path / "best", donor=tiny, onnx=False)
    image = _save_pngs(tmp_path, 1)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # over pytest's filters, which hide torch.jit's notices
        model, meta = open_model(tmp_path / "best")
        assert "predictions" in predict_files(model, meta, [str(image)])[0]
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_predict_cli_missing_model(tmp_path, capsys):
    from graftsearch._cli import main

    assert main(["predict", str(tmp_path / "none.pt"), "x.png"]) == 2
    assert "The 'model' parameter must be a model.pt" in capsys.readouterr().err
