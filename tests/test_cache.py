"""The GAP feature cache: equality with direct GAP, reuse, invalidation, resume, shards, errors."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import graftsearch as gs
from graftsearch.features._cache import CacheShard, FeatureCache, build_cache
from graftsearch._utils.errors import CacheError, DataError, ParameterError
from graftsearch.features._source import FeatureSource
from graftsearch.data._images import load_image
from datagen import make_folder, truncate
from tiny import TINY_CHANNELS, TINY_TAPS, tiny_donor

REPO = Path(__file__).resolve().parents[1]
COUNTS = {"a": 10, "b": 10, "c": 10}


@pytest.fixture
def data(tmp_path):
    return gs.load_dataset(str(make_folder(tmp_path / "imgs", COUNTS)))


def counted(donor):
    """Count the images the donor's first layer sees (after tap discovery's own passes)."""
    donor.taps(32)
    seen = [0]
    donor.module.features[0].register_forward_hook(lambda m, i, o: seen.__setitem__(0, seen[0] + len(o)))
    return seen


def arrays(cache: FeatureCache):
    return {(s, t.index): np.asarray(cache.features(s, t.index)) for s in cache.splits
            for t in cache.taps}


def test_cached_features_equal_gap_computed_directly(data, tmp_path):
    donor = tiny_donor()
    cache = build_cache(donor, data, cache_dir=tmp_path / "c", num_workers=0, chunk_size=7,
                        batch_size=5)
    assert cache.image_size == 32 and cache.taps == donor.taps(32)
    assert cache.classes == ["a", "b", "c"] and cache.splits == ("train", "val", "test")
    # an independent computation: forward hooks on the full donor, not the cut trunk
    pooled = {}
    modules = dict(donor.module.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: pooled.__setitem__(name, o.mean(dim=(2, 3))))
        for name in TINY_TAPS]
    for split in ("train", "val", "test"):
        sp = data.split(split)
        x = torch.stack([load_image(p, donor.preprocessing) for p in sp.paths])
        with torch.no_grad():
            donor.module(x)
        for i, (name, ch) in enumerate(zip(TINY_TAPS, TINY_CHANNELS), start=1):
            got = cache.features(split, i)
            assert isinstance(got, np.memmap) and got.shape == (len(sp), ch)
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, pooled[name].numpy(), rtol=0, atol=1e-5)
        assert cache.labels(split).tolist() == sp.labels.tolist()
        assert cache.files(split) == sp.names
    for h in hooks:
        h.remove()
    m = cache.manifest
    assert m["inputs"]["taps"][0] == {"name": "features.2", "channels": 8}
    assert m["inputs"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert set(m["inputs"]["dataset"]["splits"]["train"]) == {"images", "files_sha256"}
    assert m["inputs"]["graftsearch"] == gs.__version__ and m["dtype"] == "float32"
    assert cache.nbytes > 30 * sum(TINY_CHANNELS) * 4
    assert not (cache.path / "work").exists()


def test_finished_cache_is_reused_without_forward_passes(data, tmp_path):
    donor = tiny_donor()
    seen = counted(donor)
    first = build_cache(donor, data, cache_dir=tmp_path / "c", num_workers=0)
    assert seen[0] == 30
    again = build_cache(donor, data, cache_dir=tmp_path / "c", num_workers=0)
    assert seen[0] == 30 and again.path == first.path
    assert FeatureCache.open(first.path).fingerprint == first.fingerprint
    # a FeatureSource that pickles as its path
    assert isinstance(again, FeatureSource)
    blob = pickle.dumps(again)
    assert len(blob) < 600
    back = pickle.loads(blob)
    assert np.array_equal(back.features("val", 6), again.features("val", 6))
    assert back.taps == again.taps


def test_changed_inputs_make_a_new_cache(data, tmp_path):
    kw = dict(cache_dir=tmp_path / "c", num_workers=0)
    base = build_cache(tiny_donor(), data, **kw)
    before = arrays(base)
    other_size = build_cache(tiny_donor(), data, image_size=24, **kw)
    other_weights = build_cache(tiny_donor(seed=1), data, **kw)
    half = build_cache(tiny_donor(), data, dtype="float16", **kw)
    touched = data.split("val").paths[2]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    after_touch = build_cache(tiny_donor(), gs.load_dataset(str(data.root)), **kw)
    caches = [base, other_size, other_weights, half, after_touch]
    assert len({c.path for c in caches}) == 5 and len({c.fingerprint for c in caches}) == 5
    assert other_size.image_size == 24
    assert not np.allclose(other_weights.features("train", 6), base.features("train", 6))
    assert half.features("train", 3).dtype == np.float16
    np.testing.assert_allclose(half.features("train", 3), base.features("train", 3), rtol=2e-3,
                               atol=2e-3)
    assert all(np.array_equal(v, arrays(base)[k]) for k, v in before.items())  # old one untouched
    touched_inputs = after_touch.manifest["inputs"]["dataset"]["splits"]
    base_inputs = base.manifest["inputs"]["dataset"]["splits"]
    assert touched_inputs["train"] == base_inputs["train"]
    assert touched_inputs["val"]["files_sha256"] != base_inputs["val"]["files_sha256"]


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    import graftsearch as gs
    from tiny import tiny_donor
    data = gs.load_dataset(sys.argv[1])
    gs.build_cache(tiny_donor(), data, cache_dir=sys.argv[2], num_workers=0, chunk_size=4,
                   batch_size=2, progress=lambda p: time.sleep(0.15))
""")


