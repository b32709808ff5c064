"""The GAP feature cache: every candidate tap of every image, computed once and memory-mapped.

A cache is one directory, keyed by a fingerprint of all its inputs (donor weights, tap list,
dataset files with sizes and mtimes, split, image size, normalisation, dtype, graftsearch
version), under ``CACHE_DIR/features/``::

    manifest.json            written last: its presence means the cache is complete
    train/tap01.npy ...      (images, channels) GAP of each tap, float32 or float16
    train/labels.npy         int64 class indices
    train/files.txt          file names, one a line, in the arrays' row order
    val/ ... test/ ...
    work/                    chunks of an unfinished extraction (gone once complete)

A changed input gives another fingerprint and so another directory: a stale cache is never read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from graftsearch._utils.device import resolve_device
from graftsearch._utils.atomic import write_json
from graftsearch.data._spec import SPLITS
from graftsearch.data._sources import ImageDataset
from graftsearch.data._loading import bad_images_message
from graftsearch._utils.errors import CacheError, DataError, ParameterError, param_message
from graftsearch.features._extract import (Chunk, assemble, extract_chunks, plan_chunks,
                       prepare_trunk, read_chunk)
from graftsearch.data._images import RESIZE_METHOD
from graftsearch.donors._preprocessing import Preprocessing
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch.taps._records import TapList
from graftsearch._version import __version__
from graftsearch._utils.paths import default_cache_dir
from graftsearch.features._options import DEFAULT_CHUNK, CacheOptions, default_workers

logger = logging.getLogger("graftsearch")

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CacheShard:
    """What a ``shard=(i, n)`` build returns while other shards are still missing."""

    path: Path
    shard: Tuple[int, int]
    fingerprint: str
    chunks_done: int
    chunks_total: int

    @property
    def complete(self) -> bool:
        return self.chunks_done == self.chunks_total


# ---------------------------------------------------------------------------------------------
# the finished cache


class FeatureCache:
    """A finished feature cache, opened read-only; a :class:`~graftsearch.features.FeatureSource`.

    Arrays are memory-mapped on first use. Pickling sends only the path (a worker reopens it).
    """

    def __init__(self, path: Path, manifest: Dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest
        self.fingerprint: str = manifest["fingerprint"]
        self.donor_name: str = manifest["donor_name"]
        self.image_size: int = int(manifest["image_size"])
        self.classes: List[str] = list(manifest["classes"])
        self.splits: Tuple[str, ...] = tuple(manifest["splits"])
        self.dtype: str = manifest["dtype"]
        pre = manifest["preprocessing"]
        self.preprocessing = Preprocessing(image_size=self.image_size, mean=tuple(pre["mean"]),
                                           std=tuple(pre["std"]))
        self.taps = TapList.from_records(manifest["taps"], donor_name=self.donor_name,
                                         image_size=self.image_size)
        self._arrays: Dict[Tuple[str, int], np.ndarray] = {}
        self._labels: Dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: Union[str, os.PathLike]) -> "FeatureCache":
        """Open the finished cache in ``path``; :class:`CacheError` when it is not one."""
        path = Path(path).expanduser()
        manifest = _read_manifest(path)
        cache = cls(path, manifest)
        cache._check_files()
        return cache

    def __reduce__(self):
        return (_reopen, (str(self.path), self.fingerprint))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.n_images(s)}" for s in self.splits)
        return (f"FeatureCache('{self.path}', donor={self.donor_name!r}, "
                f"image_size={self.image_size}, taps={len(self.taps)}, {sizes})")

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ParameterError(param_message("split", f"one of {list(self.splits)}", split))

    def _array_path(self, split: str, tap_index: int) -> Path:
        return self.path / split / f"tap{tap_index:02d}.npy"

    def features(self, split: str, tap_index: int) -> np.ndarray:
        """The (images, channels) GAP of tap ``tap_index`` (1-based) of ``split``, memory-mapped."""
        self._check_split(split)
        index = self.taps.tap(tap_index).index
        key = (split, index)
        if key not in self._arrays:
            self._arrays[key] = np.load(self._array_path(split, index), mmap_mode="r")
        return self._arrays[key]

    def labels(self, split: str) -> np.ndarray:
        self._check_split(split)
        if split not in self._labels:
            self._labels[split] = np.load(self.path / split / "labels.npy")
        return self._labels[split]

    def files(self, split: str) -> List[str]:
        """The file names of ``split`` in row order."""
        self._check_split(split)
        text = (self.path / split / "files.txt").read_text(encoding="utf-8")
        return text.splitlines()

    def n_images(self, split: str) -> int:
        return int(self.manifest["split_info"][split]["images"])

    def skipped(self, split: Optional[str] = None) -> List[Dict[str, str]]:
        """Images left out because they could not be decoded (``skip_bad_images``)."""
        splits = [split] if split is not None else list(self.splits)
        return [s for name in splits for s in self.manifest["split_info"][name]["skipped"]]

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the arrays, labels and file lists."""
        return sum(p.stat().st_size for s in self.splits for p in (self.path / s).iterdir())

    def _check_files(self) -> None:
        for split in self.splits:
            n = self.n_images(split)
            for tap in self.taps:
                shape, dtype = _npy_header(self._array_path(split, tap.index))
                if shape != (n, tap.channels) or dtype != np.dtype(self.dtype):
                    raise CacheError(f"The feature cache '{self.path}' is damaged: "
                                     f"{split}/tap{tap.index:02d}.npy has shape {shape} ({dtype}), "
                                     f"expected {(n, tap.channels)} ({self.dtype}). Delete it; "
                                     "building it again makes a fresh one.")
            shape, _ = _npy_header(self.path / split / "labels.npy")
            if shape != (n,):
                raise CacheError(f"The feature cache '{self.path}' is damaged: {split}/labels.npy "
                                 f"has shape {shape}, expected ({n},). Delete it and build again.")


