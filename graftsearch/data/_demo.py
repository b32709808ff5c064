"""Offline demo data: scikit-learn's handwritten digits written out as an image-folder tree.

The digits (1,797 images of 8x8 pixels, 10 classes) install with scikit-learn, so the demo runs
with no network. They are upscaled to 32x32 with bicubic interpolation when written; the run then
resizes them to its image size like any other image folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from graftsearch._utils.errors import DataError

DEMO_SIDE = 32
_MARKER = "graftsearch-demo.json"


def default_demo_dir() -> Path:
    base = os.environ.get("GRAFTSEARCH_DATA")
    root = Path(base) if base else Path.home() / ".cache" / "graftsearch" / "data"
    return root / "digits"


def prepare_demo_data(root: os.PathLike | str | None = None) -> Path:
    """Write the digits as PNG files under ``root`` (once) and return the folder to use as data."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("The demo needs scikit-learn for its digits images. Install it with "
                        "`pip install 'graftsearch[demo]'`.") from exc
    from PIL import Image
    import numpy as np

    target = Path(root) if root is not None else default_demo_dir()
    marker = target / _MARKER
    digits = load_digits()
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("images") == len(digits.target):
                return target
        except (OSError, ValueError):
            pass  # damaged marker: write the tree again
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=target.parent))
    try:
        for i, (image, label) in enumerate(zip(digits.images, digits.target)):
            folder = tmp / f"digit_{label}"
            folder.mkdir(exist_ok=True)
            pixels = (np.asarray(image) * (255.0 / 16.0)).round().astype("uint8")
            Image.fromarray(pixels, mode="L").resize((DEMO_SIDE, DEMO_SIDE), Image.BICUBIC) \
                .save(folder / f"{i:04d}.png")
        (tmp / _MARKER).write_text(json.dumps({"images": len(digits.target), "side": DEMO_SIDE}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
