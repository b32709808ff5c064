"""The cache extraction benchmark runs and writes its table (a small subset, one donor)."""

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cache_benchmark_writes_its_table(shared_data, tmp_path):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.cache_extraction import main

    assert main(["--donors", "efficientnet_lite0", "--lite0-images", "36", "--workers", "0",
                 "--out", str(tmp_path)]) == 0
    with open(tmp_path / "cache_extraction.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["donor"] for r in rows] == ["efficientnet_lite0"]
    row = rows[0]
    assert int(row["images"]) == 36 and int(row["taps"]) == 18
    assert float(row["ratio"]) > 0 and float(row["bytes_per_image"]) > 4 * int(row["feature_dim"])
    md = (tmp_path / "cache_extraction.md").read_text()
    assert "| efficientnet_lite0 |" in md and "torch thread" in md
    assert row["batch_format"] == "channels_last" and float(row["ratio_forward"]) > 0
    # the headline is computed from the row: its ratio and its verdict against the target
    verdict = "meets" if float(row["ratio_forward"]) >= 0.9 else "misses"
    assert f"ratio {float(row['ratio_forward']):.3f}, which {verdict} the 0.9 target" in md
