"""`graftsearch run` / `resume`: the whole path, resumption, CLI errors and config files."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tiny import colour_folder
import torch

import graftsearch as gs
from graftsearch._cli import main
from graftsearch.pipeline._pipeline import run
from graftsearch.pipeline._settings import read_config, settings_from

RUN_FILES = ["config.json", "taps.csv", "evaluations.csv", "pareto.csv", "checkpoint.pkl",
             "convergence.csv", "report.md", "pareto.png", "convergence.png", "log.txt",
             "best/model.pt", "best/model.torchscript.pt", "best/metrics.json", "best/confusion.csv"]


@pytest.fixture
def small_run(tmp_path):
    data = colour_folder(tmp_path / "images")

    def args(run_dir, cache_dir, *extra):
        return ["run", "--donor", "mobilenet_v3_small", "--weights", "none", "--data", str(data),
                "--image-size", "32", "--population", "8", "--generations", "3",
                "--final-epochs", "3", "--latency-runs", "2", "--batch-size", "16",
                "--cache-dir", str(cache_dir), "--run-dir", str(run_dir), "--quiet",
                "--objective", "min-size", "--p-min", "0.5",
                # the default path (cultivation, fine-tuning, distillation), one epoch each
                "--cultivate", "1", "--fine-tune-epochs", "1", *extra]
    return args


def _settings(argv):
    from graftsearch._cli import build_parser
    from graftsearch._cli._run import _settings as resolve

    return resolve(build_parser().parse_args(argv))


def _strip_times(path: Path) -> str:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame.drop(columns=["evaluated_at"]).to_csv(index=False)


def _same_result(a: Path, b: Path) -> None:
    for name in ("evaluations.csv", "pareto.csv"):
        assert _strip_times(a / name) == _strip_times(b / name), name
    for name in ("taps.csv", "convergence.csv"):
        if name == "convergence.csv":
            fa = pd.read_csv(a / name).drop(columns=["elapsed_s"])
            fb = pd.read_csv(b / name).drop(columns=["elapsed_s"])
            pd.testing.assert_frame_equal(fa, fb)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes()
    ma = json.loads((a / "best" / "metrics.json").read_text())
    mb = json.loads((b / "best" / "metrics.json").read_text())
    assert ma["selection"] == mb["selection"]
    assert ma["graft"]["test"] == mb["graft"]["test"]
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    la = torch.jit.load(str(a / "best" / "model.torchscript.pt"))(x)
    lb = torch.jit.load(str(b / "best" / "model.torchscript.pt"))(x)
    torch.testing.assert_close(la, lb)


@pytest.mark.slow
def test_run_then_interrupted_runs_resume_to_the_same_result(small_run, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main(small_run(ref, tmp_path / "cache-ref")) == 0
    for name in RUN_FILES + ["best/model.onnx"]:
        assert (ref / name).is_file(), name
    out = capsys.readouterr().out
    assert "Best graft" in out and "test accuracy" in out

    # the exported model loads with plain torch and predicts the classes it was trained on
    model = torch.jit.load(str(ref / "best" / "model.torchscript.pt"))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert main(["predict", str(ref / "best" / "model.pt"),
                 str(next((tmp_path / "images" / "class_1").iterdir()))]) == 0
    assert "class_" in capsys.readouterr().out

    for stage, after in (("cache", 1), ("search", 1)):
        run_dir = tmp_path / f"stopped-{stage}"
        argv = small_run(run_dir, tmp_path / f"cache-{stage}")
        settings = _settings(argv)

        def stop(event, stage=stage, after=after):
            if event.stage == stage and event.done >= after:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run(settings, progress=stop)
        assert not (run_dir / "best" / "metrics.json").exists()
        assert main(["resume", str(run_dir), "--quiet"]) == 0
        _same_result(ref, run_dir)


@pytest.mark.slow
def test_infeasible_p_min_exits_1_with_the_closest_result(small_run, tmp_path, capsys, caplog):
    run_dir = tmp_path / "run"
    argv = small_run(run_dir, tmp_path / "cache")
    noise = colour_folder(tmp_path / "noise", signal=False)
    argv[argv.index("--data") + 1] = str(noise)
    argv[argv.index("--p-min") + 1] = "0.999"
    argv += ["--generations", "1"]
    with caplog.at_level(logging.INFO, logger="graftsearch"):
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert "nothing feasible" in err and "0.999" in err
    # said once, on stderr: not also as a logged warning (the CLI shows warnings on stderr)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "nothing feasible" in r.getMessage()]
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert len(pareto) >= 1 and not pareto["feasible"].astype(bool).any()
    assert (run_dir / "report.md").is_file() and (run_dir / "pareto.png").is_file()
    assert "0.999" in (run_dir / "report.md").read_text()
    # no model is exported that would pass for one meeting the constraint
    assert not (run_dir / "best" / "model.pt").exists()


def _infeasible_outcome(message):
    """What pipeline.run returns when nothing is feasible, without running anything."""
    from types import SimpleNamespace

    def fake_run(settings, progress=None):
        pareto = pd.DataFrame([{"rank": 1, "taps": "3", "params": 1200, "size_mib": 0.01,
                                "val_accuracy": 0.41}])
        result = SimpleNamespace(feasible=False, message=message, best=None, pareto=pareto)
        run_dir = Path(settings.run_dir)
        return SimpleNamespace(result=result, feasible=False, final=None, run_dir=run_dir,
                               report=run_dir / "report.md")

    return fake_run


def test_nothing_feasible_is_said_once_and_resume_names_itself(tmp_path, monkeypatch, capsys):
    message = "No selection reached p_min = 0.999. The closest was taps 3, 0.5890 short."
    monkeypatch.setattr("graftsearch.pipeline._pipeline.run", _infeasible_outcome(message))
    run_dir = tmp_path / "run"
    argv = ["run", "--preset", "demo", "--p-min", "0.999", "--run-dir", str(run_dir), "--quiet"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert (out + err).count("nothing feasible") == 1
    assert (out + err).count("No selection reached") == 1
    assert "graftsearch run ->" in out

    run_dir.mkdir()
    settings = settings_from({"preset": "demo", "p_min": 0.999, "run_dir": str(run_dir)})
    (run_dir / "config.json").write_text(json.dumps({"settings": settings.as_dict()}))
    assert main(["resume", str(run_dir), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "graftsearch resume ->" in out and "graftsearch run" not in out
    assert (out + err).count("nothing feasible") == 1


@pytest.mark.parametrize("extra, pattern", [
    (["--donor", "vgg61"], r"Did you mean .*'vgg16'"),
    (["--weights", "IMAGENET2K"], r"'weights' parameter must be a weights name"),
    (["--donor", "vgg16", "--image-size", "16"], r"'image_size' parameter must be at least 32"),
    (["--donor", "efficientnet_lite0", "--image-size", "8"], r"'image_size' parameter must be at least 32"),
    (["--taps", "features.0,features.99"], r"'taps' parameter must be names of modules"),
    (["--data", "/nonexistent/images"], r"data"),
    (["--split", "official:7"], r"split"),
    (["--p-min", "1.3"], r"argument --p-min: The 'p_min' parameter must be a float in \(0, 1\]"),
    (["--objective", "max-accuracy"], r"'size_max' parameter must be a size.*`--size-max 2M`"),
    (["--objective", "max-accuracy", "--size-max", "lots"], r"argument --size-max"),
    (["--size-max", "2M"], r"argument --size-max"),
    (["--population", "two"], r"argument --population: invalid int value"),
    (["--crossover", "three-point"], r"argument --crossover: invalid choice"),
    (["--preset", "nope"], r"argument --preset"),
    (["--donor-checkpoint", "/nonexistent/donor.pt"], r"'checkpoint' parameter must be an existing file"),
    (["--objective", "max-accuracy", "--size-max", "0%"], r"share of the donor's size above 0%"),
    (["--objective", "max-accuracy", "--size-max", "130%"], r"at most 100% \('30%'\)\. Got '130%'"),
    (["--objective", "max-accuracy", "--size-max", "30 %x"], r"Got '30 %x' instead"),
    (["--cultivate", "lots"], r"'cultivate' parameter must be 'auto' or an integer >= 0"),
    (["--recipe", "fancy"], r"argument --recipe: invalid choice"),
    (["--distill-alpha", "1.5"], r"'distill_alpha' parameter must be a float in \[0, 1\]"),
    (["--distill-temperature", "0"], r"'distill_temperature' parameter must be a float > 0"),
    (["--fine-tune-epochs", "0"], r"'fine_tune_epochs' parameter must be an integer >= 1"),
    (["--proxy-probe", "lad"], r"argument --proxy-probe: invalid choice: 'lad'"),
])
def test_cli_user_errors_are_one_line_and_exit_2(small_run, tmp_path, extra, pattern, capfd):
    argv = small_run(tmp_path / "run", tmp_path / "cache") + extra
    assert main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    import re

    assert re.search(pattern, err), err


def test_missing_data_offline_says_what_is_missing_and_the_two_ways(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GRAFTSEARCH_DATA", str(tmp_path / "data"))

    def offline(*a, **k):
        raise gs.DataError("Could not download 'images.zip': no network.")

    monkeypatch.setattr("graftsearch.data._download.download_deepweeds", offline)
    code = main(["run", "--p-min", "0.89", "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    err = capfd.readouterr().err
    assert "no network" in err and "--data PATH" in err and "--preset demo" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra", [["--data", "/nonexistent/images"], ["--donor", "vgg61"],
                                   ["--taps", "features.0,features.99"]])
def test_a_failed_start_leaves_no_run_directory(small_run, tmp_path, extra, capfd):
    run_dir = tmp_path / "runs" / "first-try"
    assert main(small_run(run_dir, tmp_path / "cache") + extra) == 2
    assert not (tmp_path / "runs").exists()  # nor the folder made to hold it
    capfd.readouterr()

    # a directory the user made, or one holding anything else, stays
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(small_run(mine, tmp_path / "cache") + extra) == 2
    # a misspelt donor is refused before the run starts writing; the others once it has
    written = [] if extra[0] == "--donor" else ["config.json", "log.txt"]
    assert sorted(p.name for p in mine.iterdir()) == written
    notes = tmp_path / "new" / "notes.txt"
    from graftsearch.pipeline._pipeline import _remove_failed_start

    notes.parent.mkdir()
    (notes.parent / "config.json").write_text("{}")
    notes.write_text("keep me")
    _remove_failed_start(notes.parent, [notes.parent])
    assert notes.read_text() == "keep me" and (notes.parent / "config.json").is_file()


def test_missing_data_offline_leaves_no_run_directory(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GRAFTSEARCH_DATA", str(tmp_path / "data"))

    def offline(*a, **k):
        raise gs.DataError("Could not download 'images.zip': no network.")

    monkeypatch.setattr("graftsearch.data._download.download_deepweeds", offline)
    assert main(["run", "--p-min", "0.89", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    assert not (tmp_path / "run").exists()


def test_proxy_probe_flag_reaches_the_fast_proxy(small_run, tmp_path):
    assert _settings(small_run(tmp_path / "a", tmp_path / "c")).fast_settings().probe == "logistic"
    chosen = _settings(small_run(tmp_path / "b", tmp_path / "c", "--proxy-probe", "lda"))
    assert chosen.proxy_probe == "lda"
    assert chosen.fast_settings() == gs.FastSettings(probe="lda")


def test_print_config_round_trip(tmp_path, capsys):
    argv = ["run", "--preset", "demo", "--objective", "max-accuracy", "--size-max", "7.5MiB",
            "--population", "12", "--no-fine-tune", "--weights", "none", "--run-dir", "x"]
    assert main(argv + ["--print-config"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "run.toml"
    path.write_text(text)
    first = _settings(argv)
    again = _settings(["run", "--config", str(path)])
    assert again == first
    assert again.weights is None and again.size_max == "7.5MiB" and again.population == 12
    # flags override the file
    assert _settings(["run", "--config", str(path), "--population", "20"]).population == 20
    # and the run directory's config.json is enough to repeat a run
    (tmp_path / "config.json").write_text(json.dumps({"settings": first.as_dict()}))
    assert settings_from(read_config(tmp_path / "config.json")) == first


def test_config_file_unknown_key_is_named(tmp_path, capfd):
    path = tmp_path / "run.toml"
    path.write_text('p_mni = 0.9\n')
    assert main(["run", "--config", str(path)]) == 2
    err = capfd.readouterr().err
    assert "Unknown setting 'p_mni'" in err and "p_min" in err


def test_run_dir_holding_another_run_is_refused(tmp_path, capfd):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = settings_from({"p_min": 0.8, "run_dir": str(run_dir)})
    (run_dir / "config.json").write_text(json.dumps({"settings": other.as_dict()}))
    (run_dir / "evaluations.csv").write_text("bits\n")  # that run got as far as searching
    code = main(["run", "--p-min", "0.9", "--run-dir", str(run_dir), "--quiet"])
    assert code == 2
    assert "holds another run" in capfd.readouterr().err


def test_run_dir_of_a_run_that_made_nothing_takes_the_corrected_settings(tmp_path):
    from graftsearch.pipeline._pipeline import _check_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = settings_from({"p_min": 0.8, "run_dir": str(run_dir)})
    (run_dir / "config.json").write_text(json.dumps({"settings": first.as_dict()}))
    corrected = settings_from({"p_min": 0.9, "run_dir": str(run_dir)})
    _check_run_dir(run_dir, corrected)  # stopped before making anything: no refusal
    (run_dir / "checkpoint.pkl").write_bytes(b"")
    with pytest.raises(gs.SearchError, match=r"holds another run; its settings differ: p_min \(0\.8 -> 0\.9\)"):
        _check_run_dir(run_dir, corrected)


@pytest.mark.slow
def test_demo_preset_end_to_end(tmp_path, monkeypatch, capsys):
    """The README's quick start, as a user pastes it (plus a run dir and a cache dir)."""
    monkeypatch.setenv("GRAFTSEARCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("GRAFTSEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "demo"
    code = main(["run", "--preset", "demo", "--objective", "min-size", "--p-min", "0.9",
                 "--run-dir", str(run_dir), "--quiet"])
    assert code == 0
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert metrics["graft"]["test"]["accuracy"] >= 0.85
    proc = subprocess.run([sys.executable, "-c", (
        "import torch;m=torch.jit.load(r'%s');print(m(torch.rand(1,3,64,64)).argmax(1).item())"
        % (run_dir / "best" / "model.torchscript.pt"))], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().isdigit()


def test_config_errors_name_the_file_not_a_flag(tmp_path, capfd):
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    assert main(["run", "--config", str(listing)]) == 2
    err = capfd.readouterr().err
    assert "'config' parameter must be a table of settings. Got list" in err
    bad = tmp_path / "run.toml"
    bad.write_text("p_min = 1.3\n")
    assert main(["run", "--config", str(bad)]) == 2
    err = capfd.readouterr().err
    assert "The 'p_min' parameter must be a float in (0, 1]" in err
    assert "argument --p-min" not in err  # the user never typed that flag


def test_resume_of_a_python_search_directory_says_how_to_resume_it(tmp_path, capfd):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"search": {"population": 8}, "versions": {}}))
    assert main(["resume", str(run_dir)]) == 2
    err = capfd.readouterr().err
    assert "started from Python" in err and "same run_dir" in err
    assert "cannot be parsed" not in err
    (run_dir / "evaluations.csv").write_text("bits\n")
    assert main(["run", "--p-min", "0.9", "--run-dir", str(run_dir), "--quiet"]) == 2
    err = capfd.readouterr().err
    assert "that `graftsearch run` did not start" in " ".join(err.split())


