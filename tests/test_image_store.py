"""The uint8 image store: equal to decoding the files, fingerprinted, never stale."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from datagen import make_folder
from graftsearch import load_dataset
from graftsearch.data._images import load_image
from graftsearch.data._store import ImageStore, StoreImages, augment_tensor, build_image_store
from graftsearch.donors._preprocessing import Preprocessing


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs", {"a": 6, "b": 6, "c": 5}, size=(23, 17))


def test_store_equals_decoding_every_file(folder, tmp_path):
    data = load_dataset(str(folder))
    store = build_image_store(data, 16, cache_dir=tmp_path / "cache")
    pre = Preprocessing(image_size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    for split in ("train", "val", "test"):
        items = StoreImages(store, data.split(split), pre)
        assert len(items) == len(data.split(split))
        for pos, path in enumerate(data.split(split).paths):
            x, label, p, err = items[pos]
            assert err == "" and p == pos and label == int(data.split(split).labels[pos])
            assert torch.equal(x, load_image(path, pre))


def test_store_is_reused_and_a_changed_file_makes_a_new_one(folder, tmp_path):
    cache = tmp_path / "cache"
    first = build_image_store(load_dataset(str(folder)), 16, cache_dir=cache)
    stamp = (first.path / "store.json").stat().st_mtime_ns
    again = build_image_store(load_dataset(str(folder)), 16, cache_dir=cache)
    assert again.path == first.path and (again.path / "store.json").stat().st_mtime_ns == stamp
    assert build_image_store(load_dataset(str(folder)), 12, cache_dir=cache).path != first.path
    victim = sorted(folder.rglob("*.png"))[0]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = build_image_store(load_dataset(str(folder)), 16, cache_dir=cache)
    assert changed.fingerprint != first.fingerprint and changed.path != first.path
    # the new file's bytes are what the store holds for it
    split = next(s for s in ("train", "val", "test")
                 if victim in load_dataset(str(folder)).split(s).paths)
    data = load_dataset(str(folder))
    pos = data.split(split).paths.index(victim)
    pre = Preprocessing(image_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert torch.equal(StoreImages(changed, data.split(split), pre)[pos][0], load_image(victim, pre))


def test_undecodable_image_is_recorded_not_fatal(folder, tmp_path):
    bad = folder / "a" / "img999.png"
    bad.write_bytes(b"not an image")
    data = load_dataset(str(folder))
    store = build_image_store(data, 16, cache_dir=tmp_path / "cache")
    names = [n for split in store.bad.values() for n, _ in split]
    assert any(n.endswith("img999.png") for n in names)
    reopened = ImageStore.open(store.path)
    assert reopened.bad == store.bad


def test_augment_is_a_seeded_flip_and_crop_of_the_same_size():
    x = torch.rand(3, 20, 20)
    a = augment_tensor(x, random.Random(3))
    b = augment_tensor(x, random.Random(3))
    assert a.shape == x.shape and torch.equal(a, b)
    outs = {tuple(augment_tensor(x, random.Random(s)).flatten()[:5].tolist()) for s in range(6)}
    assert len(outs) > 1
    assert float(a.min()) >= -1e-6 and float(a.max()) <= 1 + 1e-6


def test_feature_cache_and_loaders_read_the_store_with_the_same_values(folder, tmp_path):
    from graftsearch import build_cache
    from graftsearch.data import make_loader
    from tiny import tiny_donor

    donor = tiny_donor(image_size=16)
    plain = load_dataset(str(folder))
    stored = load_dataset(str(folder))
    stored.use_store(build_image_store(stored, 16, cache_dir=tmp_path / "store"))
    a = build_cache(donor, plain, image_size=16, cache_dir=tmp_path / "a", num_workers=0)
    b = build_cache(donor, stored, image_size=16, cache_dir=tmp_path / "b", num_workers=0)
    assert a.fingerprint == b.fingerprint
    for split in ("train", "val", "test"):
        for tap in a.taps:
            assert np.array_equal(a.features(split, tap.index), b.features(split, tap.index))
    pre = donor.preprocessing.__class__(image_size=16, mean=donor.preprocessing.mean,
                                        std=donor.preprocessing.std)
    for augment in (False, True):
        x1 = next(iter(make_loader(plain, "train", pre, batch_size=4, shuffle=True, seed=3,
                                   augment=augment)))
        x2 = next(iter(make_loader(stored, "train", pre, batch_size=4, shuffle=True, seed=3,
                                   augment=augment)))
        assert torch.equal(x1[1], x2[1]) and torch.equal(x1[2], x2[2])  # same order
        if not augment:
            assert torch.equal(x1[0], x2[0])


def test_a_store_of_other_files_is_refused(folder, tmp_path):
    from graftsearch import DataError

    store = build_image_store(load_dataset(str(folder)), 16, cache_dir=tmp_path / "c")
    victim = sorted(folder.rglob("*.png"))[0]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="holds other files than this data"):
        load_dataset(str(folder)).use_store(store)
