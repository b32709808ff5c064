"""Every image of a dataset decoded and resized once: a uint8 tensor store on disk.

Cultivation, the feature cache and fine-tuning all read the same S x S images many times (every
epoch); decoding a JPEG and resizing it costs more than a small network's forward pass on it.
The store keeps, per split, one ``(N, S, S, 3)`` uint8 ``.npy`` file (memory-mapped when read)
holding exactly what :func:`~graftsearch.data._images.to_tensor01` makes of each file before the
division by 255, so a batch read from the store equals one decoded from the files bit for bit.

It is keyed like the feature cache: a fingerprint of every file's name, label, size and mtime,
the split, the image size and the resize method, so a changed file makes a new store and a
stale one is never read. A store is built in a temporary directory and renamed into place
(readers never see half of one); two processes building the same store wait for each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from graftsearch._utils.atomic import write_json
from graftsearch._utils.errors import DataError, ParameterError, param_message
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch.data._images import RESIZE_METHOD, open_rgb, to_tensor01
from graftsearch.donors._preprocessing import Preprocessing, check_image_size

logger = logging.getLogger("graftsearch")

STORE_VERSION = 1
_MANIFEST = "store.json"
_SPLITS = ("train", "val", "test")


def store_fingerprint(dataset, image_size: int) -> str:
    """What a store's contents depend on: the files of every split, the size, the resize."""
    h = hashlib.sha256(json.dumps({"version": STORE_VERSION, "image_size": int(image_size),
                                   "resize": RESIZE_METHOD}, sort_keys=True).encode())
    h.update(dataset.fingerprint().encode())
    return h.hexdigest()


@dataclass
class ImageStore:
    """A finished store: ``images(split)`` is the (N, S, S, 3) uint8 array of that split (in the
    split's order), ``bad`` maps split -> [(file name, error)] of the images that could not be
    decoded (stored as zeros)."""

    path: Path
    fingerprint: str
    image_size: int
    bad: Dict[str, List[Tuple[str, str]]]

    def images(self, split: str) -> np.ndarray:
        if split not in _SPLITS:
            raise ParameterError(param_message("split", f"one of {list(_SPLITS)}", split))
        return np.load(self.path / f"{split}.npy", mmap_mode="r")

    @classmethod
    def open(cls, path) -> "ImageStore":
        path = Path(path)
        try:
            meta = json.loads((path / _MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"'{path}' is not a finished image store ({exc}). Delete it; the "
                            "next run rebuilds it.") from None
        return cls(path=path, fingerprint=meta["fingerprint"], image_size=int(meta["image_size"]),
                   bad={k: [tuple(x) for x in v] for k, v in meta["bad"].items()})


def _decode(path: str, size: int) -> Tuple[Optional[np.ndarray], str]:
    try:
        img = open_rgb(path)
    except DataError as exc:
        return None, str(exc)
    x = to_tensor01(img, size)
    # to_tensor01 divides uint8 by 255 exactly; multiplying back recovers the bytes exactly.
    return np.rint(x.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8), ""


def build_image_store(dataset, image_size: int, *, cache_dir, workers: int = 2,
                      progress: Optional[ProgressCallback] = None) -> ImageStore:
    """The store of ``dataset`` at ``image_size`` under ``cache_dir/images/``: reused when it
    exists, else built (one decode and resize per file)."""
    from filelock import FileLock

    size = check_image_size(image_size)
    fp = store_fingerprint(dataset, size)
    root = Path(cache_dir).expanduser() / "images"
    root.mkdir(parents=True, exist_ok=True)
    final = root / fp[:24]
    with FileLock(str(root / f"{final.name}.lock")):
        if (final / _MANIFEST).is_file():
            store = ImageStore.open(final)
            if store.fingerprint == fp:
                logger.info("image store reused: %s", final)
                return store
            shutil.rmtree(final)  # a prefix collision: the full fingerprint decides
        tmp = root / f".{final.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            bad: Dict[str, List[Tuple[str, str]]] = {}
            total = len(dataset)
            done = 0
            for split in _SPLITS:
                data = dataset.split(split)
                out = np.lib.format.open_memmap(tmp / f"{split}.npy", mode="w+", dtype=np.uint8,
                                                shape=(len(data), size, size, 3))
                bad[split] = []
                paths = [str(p) for p in data.paths]
                with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
                    for i, (arr, err) in enumerate(pool.map(lambda p: _decode(p, size), paths)):
                        if arr is None:
                            bad[split].append((data.names[i], err))
                            out[i] = 0
                        else:
                            out[i] = arr
                        done += 1
                        if done % 256 == 0 or done == total:
                            report(progress, "images", done, total)
                out.flush()
                del out
            write_json(tmp / _MANIFEST, {"fingerprint": fp, "image_size": size,
                                         "resize": RESIZE_METHOD, "version": STORE_VERSION,
                                         "counts": {s: len(dataset.split(s)) for s in _SPLITS},
                                         "bad": bad})
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    logger.info("image store built: %s", final)
    return ImageStore.open(final)


def augment_tensor(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """A random horizontal flip and a random crop of 80-100 % of each side, resized back to the
    input size (bilinear, antialiased), of one (3, S, S) image in [0, 1]."""
    size = x.shape[-1]
    if rng.random() < 0.5:
        x = x.flip(-1)
    cw = max(1, int(round(size * rng.uniform(0.8, 1.0))))
    ch = max(1, int(round(size * rng.uniform(0.8, 1.0))))
    left, top = rng.randint(0, size - cw), rng.randint(0, size - ch)
    crop = x[:, top:top + ch, left:left + cw]
    if crop.shape[-2:] == (size, size):
        return crop
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


class StoreImages(Dataset):
    """A split of an :class:`ImageStore` as ``(image, label, position, error)``, normalised with
    ``preprocessing``; the same items, in the same order, as decoding the split's files."""

    def __init__(self, store: ImageStore, split, preprocessing: Preprocessing, *,
                 augment: bool = False):
        if preprocessing.image_size != store.image_size:
            raise ParameterError(param_message("image_size", f"{store.image_size} (the store's)",
                                               preprocessing.image_size))
        self.array = store.images(split.name)
        if len(self.array) != len(split):
            raise DataError(f"The image store '{store.path}' holds {len(self.array)} images of the "
                            f"{split.name} split, the data {len(split)}. Delete the store.")
        self.names = list(split.names)
        self.labels = np.asarray(split.labels, dtype=np.int64)
        self.errors = {name: err for name, err in store.bad.get(split.name, [])}
        self.mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(preprocessing.std, dtype=torch.float32).view(3, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key):
        pos, aug_seed = key if isinstance(key, tuple) else (key, None)
        x = torch.from_numpy(np.array(self.array[pos])).permute(2, 0, 1).to(torch.float32).div_(255.0)
        if self.augment and aug_seed is not None:
            x = augment_tensor(x, random.Random(aug_seed))
        err = self.errors.get(self.names[pos], "")
        return (x - self.mean) / self.std, int(self.labels[pos]), int(pos), err
