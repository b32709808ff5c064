"""Decoding and preprocessing of one image, the same for caching, training and export.

The pipeline is fixed because an exported grafted model takes the output of :func:`to_tensor01`
as its input: open the file, convert to RGB, resize to S x S with Pillow's bilinear filter, scale
to [0, 1]; normalisation ``(x - mean) / std`` happens after that (inside the exported model).

The resize ignores the aspect ratio (as Keras' ``load_img(target_size=...)`` did for the paper)
and uses ``PIL.Image.resize(..., Image.Resampling.BILINEAR)``, which antialiases when shrinking:
Pillow widens the filter's support by the scale factor, so every source pixel contributes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from graftsearch._utils.errors import DataError
from graftsearch.donors._preprocessing import Preprocessing, check_image_size

PathLike = Union[str, "os.PathLike[str]"]

#: Identifies the resize above in cache fingerprints; change it whenever the pipeline changes.
RESIZE_METHOD = "pil-bilinear-antialias-squash"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm")


def is_image_file(path: PathLike) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def open_rgb(path: PathLike) -> Image.Image:
    """Decode ``path`` fully and return it as an 8-bit RGB image.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted (alpha is dropped, as Keras
    does). A missing, corrupt or truncated file raises :class:`DataError` naming the file.
    """
    try:
        with Image.open(path) as img:
            img.load()  # force the full decode here, so truncation is caught now
            return _as_rgb(img)
    except FileNotFoundError:
        raise DataError(f"The image '{path}' does not exist.") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise DataError(f"The image '{path}' cannot be decoded ({type(exc).__name__}: {exc}); "
                        "it is corrupt, truncated or not an image.") from None


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # Pillow's own conversion clips these to 0..255; scale the sample range instead.
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if img.mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        elif img.mode != "F" and arr.size and arr.max() > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow warns when a transparent palette goes straight to RGB
    return img.convert("RGB")


def to_tensor01(img: Image.Image, image_size: int) -> torch.Tensor:
    """A (3, S, S) float32 tensor in [0, 1]: ``img`` resized to S x S (bilinear, antialiased)."""
    size = check_image_size(image_size)
    if img.mode != "RGB":
        img = _as_rgb(img)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)


def normalize(x: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """``(x - mean) / std`` per channel of a (3, S, S) or (N, 3, S, S) tensor in [0, 1]."""
    shape = (3, 1, 1) if x.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(preprocessing.mean, dtype=x.dtype).view(shape)
    std = torch.tensor(preprocessing.std, dtype=x.dtype).view(shape)
    return (x - mean) / std


def load_image(path: PathLike, preprocessing: Preprocessing, *,
               normalize: bool = True) -> torch.Tensor:
    """:func:`open_rgb`, then :func:`to_tensor01`, then (unless ``normalize=False``) normalised."""
    x = to_tensor01(open_rgb(path), preprocessing.image_size)
    return _normalize(x, preprocessing) if normalize else x


_normalize = normalize


def augment(img: Image.Image, rng: Optional[random.Random]) -> Image.Image:
    """A random horizontal flip and a random square-ish crop of 80-100 % of each side.

    Only for donor training; the feature cache never augments (it must be a pure function of its
    inputs). The result still goes through :func:`to_tensor01`.
    """
    if rng is None:
        return img
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = img.size
    cw = max(1, int(round(w * rng.uniform(0.8, 1.0))))
    ch = max(1, int(round(h * rng.uniform(0.8, 1.0))))
    left = rng.randint(0, w - cw)
    top = rng.randint(0, h - ch)
    return img.crop((left, top, left + cw, top + ch))


def image_paths_under(root: Path) -> list[Path]:
    """Image files below ``root`` (recursively, hidden entries skipped), sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and is_image_file(f):
                found.append(Path(dirpath) / f)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