def test_paths_with_brackets_are_printed_verbatim(tmp_path, capfd):
    missing = tmp_path / "[red]data[/red]"
    assert main(["run", "--data", str(missing), "--p-min", "0.9", "--run-dir", str(tmp_path / "run"),
                 "--quiet"]) == 2
    err = capfd.readouterr().err
    assert "[red]data[/red]" in err


def test_unexpected_failure_is_one_line_with_exit_3(tmp_path, monkeypatch, capfd):
    def broken(*a, **k):
        raise RuntimeError("disk on fire [x]")

    monkeypatch.setattr("graftsearch.pipeline._pipeline.run", broken)
    code = main(["run", "--preset", "demo", "--p-min", "0.9", "--run-dir", str(tmp_path / "run"),
                 "--quiet"])
    assert code == 3
    err = capfd.readouterr().err.strip()
    assert "Traceback" not in err
    assert "internal error: RuntimeError: disk on fire [x]" in " ".join(err.split())
    assert "-v" in err


@pytest.mark.slow
def test_run_killed_by_sigkill_during_the_search_resumes_to_the_same_result(small_run, tmp_path):
    """A hard kill (no Python cleanup at all) between generations, then `graftsearch resume`."""
    import os
    import signal
    import time

    extra = ["--generations", "6"]
    ref = tmp_path / "ref"
    assert main(small_run(ref, tmp_path / "cache-ref", *extra)) == 0
    run_dir = tmp_path / "killed"
    argv = small_run(run_dir, tmp_path / "cache-killed", *extra)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "graftsearch", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        convergence = run_dir / "convergence.csv"
        # wait for generation 2 to be written, so the kill lands in the middle of the search
        while time.monotonic() < deadline and proc.poll() is None:
            if convergence.is_file() and len(convergence.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run_dir / "best" / "metrics.json").exists()
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    _same_result(ref, run_dir)