def _reopen(path: str, fingerprint: str) -> FeatureCache:
    cache = FeatureCache(Path(path), _read_manifest(Path(path)))
    if cache.fingerprint != fingerprint:
        raise CacheError(f"The feature cache '{path}' changed since it was opened "
                         f"(fingerprint {cache.fingerprint[:12]}, expected {fingerprint[:12]}).")
    return cache


_REQUIRED = ("format", "status", "fingerprint", "donor_name", "image_size", "classes", "splits",
             "dtype", "preprocessing", "taps", "split_info", "inputs")


def _read_manifest(path: Path) -> Dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        extra = (" It is still being built (or the build was stopped): run the same "
                 "`graftsearch cache` command to finish it." if (path / "work").is_dir() else "")
        raise CacheError(param_message("path", "a feature cache directory (with manifest.json)",
                                       str(path), extra.strip() or None))
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise ValueError(f"keys {missing} are missing")
        if manifest["format"] != CACHE_FORMAT or manifest["status"] != "complete":
            raise ValueError(f"format {manifest['format']}, status {manifest['status']!r}")
        for s in manifest["splits"]:
            if s not in manifest["split_info"]:
                raise ValueError(f"split {s!r} has no entry in split_info")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CacheError(f"The feature cache '{path}' has a damaged manifest ({exc}). Delete the "
                         "directory; building the cache again makes a fresh one.") from None
    return manifest


def _npy_header(path: Path) -> Tuple[Optional[Tuple[int, ...]], Optional[np.dtype]]:
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(fh)
        return tuple(shape), dtype
    except (OSError, ValueError):
        return None, None


# ---------------------------------------------------------------------------------------------
# building


def cache_inputs(donor, taps: TapList, dataset: ImageDataset, preprocessing: Preprocessing,
                 dtype: str) -> Dict[str, Any]:
    """Everything the cache's contents depend on; its SHA-256 is the cache's fingerprint."""
    return {
        "format": CACHE_FORMAT,
        "graftsearch": __version__,
        "donor": {"name": donor.name, "weights_sha256": donor.fingerprint()},
        "taps": [{"name": t.name, "channels": t.channels} for t in taps],
        "dataset": {
            "kind": dataset.kind,
            "classes": list(dataset.classes),
            "split": dataset.spec.settings(),
            "splits": {s: {"images": len(dataset.split(s)),
                           "files_sha256": dataset.split(s).fingerprint()} for s in SPLITS},
        },
        "preprocessing": {**preprocessing.as_dict(), "resize": RESIZE_METHOD},
        "dtype": dtype,
    }


