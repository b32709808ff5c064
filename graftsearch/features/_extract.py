"""Feature extraction for the cache: one forward pass per image, GAP of every tap, in chunks.

A chunk is a fixed range of positions of one split, saved atomically as one ``.npz`` under the
cache's ``work/chunks/``; a killed extraction resumes from the chunks already there. Chunks are
numbered over all splits and shard ``i/n`` extracts chunks ``k`` with ``k % n == i``, so several
processes, GPUs or hosts can fill one cache; assembly then checks that every chunk is there and
consistent and writes one ``.npy`` per split and tap.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from graftsearch._utils.atomic import atomic_path
from graftsearch.data._spec import SPLITS
from graftsearch.data._sources import ImageDataset
from graftsearch.data._loading import bad_images_message, split_images
from graftsearch._utils.errors import CacheError, DataError
from graftsearch.donors._preprocessing import Preprocessing
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch.training._imagetrain import BatchFormat

logger = logging.getLogger("graftsearch")


@dataclass(frozen=True)
class Chunk:
    """Positions ``start:stop`` of ``split``; ``number`` counts chunks over all splits."""

    number: int
    split: str
    start: int
    stop: int

    @property
    def file_name(self) -> str:
        return f"{self.split}-{self.start:09d}.npz"

    def __len__(self) -> int:
        return self.stop - self.start


def plan_chunks(sizes: Dict[str, int], chunk_size: int) -> List[Chunk]:
    chunks: List[Chunk] = []
    for split in SPLITS:
        for start in range(0, sizes[split], chunk_size):
            chunks.append(Chunk(len(chunks), split, start, min(start + chunk_size, sizes[split])))
    return chunks


def gap(output: torch.Tensor) -> torch.Tensor:
    """Global average pooling over (H, W) of an (N, C, H, W) tap output, in float32."""
    output = output.float()
    return output.mean(dim=(2, 3)) if output.dim() == 4 else output.flatten(1)


def prepare_trunk(module: nn.Module, tap_names: Sequence[str], device: torch.device,
                  donor_name: str) -> nn.Module:
    """The donor cut after its deepest tap, returning every tap; the donor itself is not moved."""
    from graftsearch.taps._trace import build_trunk

    trunk = build_trunk(module, list(tap_names), donor_name=donor_name)
    if device.type != "cpu":
        trunk = copy.deepcopy(trunk)  # .to() would move the caller's donor module too
    return trunk.to(device).eval()


def forward_gap(trunk: nn.Module, images: torch.Tensor, n_taps: int) -> List[torch.Tensor]:
    with torch.inference_mode():
        outs = trunk(images)
        return [gap(outs[f"t{i}"]) for i in range(n_taps)]


def read_chunk(path: Path, chunk: Chunk, fingerprint: str, channels: Sequence[int],
               dtype: str, *, features: bool = True) -> Optional[Dict[str, np.ndarray]]:
    """The arrays of a chunk file, or None when it is absent, unreadable or not this cache's.

    ``features=False`` reads only the small arrays (labels, ok, errors): enough to know that a
    finished chunk is there; the features are checked when the cache is assembled.
    """
    if not path.is_file():
        return None
    n = len(chunk)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in ("fingerprint", "labels", "ok", "errors")}
            ok = (str(data["fingerprint"]) == fingerprint and data["labels"].shape == (n,)
                  and data["ok"].shape == (n,))
            if ok and features:
                for i, c in enumerate(channels):
                    a = z[f"t{i}"]
                    if a.shape != (n, c) or a.dtype != dtype:
                        ok = False
                        break
                    data[f"t{i}"] = a
    except Exception as exc:  # a damaged file of any kind: the chunk is extracted again
        logger.warning("ignoring unreadable chunk %s (%s)", path, exc)
        return None
    if not ok:
        logger.warning("ignoring chunk %s: it does not match this cache", path)
        return None
    return data


def _write_chunk(path: Path, fingerprint: str, chunk: Chunk, feats: List[np.ndarray],
                 labels: np.ndarray, errors: List[str]) -> None:
    arrays = {f"t{i}": f for i, f in enumerate(feats)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, fingerprint=np.array(fingerprint), split=np.array(chunk.split),
                     start=np.array(chunk.start), labels=labels.astype(np.int64),
                     ok=np.array([not e for e in errors], dtype=bool),
                     errors=np.array(errors, dtype=str), **arrays)


def chunk_loader(images, chunks: Sequence[Chunk], *, batch_size: int,
                 num_workers: int, device: torch.device) -> DataLoader:
    """Batches of ``images`` covering ``chunks`` in order; no batch straddles two chunks, so a
    chunk's batches are the same whichever chunks are extracted around it."""
    batches = [list(range(b, min(b + batch_size, c.stop)))
               for c in chunks for b in range(c.start, c.stop, batch_size)]
    return DataLoader(images, batch_sampler=batches, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def extract_chunks(trunk: nn.Module, dataset: ImageDataset, chunks: Sequence[Chunk], *,
                   chunk_dir: Path, fingerprint: str, preprocessing: Preprocessing,
                   channels: Sequence[int], dtype: str, device: torch.device, batch_size: int,
                   num_workers: int, skip_bad_images: bool,
                   progress: Optional[ProgressCallback] = None) -> int:
    """Extract ``chunks`` (in order) into ``chunk_dir``; return the images run forward.

    Without ``skip_bad_images`` the first chunk holding undecodable images is still saved (so a
    rerun with skipping reuses it), then a :class:`DataError` lists them.
    """
    total = sum(len(c) for c in chunks)
    done = 0
    began = time.perf_counter()
    chunk_dir.mkdir(parents=True, exist_ok=True)
    n_taps = len(channels)
    np_dtype = np.dtype(dtype)
    formatted = BatchFormat(trunk)  # chosen once, on the first batch of the first split
    for split in SPLITS:
        todo = [c for c in chunks if c.split == split]
        if not todo:
            continue
        images = split_images(dataset, split, preprocessing)
        loader = chunk_loader(images, todo, batch_size=batch_size, num_workers=num_workers,
                              device=device)
        pending = iter(todo)
        chunk = next(pending)
        parts: List[List[np.ndarray]] = [[] for _ in range(n_taps)]
        labels: List[np.ndarray] = []
        errors: List[str] = []
        filled = 0
        for x, y, pos, err in loader:
            feats = formatted.infer(lambda batch: forward_gap(trunk, batch, n_taps),
                                    x.to(device, non_blocking=True))
            for i, f in enumerate(feats):
                parts[i].append(f.cpu().numpy().astype(np_dtype, copy=False))
            labels.append(y.numpy())
            errors.extend(err)
            filled += len(y)
            done += len(y)
            elapsed = time.perf_counter() - began
            report(progress, "cache", done, total, message=split, split=split,
                   images_per_s=done / elapsed if elapsed > 0 else 0.0)
            if filled == len(chunk):
                _write_chunk(chunk_dir / chunk.file_name, fingerprint, chunk,
                             [np.concatenate(p) for p in parts], np.concatenate(labels), errors)
                bad = [(images.names[chunk.start + j], e) for j, e in enumerate(errors) if e]
                if bad and not skip_bad_images:
                    raise DataError(bad_images_message(bad) + " (Extraction stopped at the first "
                                    "chunk holding bad images; more may follow.)")
                parts = [[] for _ in range(n_taps)]
                labels, errors, filled = [], [], 0
                chunk = next(pending, None)
    return done


def assemble(path: Path, chunk_dir: Path, chunks: Sequence[Chunk], dataset: ImageDataset, *,
             fingerprint: str, channels: Sequence[int], dtype: str,
             skip_bad_images: bool) -> Dict[str, dict]:
    """Check that every chunk is present and consistent, then write ``SPLIT/tapNN.npy``,
    ``labels.npy`` and ``files.txt`` per split; return what the manifest records per split.

    Chunks are read one at a time (twice: to check, then to copy), so memory stays at one chunk.
    A chunk that fails the check is deleted, so that the next build extracts it again.
    """
    missing: List[Chunk] = []
    ok_rows: Dict[int, np.ndarray] = {}
    bad_all: Dict[str, List[Tuple[str, str]]] = {s: [] for s in SPLITS}
    for c in chunks:
        file = chunk_dir / c.file_name
        data = read_chunk(file, c, fingerprint, channels, dtype)
        if data is None:
            missing.append(c)
            if file.exists():
                file.unlink()
            continue
        split = dataset.split(c.split)
        if not np.array_equal(data["labels"], split.labels[c.start:c.stop]):
            raise CacheError(f"The chunk {c.split}[{c.start}:{c.stop}] of '{path}' holds other "
                             "labels than the dataset; the shards were built from different data. "
                             f"Delete '{path}' and build it again.")
        ok_rows[c.number] = data["ok"]
        for j in np.flatnonzero(~data["ok"]):
            bad_all[c.split].append((split.names[c.start + int(j)], str(data["errors"][j])))
        del data
    if missing:
        shown = ", ".join(f"{c.split}[{c.start}:{c.stop}]" for c in missing[:5])
        raise CacheError(f"The feature cache '{path}' is missing {len(missing)} of {len(chunks)} "
                         f"chunk(s) ({shown}{' ...' if len(missing) > 5 else ''}). Run the "
                         "missing shards (or build without --shard), then merge again.")
    everything_bad = [b for s in SPLITS for b in bad_all[s]]
    if everything_bad and not skip_bad_images:
        raise DataError(bad_images_message(everything_bad))
    out: Dict[str, dict] = {}
    np_dtype = np.dtype(dtype)
    for split_name in SPLITS:
        split = dataset.split(split_name)
        mine = [c for c in chunks if c.split == split_name]
        keep = np.concatenate([ok_rows[c.number] for c in mine])
        n = int(keep.sum())
        folder = path / split_name
        folder.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            tmps = [stack.enter_context(atomic_path(folder / f"tap{i + 1:02d}.npy"))
                    for i in range(len(channels))]
            arrays = [np.lib.format.open_memmap(t, mode="w+", dtype=np_dtype, shape=(n, ch))
                      for t, ch in zip(tmps, channels)]
            row = 0
            for c in mine:
                data = read_chunk(chunk_dir / c.file_name, c, fingerprint, channels, dtype)
                if data is None:
                    raise CacheError(f"The chunk {c.split}[{c.start}:{c.stop}] of '{path}' "
                                     "changed while the cache was assembled. Build it again.")
                rows = data["ok"]
                count = int(rows.sum())
                for i, arr in enumerate(arrays):
                    arr[row:row + count] = data[f"t{i}"][rows]
                row += count
            for arr in arrays:
                arr.flush()
            del arrays, arr  # unmap before atomic_path renames the files
        with atomic_path(folder / "labels.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, split.labels[keep].astype(np.int64))
        names = [nm for nm, k in zip(split.names, keep) if k]
        with atomic_path(folder / "files.txt") as tmp:
            tmp.write_text("".join(nm + "\n" for nm in names), encoding="utf-8")
        out[split_name] = {"images": n, "listed": len(split),
                           "skipped": [{"file": f, "error": e} for f, e in bad_all[split_name]]}
    return out