# ---------------------------------------------------------------------------------------------
# the end-of-run summary names where each accuracy comes from (issue 17)


def _record(bits, acc, *, params=1200, generation=3):
    from graftsearch.optimize._archive import Record

    return Record(bits=bits, params=params, size_mib=params * 4 / 2**20, macs=params * 50,
                  val_accuracy=acc, val_loss=1 - acc, feasible=acc >= 0.9, violation=0.0,
                  generation=generation, evaluated_at="2025-01-01T00:00:00")


def _summary_outcome(tmp_path, *, refined: bool, trained: bool = True):
    """A finished run's outcome (a real SearchResult; final metrics as metrics.json holds them):
    the pick's proxy val accuracy 0.95, refined val 0.9248, final val 0.9331, final test 0.93."""
    from types import SimpleNamespace

    from graftsearch.optimize._result import SearchResult, summary_message
    from graftsearch.optimize._settings import SearchSettings

    settings = SearchSettings(objective="min-size", p_min=0.9)
    records = [_record("1100", 0.95), _record("1110", 0.97, params=2400)]
    refined_records = ([_record("1100", 0.9248, generation=4),
                        _record("1110", 0.9412, params=2400, generation=4)] if refined else None)
    front = refined_records if refined else records
    message = summary_message(settings, front, True, evaluations=48, generations=3,
                              stopped_by="generations", refined=refined)
    result = SearchResult(settings=settings, records=records, front=front, feasible=True,
                          message=message, stopped_by="generations", generations=3,
                          evaluations=48, archive_hits=0, history_records=[],
                          refined_records=refined_records)
    metrics = {"bits": "1100", "taps": "1;2",
               "graft": {"params": 1200, "size_mib": 0.0046, "val": {"accuracy": 0.9331},
                         "test": {"accuracy": 0.93}}}
    final = SimpleNamespace(metrics=metrics) if trained else None
    return SimpleNamespace(result=result, feasible=True, final=final, run_dir=tmp_path,
                           report=tmp_path / "report.md")


