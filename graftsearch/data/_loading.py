"""Batches of one split: decoded, normalised (and for donor training augmented) images, drawn in an
order that depends only on the seed and the epoch, with bad images listed rather than raised in a
worker."""

from __future__ import annotations

import random
from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from graftsearch._utils.errors import DataError, ParameterError, param_message
from graftsearch.data._images import augment as _augment
from graftsearch.data._images import open_rgb, to_tensor01
from graftsearch.data._sources import ImageDataset, SplitData
from graftsearch.data._spec import SHOW
from graftsearch.data._store import StoreImages
from graftsearch.donors._preprocessing import Preprocessing
from graftsearch._utils.seeding import derive_seed


def bad_images_message(bad: Sequence[Tuple[str, str]]) -> str:
    # Each err is a whole sentence already; drop its final period so the list reads cleanly.
    first = "; ".join(f"'{name}': {str(err).rstrip('.')}" for name, err in bad[:SHOW])
    more = f" (and {len(bad) - SHOW} more)" if len(bad) > SHOW else ""
    return (f"{len(bad)} image(s) cannot be decoded: {first}{more}. Fix or remove them, or pass "
            "`--skip-bad-images` (skip_bad_images=True) to leave them out; skipped images are "
            "recorded in the cache manifest.")


class SplitImages(Dataset):
    """A split as a torch Dataset of ``(image, label, position, error)``.

    A bad image gives a zero image and its error message instead of raising inside a worker, so
    the main process can list every bad image cleanly. A key may be ``(position, augment_seed)``.
    """

    def __init__(self, split: SplitData, preprocessing: Preprocessing, *, augment: bool = False):
        self.paths = [str(p) for p in split.paths]
        self.names = list(split.names)
        self.labels = np.asarray(split.labels, dtype=np.int64)
        self.size = preprocessing.image_size
        self.mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(preprocessing.std, dtype=torch.float32).view(3, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        pos, aug_seed = key if isinstance(key, tuple) else (key, None)
        try:
            img = open_rgb(self.paths[pos])
            if self.augment and aug_seed is not None:
                img = _augment(img, random.Random(aug_seed))
            x = (to_tensor01(img, self.size) - self.mean) / self.std
            err = ""
        except DataError as exc:
            x = torch.zeros(3, self.size, self.size)
            err = str(exc)
        return x, int(self.labels[pos]), int(pos), err


class _KeySampler(Sampler):
    """Positions in order or shuffled per epoch, plus one augmentation seed per item when
    augmenting; all drawn in the main process from the seed, so workers change nothing."""

    def __init__(self, n: int, *, shuffle: bool, augment: bool, seed: int, split: str):
        self.n, self.shuffle, self.augment, self.seed, self.split = n, shuffle, augment, seed, split
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng(derive_seed(self.seed, "loader", self.split, self.epoch))
        self.epoch += 1
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        if self.augment:
            seeds = rng.integers(0, 2**62, size=self.n)
            return iter([(int(p), int(s)) for p, s in zip(order, seeds)])
        return iter(order.tolist())


class ImageLoader(DataLoader):
    """A DataLoader yielding ``(images, labels, positions)``; bad images raise a
    :class:`DataError` listing them, or are dropped with ``skip_bad_images``."""

    def __init__(self, *args: Any, skip_bad_images: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.skip_bad_images = skip_bad_images
        self.skipped: List[Tuple[str, str]] = []

    def __iter__(self):  # type: ignore[override]
        for images, labels, positions, errors in super().__iter__():
            bad = [i for i, e in enumerate(errors) if e]
            if bad:
                found = [(self.dataset.names[int(positions[i])], errors[i]) for i in bad]
                if not self.skip_bad_images:
                    raise DataError(bad_images_message(found))
                self.skipped.extend(found)
                keep = torch.ones(len(errors), dtype=torch.bool)
                keep[bad] = False
                images, labels, positions = images[keep], labels[keep], positions[keep]
            yield images, labels, positions


def split_images(dataset: ImageDataset, split: Union[str, SplitData], preprocessing: Preprocessing,
                 *, augment: bool = False) -> Dataset:
    """The items ``(image, label, position, error)`` of one split: read from the dataset's image
    store when one of the right size is attached (the same values), else decoded from the files."""
    data = dataset.split(split)
    store = dataset.store_for(preprocessing.image_size)
    if store is not None:
        return StoreImages(store, data, preprocessing, augment=augment)
    return SplitImages(data, preprocessing, augment=augment)


def make_loader(dataset: ImageDataset, split: Union[str, SplitData], preprocessing: Preprocessing,
                *, batch_size: int = 64, num_workers: int = 0, shuffle: bool = False,
                seed: int = 0, augment: bool = False, skip_bad_images: bool = False,
                drop_last: bool = False, pin_memory: bool = False) -> ImageLoader:
    """A DataLoader over one split yielding ``(images, labels, positions)``.

    ``images`` is (N, 3, S, S) float32, normalised with ``preprocessing``; ``labels`` and
    ``positions`` (index into the split) are int64. Shuffling and augmentation (a random flip and
    crop, for donor training only) are drawn from ``seed`` and the epoch, the same with any
    number of workers.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(param_message("batch_size", "a positive integer", batch_size))
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ParameterError(param_message("num_workers", "a non-negative integer", num_workers))
    data = dataset.split(split)
    images = split_images(dataset, data, preprocessing, augment=augment)
    sampler = _KeySampler(len(data), shuffle=shuffle, augment=augment, seed=seed, split=data.name)
    return ImageLoader(images, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                       drop_last=drop_last, pin_memory=pin_memory,
                       skip_bad_images=skip_bad_images)
