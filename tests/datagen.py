"""Tiny generated images and data sources for the data and cache tests."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image


def image_of_mode(mode: str, rng: np.random.Generator, size=(20, 16)) -> Image.Image:
    """A random image in one of Pillow's modes (RGB, L, RGBA, P, P with transparency, I;16)."""
    w, h = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "L":
        return Image.fromarray(rgb[..., 0])
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2))
    if mode == "P":
        return Image.fromarray(rgb).quantize(colors=16)
    if mode == "PT":
        img = Image.fromarray(rgb).quantize(colors=16)
        img.info["transparency"] = 0
        return img
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    raise ValueError(mode)


_MODES = ("RGB", "L", "RGBA", "P", "PT", "I;16")


def save_image(path: Path, mode: str, rng: np.random.Generator, size=(20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = image_of_mode(mode, rng, size)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
        img.save(path, quality=90)
    else:
        img.save(path)
    return path


def make_folder(root: Path, counts: Dict[str, int], *, seed: int = 0, size=(20, 16),
                mixed_modes: bool = True) -> Path:
    """An image-folder tree; with ``mixed_modes`` images cycle through PNG modes and JPEG."""
    rng = np.random.default_rng(seed)
    k = 0
    for cls, n in counts.items():
        for i in range(n):
            if mixed_modes:
                mode = _MODES[k % len(_MODES)]
                suffix = ".jpg" if k % 7 == 3 else ".png"
                if suffix == ".jpg":
                    mode = "RGB"
            else:
                mode, suffix = "RGB", ".png"
            save_image(root / cls / f"img{i:03d}{suffix}", mode, rng, size)
            k += 1
    return root


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def read_csv(path: Path) -> List[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def make_deepweeds_subset(labels_dir: Path, dest: Path, *, per_class: int = 30,
                          size=(12, 12)) -> List[str]:
    """A DeepWeeds directory with the real label files cut to ``per_class`` rows per class and
    generated stand-in JPEGs under the real file names; the official split files are filtered
    to the same rows, so the official folds still work. Returns the kept file names."""
    rows = read_csv(labels_dir / "labels.csv")
    taken: Dict[str, int] = {}
    kept = []
    for r in rows:
        if taken.get(r["Label"], 0) < per_class:
            taken[r["Label"]] = taken.get(r["Label"], 0) + 1
            kept.append(r)
    names = {r["Filename"] for r in kept}
    out = dest / "labels"
    write_csv(out / "labels.csv", ["Filename", "Label", "Species"],
              [[r["Filename"], r["Label"], r["Species"]] for r in kept])
    for split in ("train", "val", "test"):
        for k in range(5):
            src = read_csv(labels_dir / f"{split}_subset{k}.csv")
            write_csv(out / f"{split}_subset{k}.csv", ["Filename", "Label"],
                      [[r["Filename"], r["Label"]] for r in src if r["Filename"] in names])
    rng = np.random.default_rng(0)
    for r in kept:
        save_image(dest / "images" / r["Filename"], "RGB", rng, size)
    return [r["Filename"] for r in kept]


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