def _row(out, label):
    """The value in the row of a printed table whose first cell is ``label``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃|").split("│")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in\n{out}")


def test_summary_best_graft_names_each_accuracy(tmp_path, capsys):
    from graftsearch._cli._run import summary

    summary(_summary_outcome(tmp_path, refined=True))
    out = capsys.readouterr().out
    assert _row(out, "refined val accuracy") == ["0.9248"]
    assert _row(out, "final val accuracy") == ["0.9331"]
    assert _row(out, "final test accuracy") == ["0.9300"]
    with pytest.raises(AssertionError):
        _row(out, "val accuracy")


def test_summary_front_table_header_names_the_search_source(tmp_path, capsys):
    from graftsearch._cli._run import summary

    summary(_summary_outcome(tmp_path, refined=True))
    refined = capsys.readouterr().out
    summary(_summary_outcome(tmp_path, refined=False))
    proxy = capsys.readouterr().out
    assert "refined val accuracy" in refined.split("Best graft")[0]
    assert "proxy val accuracy" in proxy.split("Best graft")[0]
    assert "val acc " not in refined + proxy
    assert _row(proxy, "proxy val accuracy") == ["0.9500"]


def test_summary_closing_message_names_its_accuracy(tmp_path, capsys):
    from graftsearch._cli._run import summary

    summary(_summary_outcome(tmp_path, refined=True))
    text = " ".join(capsys.readouterr().out.split())
    closing = text.split("The smallest selection")[1]
    assert "with refined val accuracy >= 0.9: taps 1;2" in closing
    assert "refined val accuracy 0.9248." in closing
    assert "val_accuracy" not in text


def test_nothing_feasible_line_names_its_accuracy(tmp_path, monkeypatch, capsys):
    from graftsearch.optimize._result import summary_message

    closest = _record("0010", 0.41)
    message = summary_message(gs.SearchSettings(objective="min-size", p_min=0.999), [closest],
                              False, evaluations=8, generations=1, stopped_by="generations")
    monkeypatch.setattr("graftsearch.pipeline._pipeline.run", _infeasible_outcome(message))
    argv = ["run", "--preset", "demo", "--p-min", "0.999", "--run-dir", str(tmp_path / "run"),
            "--quiet"]
    assert main(argv) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "The closest was taps 3 with proxy val accuracy 0.4100" in err
    assert "val_accuracy" not in err


@pytest.mark.parametrize("stage, info, expected", [
    ("search", {"generation": 2, "best": _record("1100", 0.95)},
     "best taps 1;2 (1,200 params, proxy val accuracy 0.9500)"),
    ("train", {"val_accuracy": 0.9331}, "final val accuracy 0.9331"),
    ("fine-tune", {"val_accuracy": 0.9331}, "final val accuracy 0.9331"),
    ("distill", {"val_accuracy": 0.9331}, "final val accuracy 0.9331"),
    ("cultivate", {"val_accuracy": 0.88}, "cultivation val accuracy 0.8800"),
])
def test_progress_lines_name_their_accuracy(stage, info, expected):
    from graftsearch._cli._live import _describe
    from graftsearch._utils.progress import Progress

    text = _describe(Progress(stage=stage, done=1, total=2, info=info))
    assert expected in text and " P " not in text and "val acc " not in text