@pytest.mark.slow
def test_killed_extraction_resumes_to_identical_arrays(data, tmp_path):
    clean = build_cache(tiny_donor(), data, cache_dir=tmp_path / "clean", num_workers=0,
                        chunk_size=4, batch_size=2)
    script = tmp_path / "extract.py"
    script.write_text(_KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    proc = subprocess.Popen([sys.executable, str(script), str(data.root), str(tmp_path / "k"),
                             str(torch.get_num_threads())], env=env)
    chunk_dir = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "k" / "features").glob("*/work/chunks/*.npz"))
            if len(found) >= 3:
                chunk_dir = found[0].parent
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert chunk_dir is not None, "the extraction never wrote three chunks"
    cache_root = chunk_dir.parent.parent
    assert not (cache_root / "manifest.json").exists()
    saved = 0
    for f in chunk_dir.glob("*.npz"):
        with np.load(f) as z:
            saved += len(z["labels"])
    assert 0 < saved < 30
    donor = tiny_donor()
    seen = counted(donor)
    # other sizes asked for: the unfinished extraction keeps its own (same batches, same bits)
    resumed = build_cache(donor, data, cache_dir=tmp_path / "k", num_workers=0, chunk_size=5,
                          batch_size=3)
    assert seen[0] == 30 - saved  # only the chunks that were not finished
    assert resumed.path == cache_root and resumed.fingerprint == clean.fingerprint
    for key, value in arrays(clean).items():
        assert np.array_equal(arrays(resumed)[key], value)
    for split in ("train", "val", "test"):
        assert np.array_equal(resumed.labels(split), clean.labels(split))
        assert resumed.files(split) == clean.files(split)


def test_shards_fill_one_cache_and_merge_checks_them(data, tmp_path):
    kw = dict(cache_dir=tmp_path / "c", num_workers=0, chunk_size=4)
    donor = tiny_donor()
    seen = counted(donor)
    first = build_cache(donor, data, shard="0/3", **kw)
    assert isinstance(first, CacheShard) and not first.complete
    assert first.chunks_total == 5 + 2 + 2 and first.chunks_done == 3  # chunks 0, 3, 6
    with pytest.raises(CacheError, match=r"is missing 6 of 9 chunk\(s\) \(train\[4:8\], .*Run the "
                                         r"missing shards"):
        build_cache(donor, data, merge=True, **kw)
    build_cache(donor, data, shard=(1, 3), **kw)
    last = build_cache(donor, data, shard="2/3", **kw)
    assert last.complete and seen[0] == 30
    merged = build_cache(donor, data, merge=True, **kw)
    assert seen[0] == 30  # merging runs nothing forward
    whole = build_cache(tiny_donor(), data, cache_dir=tmp_path / "whole", num_workers=0)
    assert merged.fingerprint == whole.fingerprint
    assert all(np.array_equal(v, arrays(whole)[k]) for k, v in arrays(merged).items())
    with pytest.raises(ParameterError, match=r"'shard' parameter must be 'i/n' with integers "
                                             r"0 <= i < n .* Got '3/3' instead"):
        build_cache(donor, data, shard="3/3", **kw)


def test_two_builders_at_once_extract_once(data, tmp_path):
    donors = [tiny_donor(), tiny_donor()]
    seen = [counted(d) for d in donors]
    results, errors = [None, None], []

    def run(k):
        try:
            results[k] = build_cache(donors[k], data, cache_dir=tmp_path / "c", num_workers=0,
                                     batch_size=2)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(s[0] for s in seen) == [0, 30]  # one extracted, the other waited and reused
    assert results[0].path == results[1].path
    assert all(np.array_equal(v, arrays(results[1])[k]) for k, v in arrays(results[0]).items())


