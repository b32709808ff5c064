"""Data sources, splits, image decoding and the loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import graftsearch as gs
from graftsearch.data._spec import DEEPWEEDS_CLASSES, DataSpec
from graftsearch.data._sources import load_dataset
from graftsearch.data._loading import make_loader
from graftsearch._utils.errors import DataError, ParameterError
from graftsearch.data._images import load_image, open_rgb, to_tensor01
from datagen import (make_deepweeds_subset, make_folder, read_csv, save_image, truncate,
                     write_csv)

PRE = gs.donors.Preprocessing(image_size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "plants", {"crop": 10, "weed": 15, "grass": 5})


# ---------------------------------------------------------------------------------------------
# images


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "PT", "I;16"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    rng = np.random.default_rng(1)
    path = save_image(tmp_path / "x.png", mode, rng, size=(20, 16))
    img = open_rgb(path)
    assert img.mode == "RGB" and img.size == (20, 16)
    x = to_tensor01(img, 8)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    if mode == "L":
        gray = np.asarray(Image.open(path))
        assert np.array_equal(np.asarray(img)[..., 0], gray)
    if mode == "I;16":  # 16-bit samples are scaled, not clipped to white
        raw = np.asarray(Image.open(path), dtype=np.float64)
        assert np.abs(np.asarray(img)[..., 0] - np.rint(raw / 257)).max() <= 1


def test_to_tensor01_is_pil_bilinear_resize_then_scaling(tmp_path):
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    want = np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    got = to_tensor01(img, 16)
    assert torch.equal(got, torch.from_numpy(want).permute(2, 0, 1))
    path = tmp_path / "a.png"
    img.save(path)
    x = load_image(path, PRE)
    mean = torch.tensor(PRE.mean).view(3, 1, 1)
    std = torch.tensor(PRE.std).view(3, 1, 1)
    assert torch.allclose(x, (got - mean) / std)
    assert torch.equal(load_image(path, PRE, normalize=False), got)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    rng = np.random.default_rng(3)
    bad = truncate(save_image(tmp_path / "cut.jpg", "RGB", rng, size=(64, 64)), 0.4)
    with pytest.raises(DataError, match=r"The image '.*cut\.jpg' cannot be decoded"):
        open_rgb(bad)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"junk\.png' cannot be decoded .*not an image"):
        open_rgb(junk)


# ---------------------------------------------------------------------------------------------
# data specifications


def test_data_spec_parses_sources_and_checks_split(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFTSEARCH_DATA", str(tmp_path / "data"))
    assert DataSpec(source="x").split == "paper"
    assert DataSpec(source="x", split="column").split_column == "split"
    assert DataSpec(source="x", split="official:4").fold == 4
    from graftsearch.data._spec import default_deepweeds_dir, parse_source

    assert parse_source("deepweeds") == ("deepweeds", None)
    assert default_deepweeds_dir() == tmp_path / "data" / "deepweeds"
    assert parse_source("csv:a/b.csv") == ("csv", Path("a/b.csv"))
    assert parse_source("folder:imgs") == ("folder", Path("imgs"))
    assert parse_source("imgs") == (None, Path("imgs"))
    with pytest.raises(ParameterError, match=r"The 'split' parameter must be 'paper', "
                                             r"'official:K' .* Got 'official:5' instead"):
        DataSpec(source="x", split="official:5")
    with pytest.raises(ParameterError, match=r"'split_column' parameter must be unset unless"):
        DataSpec(source="x", split="paper", split_column="fold")
    with pytest.raises(ParameterError, match=r"'seed' parameter must be a non-negative integer"):
        DataSpec(source="x", seed=-1)
    with pytest.raises(ParameterError, match=r"'data' parameter must be a path"):
        DataSpec(source="  ")


# ---------------------------------------------------------------------------------------------
# image folders


def test_folder_tree_paper_split_is_stratified_and_seeded(folder):
    ds = load_dataset(str(folder), seed=7)
    assert ds.kind == "folder" and ds.classes == ["crop", "grass", "weed"]
    sizes = {s: ds.split(s).counts() for s in ("train", "val", "test")}
    assert sizes["train"] == {"crop": 6, "grass": 3, "weed": 9}
    assert sizes["val"] == {"crop": 2, "grass": 1, "weed": 3}
    assert sizes["test"] == {"crop": 2, "grass": 1, "weed": 3}
    names = [n for s in ("train", "val", "test") for n in ds.split(s).names]
    assert sorted(names) == sorted(p.relative_to(folder).as_posix()
                                   for p in folder.rglob("*.*"))
    again = load_dataset(f"folder:{folder}", seed=7)
    other = load_dataset(str(folder), seed=8)
    for s in ("train", "val", "test"):
        assert again.split(s).names == ds.split(s).names
        assert ds.split(s).fingerprint() == again.split(s).fingerprint()
    assert other.split("train").names != ds.split("train").names
    assert other.fingerprint() != ds.fingerprint()
    train = ds.split("train")
    assert all(ds.classes[y] == n.split("/")[0] for n, y in zip(train.names, train.labels))
    assert train.labels.dtype == np.int64


def test_loader_yields_normalised_batches_with_positions(folder):
    ds = load_dataset(str(folder))
    val = ds.split("val")
    loader = make_loader(ds, "val", PRE, batch_size=4)
    images, labels, positions = next(iter(loader))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and positions.tolist() == [0, 1, 2, 3]
    assert torch.allclose(images[2], load_image(val.paths[2], PRE))
    assert labels.tolist() == val.labels[:4].tolist()
    seen = torch.cat([p for _, _, p in loader]).tolist()
    assert seen == list(range(len(val)))


def test_loader_shuffle_and_augment_follow_the_seed(folder):
    ds = load_dataset(str(folder))

    def epoch(loader):
        return [(x.clone(), p.clone()) for x, _, p in loader]

    a = epoch(make_loader(ds, "train", PRE, batch_size=5, shuffle=True, seed=3, augment=True))
    b = epoch(make_loader(ds, "train", PRE, batch_size=5, shuffle=True, seed=3, augment=True,
                          num_workers=1))
    c = epoch(make_loader(ds, "train", PRE, batch_size=5, shuffle=True, seed=4, augment=True))
    assert all(torch.equal(x1, x2) and torch.equal(p1, p2) for (x1, p1), (x2, p2) in zip(a, b))
    assert [p.tolist() for _, p in a] != [p.tolist() for _, p in c]
    order = torch.cat([p for _, p in a]).tolist()
    assert sorted(order) == list(range(len(ds.split("train")))) and order != sorted(order)
    loader = make_loader(ds, "train", PRE, batch_size=5, shuffle=True, seed=3)
    first, second = epoch(loader), epoch(loader)  # a new order each epoch
    assert [p.tolist() for _, p in first] != [p.tolist() for _, p in second]


def test_loader_lists_bad_images_or_skips_them(folder):
    ds = load_dataset(str(folder))
    val = ds.split("val")
    truncate(val.paths[1], 0.3)
    val.paths[3].write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"2 image\(s\) cannot be decoded: '.*'.*--skip-bad-images"):
        list(make_loader(ds, "val", PRE, batch_size=8))
    loader = make_loader(ds, "val", PRE, batch_size=8, skip_bad_images=True)
    positions = torch.cat([p for _, _, p in loader]).tolist()
    assert positions == [i for i in range(len(val)) if i not in (1, 3)]
    assert [n for n, _ in loader.skipped] == [val.names[1], val.names[3]]


def test_empty_directory_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"one sub-folder of images per class.*is empty"):
        load_dataset(str(tmp_path / "empty"))


def test_empty_class_folder_is_an_error(folder):
    (folder / "moss").mkdir()
    with pytest.raises(DataError, match=r"1 class folder\(s\) of .* hold no images: 'moss'"):
        load_dataset(str(folder))


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"'data' parameter must be an existing file or directory"):
        load_dataset(str(tmp_path / "nowhere"))


def test_class_too_small_for_a_stratified_split(tmp_path):
    root = make_folder(tmp_path / "p", {"a": 6, "b": 2, "c": 1})
    with pytest.raises(DataError, match=r"2 class\(es\) have too few images for a stratified "
                                        r"60/20/20 split: 'b \(2\)', 'c \(1\)'.*at least 3"):
        load_dataset(str(root))


def test_labels_not_in_the_class_list(folder):
    with pytest.raises(DataError, match=r"'classes' parameter must be a list holding every label"
                                        r".*1 label\(s\) are not in the class list: 'weed'"):
        load_dataset(str(folder), classes=["crop", "grass"])
    ds = load_dataset(str(folder), classes=["weed", "crop", "grass"])
    assert ds.classes == ["weed", "crop", "grass"]
    assert ds.split("train").counts() == {"weed": 9, "crop": 6, "grass": 3}


def test_official_split_needs_deepweeds(folder):
    with pytest.raises(DataError, match=r"'split' parameter must be 'paper' or 'column' for a "
                                        r"non-DeepWeeds source"):
        load_dataset(str(folder), split="official:0")
    with pytest.raises(DataError, match=r"A split column needs a CSV listing"):
        load_dataset(str(folder), split="column")


# ---------------------------------------------------------------------------------------------
# CSV listings


def _listing(folder: Path, tmp_path: Path, *, with_split: bool = True) -> Path:
    rows = []
    for i, p in enumerate(sorted(folder.rglob("*.*"))):
        split = ("train", "train", "train", "val", "test")[i % 5]
        row = [os.path.relpath(p, tmp_path), p.parent.name]
        rows.append(row + [split] if with_split else row)
    header = ["path", "label"] + (["fold"] if with_split else [])
    return write_csv(tmp_path / "list.csv", header, rows)


def test_csv_listing_with_paper_and_column_splits(folder, tmp_path):
    listing = _listing(folder, tmp_path)
    paper = load_dataset(str(listing), seed=1)
    assert paper.kind == "csv" and paper.classes == ["crop", "grass", "weed"]
    assert paper.split("val").counts() == {"crop": 2, "grass": 1, "weed": 3}
    from_folder = load_dataset(str(folder), seed=1)  # same stratified draw for the same images
    assert [Path(p).resolve() for p in paper.split("test").paths] == \
        [Path(p).resolve() for p in from_folder.split("test").paths]
    col = load_dataset(f"csv:{listing}", split="column", split_column="fold")
    rows = read_csv(listing)
    for s in ("train", "val", "test"):
        assert col.split(s).names == [r["path"] for r in rows if r["fold"] == s]
        assert all(p.is_file() for p in col.split(s).paths)
    assert col.split("train").fingerprint() != paper.split("train").fingerprint()


def test_csv_listing_errors(folder, tmp_path):
    listing = _listing(folder, tmp_path)
    with pytest.raises(DataError, match=r"'split_column' parameter must be a column of"):
        load_dataset(str(listing), split="column", split_column="nope")
    bad = write_csv(tmp_path / "bad.csv", ["file", "class"], [["a.png", "x"]])
    with pytest.raises(DataError, match=r"must have the columns path,label; it has \['file', 'class'\]"):
        load_dataset(str(bad))
    rows = read_csv(listing)
    rows[0]["fold"] = "holdout"
    odd = write_csv(tmp_path / "odd.csv", ["path", "label", "fold"], [list(r.values()) for r in rows])
    with pytest.raises(DataError, match=r"must be a column holding only \['train', 'val', 'test'\]"
                                        r".*'holdout'"):
        load_dataset(str(odd), split="column", split_column="fold")


def test_missing_image_files_are_listed_with_their_count(folder, tmp_path):
    listing = _listing(folder, tmp_path, with_split=False)
    rows = read_csv(listing) + [{"path": f"gone/{i}.png", "label": "crop"} for i in range(7)]
    more = write_csv(tmp_path / "more.csv", ["path", "label"], [[r["path"], r["label"]] for r in rows])
    with pytest.raises(DataError, match=r"7 of 37 image file\(s\) listed for .* do not exist: "
                                        r"'gone/0.png', .*'gone/4.png' and 2 more"):
        load_dataset(str(more))


def test_skip_bad_images_leaves_missing_listed_files_out_with_a_count(folder, tmp_path, caplog):
    listing = _listing(folder, tmp_path)
    rows = read_csv(listing)
    gone = [{"path": f"gone/{i}.png", "label": "crop", "fold": "train"} for i in range(7)]
    mixed = rows[:10] + gone + rows[10:]  # missing rows in the middle: the columns stay aligned
    more = write_csv(tmp_path / "more.csv", ["path", "label", "fold"],
                     [list(r.values()) for r in mixed])
    with caplog.at_level("WARNING", logger="graftsearch"):
        data = load_dataset(str(more), split="column", split_column="fold", skip_missing=True)
    assert "7 of 37 image file(s) listed for" in caplog.text and "left out" in caplog.text
    want = load_dataset(str(listing), split="column", split_column="fold")
    for name in ("train", "val", "test"):
        assert data.split(name).names == want.split(name).names
        assert data.split(name).labels.tolist() == want.split(name).labels.tolist()
    with pytest.raises(DataError, match=r"7 of 37 image file\(s\) .*--skip-bad-images"):
        load_dataset(str(more), split="column", split_column="fold")


def test_run_with_skip_bad_images_reads_a_listing_with_missing_files(folder, tmp_path):
    from graftsearch.pipeline._pipeline import run
    from graftsearch.pipeline._settings import settings_from

    listing = _listing(folder, tmp_path, with_split=False)
    rows = read_csv(listing) + [{"path": "gone.png", "label": "crop"}]
    more = write_csv(tmp_path / "more.csv", ["path", "label"], [list(r.values()) for r in rows])
    settings = settings_from({"data": str(more), "donor": "resnet18", "weights": None,
                              "p_min": 0.9, "run_dir": str(tmp_path / "run")})
    stages = []

    def stop_at_the_donor(event):  # the data are read: nothing after them is needed here
        stages.append(event.info.get("name") if event.stage == "stage" else None)
        if "donor" in stages:
            raise KeyboardInterrupt

    with pytest.raises(gs.DataError, match="do not exist"):
        run(settings, progress=stop_at_the_donor)
    with pytest.raises(KeyboardInterrupt):
        run(settings_from({**settings.as_dict(), "skip_bad_images": True}),
            progress=stop_at_the_donor)


# ---------------------------------------------------------------------------------------------
# DeepWeeds


@pytest.fixture
def deepweeds(shared_data, tmp_path) -> Path:
    make_deepweeds_subset(shared_data / "deepweeds" / "labels", tmp_path / "dw", per_class=30)
    return tmp_path / "dw"


def test_deepweeds_official_folds_from_the_real_label_files(deepweeds):
    labels = {r["Filename"]: int(r["Label"]) for r in read_csv(deepweeds / "labels" / "labels.csv")}
    assert len(labels) == 270
    for k in range(5):
        ds = load_dataset(str(deepweeds), split=f"official:{k}")
        assert ds.kind == "deepweeds" and ds.classes == list(DEEPWEEDS_CLASSES)
        seen = []
        for s in ("train", "val", "test"):
            rows = read_csv(deepweeds / "labels" / f"{s}_subset{k}.csv")
            sp = ds.split(s)
            assert sp.names == [r["Filename"] for r in rows]
            assert sp.labels.tolist() == [int(r["Label"]) for r in rows]
            assert all(p.parent == deepweeds / "images" for p in sp.paths)
            seen += sp.names
        assert sorted(seen) == sorted(labels)  # the folds partition the kept images
    a = load_dataset(f"deepweeds:{deepweeds}", split="official:0").split("train").names
    b = load_dataset(f"deepweeds:{deepweeds}", split="official:1").split("train").names
    assert a != b


def test_deepweeds_paper_split(deepweeds):
    ds = load_dataset(str(deepweeds), split="paper", seed=0)
    assert ds.split("train").counts() == {c: 18 for c in DEEPWEEDS_CLASSES}
    assert ds.split("test").counts() == {c: 6 for c in DEEPWEEDS_CLASSES}
    assert load_dataset(str(deepweeds), seed=0).split("val").names == ds.split("val").names
    assert load_dataset(str(deepweeds), seed=1).split("val").names != ds.split("val").names


def test_deepweeds_split_file_naming_unknown_images(deepweeds):
    path = deepweeds / "labels" / "test_subset2.csv"
    rows = read_csv(path) + [{"Filename": "20990101-000000-0.jpg", "Label": "3"}]
    write_csv(path, ["Filename", "Label"], [[r["Filename"], r["Label"]] for r in rows])
    with pytest.raises(DataError, match=r"test_subset2.csv' names 1 image\(s\) that do not exist "
                                        r"in the dataset \(not in labels.csv\): '20990101-000000-0.jpg'"):
        load_dataset(str(deepweeds), split="official:2")
    load_dataset(str(deepweeds), split="official:1")  # the other folds are untouched


def test_deepweeds_label_outside_the_nine_species(deepweeds):
    path = deepweeds / "labels" / "labels.csv"
    rows = read_csv(path)
    rows[5]["Label"] = "9"
    write_csv(path, ["Filename", "Label", "Species"], [list(r.values()) for r in rows])
    with pytest.raises(DataError, match=r"1 row\(s\) of .* have a Label that is not a class "
                                        r"index 0..8 of DeepWeeds' 9 species: 'row 7: '9''"):
        load_dataset(str(deepweeds))


def test_deepweeds_missing_images_are_listed(deepweeds):
    names = sorted(p.name for p in (deepweeds / "images").iterdir())[:6]
    for n in names:
        (deepweeds / "images" / n).unlink()
    with pytest.raises(DataError, match=r"6 of 270 image file\(s\) .* do not exist: "
                                        r"'.*' and 1 more"):
        load_dataset(str(deepweeds), split="official:0")
