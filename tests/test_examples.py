"""The examples run end to end on generated data (no download)."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_paper_reproduction_example_on_generated_images(tmp_path, capsys):
    from tiny import colour_folder

    data = colour_folder(tmp_path / "images")
    code = _load("paper_reproduction").main([
        "--data", str(data), "--donor", "mobilenet_v3_small", "--weights", "none",
        "--image-size", "32", "--manual", "3;4;5", "--population", "8", "--generations", "2",
        "--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    out = capsys.readouterr().out
    manual = [l for l in out.splitlines() if l.startswith("manual ")]
    searched = [l for l in out.splitlines() if l.startswith("searched ")]
    assert manual and searched, out
    pareto = pd.read_csv(tmp_path / "run" / "pareto.csv")
    assert pareto["feasible"].astype(bool).all()


@pytest.mark.slow
def test_distributed_example_on_a_local_cluster(tmp_path, capsys):
    pytest.importorskip("distributed")
    code = _load("distributed_search").main(["--generated", "--p-min", "0.3", "--generations", "2",
                                              "--population", "8", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    assert "started a LocalCluster at tcp://127.0.0.1" in capsys.readouterr().out
    assert (tmp_path / "run" / "pareto.csv").is_file()