def test_damaged_manifest_is_rebuilt_not_a_crash(data, tmp_path):
    donor = tiny_donor()
    seen = counted(donor)
    cache = build_cache(donor, data, cache_dir=tmp_path / "c", num_workers=0)
    good = arrays(cache)
    (cache.path / "manifest.json").write_text('{"format": 1, "status": "compl')
    with pytest.raises(CacheError, match=r"has a damaged manifest .*Delete the directory"):
        FeatureCache.open(cache.path)
    rebuilt = build_cache(donor, data, cache_dir=tmp_path / "c", num_workers=0)
    assert seen[0] == 60 and rebuilt.path == cache.path
    assert all(np.array_equal(v, good[k]) for k, v in arrays(rebuilt).items())
    np.save(cache.path / "val" / "tap02.npy", np.zeros((2, 8), np.float32))  # damaged array
    again = build_cache(donor, data, cache_dir=tmp_path / "c", num_workers=0)
    assert seen[0] == 90 and again.features("val", 2).shape == (6, 8)


def test_cache_dir_that_is_not_writable(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match=r"The 'cache_dir' parameter must be a writable "
                                         r"directory. Got '.*file/cache' instead.*--cache-dir"):
        build_cache(tiny_donor(), data, cache_dir=blocker / "cache")


def test_bad_images_stop_the_build_or_are_skipped_and_recorded(data, tmp_path):
    val = data.split("val")
    truncate(val.paths[0], 0.3)
    val.paths[4].write_bytes(b"not an image")
    ds = gs.load_dataset(str(data.root))
    donor = tiny_donor()
    seen = counted(donor)
    kw = dict(cache_dir=tmp_path / "c", num_workers=0)
    with pytest.raises(DataError, match=rf"2 image\(s\) cannot be decoded: '{val.names[0]}': .*"
                                        rf"'{val.names[4]}': .*--skip-bad-images"):
        build_cache(donor, ds, **kw)
    cache = build_cache(donor, ds, skip_bad_images=True, **kw)
    assert seen[0] == 30  # the skipping build reused the chunks of the stopped one
    assert [s["file"] for s in cache.skipped()] == [val.names[0], val.names[4]]
    assert "cannot be decoded" in cache.manifest["split_info"]["val"]["skipped"][0]["error"]
    assert cache.features("val", 1).shape == (4, 8) and cache.n_images("val") == 4
    assert cache.files("val") == [n for i, n in enumerate(val.names) if i not in (0, 4)]
    assert cache.labels("val").tolist() == [y for i, y in enumerate(val.labels) if i not in (0, 4)]
    with pytest.raises(DataError, match=r"2 image\(s\) cannot be decoded.*was built with them "
                                        r"skipped"):
        build_cache(donor, ds, **kw)


def test_options_are_checked(data, tmp_path):
    with pytest.raises(ParameterError, match=r"'dtype' parameter must be one of \['float32', "
                                             r"'float16'\]. Got 'int8' instead"):
        build_cache(tiny_donor(), data, dtype="int8", cache_dir=tmp_path)
    with pytest.raises(ParameterError, match=r"'device' parameter must be 'auto', 'cpu' or 'cuda'"):
        build_cache(tiny_donor(), data, device="tpu", cache_dir=tmp_path)
    with pytest.raises(ParameterError, match=r"'batch_size' parameter must be a positive integer"):
        build_cache(tiny_donor(), data, batch_size=0, cache_dir=tmp_path)
    with pytest.raises(CacheError, match=r"'path' parameter must be a feature cache directory"):
        FeatureCache.open(tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match=r"'device' parameter must be 'auto' or 'cpu' on "
                                                 r"a machine without CUDA"):
            build_cache(tiny_donor(), data, device="cuda", cache_dir=tmp_path)


def test_cli_builds_and_describes_a_cache(data, tmp_path, capsys):
    from graftsearch._cli import main

    args = ["cache", "--donor", "mobilenet_v3_small", "--weights", "none", "--taps", "features.1,features.3",
            "--data", str(data.root), "--image-size", "32", "--cache-dir", str(tmp_path / "c"), "--workers", "0", "--dtype", "float16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    path = out.split("feature cache: ")[1].split("\n")[0].strip()
    assert Path(path).is_dir() and "fingerprint: " in out and "bytes per image" in out
    assert "images: train 18, val 6, test 6" in out
    assert main(["cache", "--info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dtype"] == "float16" and info["donor"] == "mobilenet_v3_small"
    assert info["images"] == {"train": 18, "val": 6, "test": 6}
    assert main(["cache", "--info", str(tmp_path / "c")]) == 0  # a root lists its caches
    assert path in capsys.readouterr().out
    assert main(args + ["--split-column", "x"]) == 2  # a data error, before any forward pass
    assert "'split_column' parameter must be unset unless split='column'" in capsys.readouterr().err
    assert main(args[:-2] + ["--shard", "2/2"]) == 2
    assert "'shard' parameter must be 'i/n'" in capsys.readouterr().err
    assert main(["cache", "--info", str(tmp_path)]) == 2
    assert "is neither a feature cache" in capsys.readouterr().err