def fingerprint_of(inputs: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()


def cache_path(root: Path, donor_name: str, image_size: int, fingerprint: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", donor_name).strip("._") or "donor"
    return root / "features" / f"{safe}-{image_size}px-{fingerprint[:20]}"


def _writable_root(cache_dir: Path) -> Path:
    try:
        (cache_dir / "features").mkdir(parents=True, exist_ok=True)
        probe = cache_dir / "features" / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CacheError(param_message(
            "cache_dir", "a writable directory", str(cache_dir),
            f"({type(exc).__name__}: {exc.strerror or exc}) Pass another `--cache-dir DIR` or set "
            "GRAFTSEARCH_CACHE.")) from None
    return cache_dir


def _try_open(path: Path, fingerprint: str) -> Optional[FeatureCache]:
    """The finished cache at ``path``, or None when there is none or it is damaged."""
    if not (path / MANIFEST).exists():
        return None
    try:
        cache = FeatureCache.open(path)
    except CacheError as exc:
        logger.warning("%s Rebuilding it.", exc)
        return None
    if cache.fingerprint != fingerprint:
        logger.warning("The feature cache '%s' holds other inputs; rebuilding it.", path)
        return None
    return cache


def _check_skipped(cache: FeatureCache, skip_bad_images: bool) -> None:
    skipped = cache.skipped()
    if skipped and not skip_bad_images:
        raise DataError(bad_images_message([(s["file"], s["error"]) for s in skipped])
                        + f" (The cache '{cache.path}' was built with them skipped.)")


def _clear_damaged(path: Path) -> None:
    """Remove a finished-but-damaged cache, keeping chunks of unfinished work."""
    if not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.name == "work":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _work_state(work: Path, fingerprint: str, chunk_size: int, batch_size: int) -> Tuple[int, int]:
    """The chunk and batch size of the unfinished extraction in ``work`` (its first run's).

    A resumed extraction keeps them so that every image meets the same batch composition as in
    an uninterrupted run: convolution kernels may round differently for other batch sizes.
    """
    state_file = work / "state.json"
    try:
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") == fingerprint:
            kept = (int(state["chunk_size"]), int(state["batch_size"]))
            if kept != (chunk_size, batch_size):
                logger.info("continuing with the chunk size %d and batch size %d of the "
                            "unfinished extraction", *kept)
            return kept
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if work.is_dir():
        shutil.rmtree(work / "chunks", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    write_json(state_file, {"fingerprint": fingerprint, "chunk_size": chunk_size,
                            "batch_size": batch_size})
    return chunk_size, batch_size


def build_cache(donor, dataset: ImageDataset, *, image_size: Optional[int] = None,
                cache_dir: Union[str, os.PathLike, None] = None, dtype: str = "float32",
                device: str = "auto", batch_size: int = 64, num_workers: Optional[int] = None,
                shard: Union[str, Tuple[int, int], None] = None, merge: bool = False,
                skip_bad_images: bool = False, progress: Optional[ProgressCallback] = None,
                chunk_size: int = DEFAULT_CHUNK) -> Union[FeatureCache, CacheShard]:
    """Build (or reuse) the GAP feature cache of ``donor``'s taps over ``dataset``.

    A finished cache with the same fingerprint is returned with zero forward passes. Otherwise
    every image runs once through the donor's trunk (cut after its deepest tap) and the GAP of
    each tap is stored, chunk by chunk; a killed build resumes from the last complete chunk. Two
    processes asking for the same cache wait for each other (a file lock) and the second reuses
    the first's result.

    ``image_size`` defaults to the donor's; ``dtype`` is ``"float32"`` or ``"float16"``;
    ``device`` ``"auto"`` takes CUDA when present. ``shard=(i, n)`` (or ``"i/n"``) extracts only
    shard ``i`` of ``n`` and returns a :class:`CacheShard` until the shards are merged with
    ``merge=True`` (which checks that all are present and consistent, extracting nothing).
    Undecodable images stop the build with a list of them, unless ``skip_bad_images`` leaves
    them out (the manifest records them).
    """
    opts = CacheOptions(image_size=image_size, cache_dir=cache_dir, dtype=dtype, device=device,
                        batch_size=batch_size, num_workers=num_workers, shard=shard, merge=merge,
                        skip_bad_images=skip_bad_images, chunk_size=chunk_size)
    if not isinstance(dataset, ImageDataset):
        raise ParameterError(param_message("dataset", "an ImageDataset (from load_dataset)",
                                           type(dataset).__name__))
    size = opts.image_size or donor.image_size
    taps = donor.taps(size)
    pre = dataclasses.replace(donor.preprocessing, image_size=size)
    inputs = cache_inputs(donor, taps, dataset, pre, opts.dtype)
    fp = fingerprint_of(inputs)
    root = _writable_root(opts.cache_dir or default_cache_dir())
    path = cache_path(root, donor.name, size, fp)

    cache = _try_open(path, fp)
    if cache is not None:
        logger.info("reusing the feature cache %s", path)
        _check_skipped(cache, opts.skip_bad_images)
        return cache

    from filelock import FileLock

    sizes = {s: len(dataset.split(s)) for s in SPLITS}
    work = path / "work"
    if opts.shard is not None:
        i, n = opts.shard
        path.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.parent / f"{path.name}.lock")):
            chunk_size, batch_size = _work_state(work, fp, opts.chunk_size, opts.batch_size)
        with FileLock(str(work / f"shard-{i}-of-{n}.lock")):
            chunks = plan_chunks(sizes, chunk_size)
            mine = [c for c in chunks if c.number % n == i]
            _extract_missing(donor, dataset, taps, mine, work, fp, pre, opts, progress, batch_size)
            done = sum(1 for c in chunks if read_chunk(work / "chunks" / c.file_name, c, fp,
                                                       taps.channels, opts.dtype,
                                                       features=False) is not None)
        return CacheShard(path=path, shard=(i, n), fingerprint=fp, chunks_done=done,
                          chunks_total=len(chunks))

    with FileLock(str(path.parent / f"{path.name}.lock")):
        cache = _try_open(path, fp)  # another process may have finished it while we waited
        if cache is not None:
            _check_skipped(cache, opts.skip_bad_images)
            return cache
        _clear_damaged(path)
        chunk_size, batch_size = _work_state(work, fp, opts.chunk_size, opts.batch_size)
        chunks = plan_chunks(sizes, chunk_size)
        if not opts.merge:
            _extract_missing(donor, dataset, taps, chunks, work, fp, pre, opts, progress,
                             batch_size)
        began = time.perf_counter()
        split_info = assemble(path, work / "chunks", chunks, dataset, fingerprint=fp,
                              channels=taps.channels, dtype=opts.dtype,
                              skip_bad_images=opts.skip_bad_images)
        manifest = {
            "format": CACHE_FORMAT,
            "status": "complete",
            "fingerprint": fp,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "graftsearch": __version__,
            "donor_name": donor.name,
            "image_size": size,
            "classes": list(dataset.classes),
            "splits": list(SPLITS),
            "dtype": opts.dtype,
            "preprocessing": {**pre.as_dict(), "resize": RESIZE_METHOD},
            "taps": taps.to_records(),
            "dataset": {"kind": dataset.kind, "root": str(dataset.root),
                        **dataset.spec.settings()},
            "split_info": split_info,
            "inputs": inputs,
        }
        write_json(path / MANIFEST, manifest)
        shutil.rmtree(work, ignore_errors=True)
        logger.info("assembled the feature cache %s in %.1f s", path, time.perf_counter() - began)
    return FeatureCache.open(path)


def _extract_missing(donor, dataset: ImageDataset, taps: TapList, chunks: Sequence[Chunk],
                     work: Path, fp: str, pre: Preprocessing, opts: CacheOptions,
                     progress: Optional[ProgressCallback], batch_size: int) -> int:
    chunk_dir = work / "chunks"
    todo = [c for c in chunks if read_chunk(chunk_dir / c.file_name, c, fp, taps.channels,
                                            opts.dtype, features=False) is None]
    reused = len(chunks) - len(todo)
    if reused:
        logger.info("resuming: %d of %d chunk(s) already extracted", reused, len(chunks))
    if not todo:
        return 0
    device = resolve_device(opts.device)
    trunk = prepare_trunk(donor.module, taps.names, device, donor.name)
    workers = default_workers() if opts.num_workers is None else opts.num_workers
    report(progress, "cache", 0, sum(len(c) for c in todo), message="start",
           reused_images=sum(map(len, chunks)) - sum(map(len, todo)), device=str(device))
    return extract_chunks(trunk, dataset, todo, chunk_dir=chunk_dir, fingerprint=fp,
                          preprocessing=pre, channels=taps.channels, dtype=opts.dtype,
                          device=device, batch_size=batch_size, num_workers=workers,
                          skip_bad_images=opts.skip_bad_images, progress=progress)


def describe(cache: FeatureCache) -> Dict[str, Any]:
    """A summary of a cache for people (``graftsearch cache --info``)."""
    m = cache.manifest
    return {
        "path": str(cache.path),
        "fingerprint": cache.fingerprint,
        "donor": cache.donor_name,
        "donor_weights_sha256": m["inputs"]["donor"]["weights_sha256"],
        "image_size": cache.image_size,
        "dtype": cache.dtype,
        "taps": len(cache.taps),
        "feature_dim": sum(cache.taps.channels),
        "classes": cache.classes,
        "dataset": m.get("dataset", {}),
        "images": {s: cache.n_images(s) for s in cache.splits},
        "skipped": cache.skipped(),
        "nbytes": cache.nbytes,
        "created": m.get("created"),
        "graftsearch": m.get("graftsearch"),
    }


def find_caches(root: Union[str, os.PathLike]) -> List[Path]:
    """Finished caches directly in ``root`` or in ``root/features``."""
    root = Path(root).expanduser()
    found = []
    for base in (root, root / "features"):
        if base.is_dir():
            found.extend(p for p in sorted(base.iterdir()) if (p / MANIFEST).is_file())
    return found
