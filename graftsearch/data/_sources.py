"""Data sources (DeepWeeds, image-folder trees, CSV listings) and their train/val/test splits.

``--data`` (or :class:`DataSpec`'s ``source``) takes ``PATH`` (kind detected), ``deepweeds:PATH``,
``folder:PATH``, ``csv:PATH`` or ``deepweeds`` alone (the default data directory,
``$GRAFTSEARCH_DATA/deepweeds`` or ``~/.cache/graftsearch/data/deepweeds``, downloaded on first
use). Splits: ``paper`` (stratified 60/20/20 drawn with the seed, any source), ``official:K``
(DeepWeeds' five official folds, K = 0..4) and ``column`` (a split column of a CSV listing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from graftsearch._utils.checks import is_int
from graftsearch._utils.errors import DataError, ParameterError, param_message
from graftsearch.data._images import augment as _augment
from graftsearch.data._images import image_paths_under, is_image_file, open_rgb, to_tensor01
from graftsearch.donors._preprocessing import Preprocessing
from graftsearch._utils.progress import ProgressCallback
from graftsearch._utils.seeding import derive_seed

logger = logging.getLogger("graftsearch")

SPLITS = ("train", "val", "test")
KINDS = ("deepweeds", "folder", "csv")
#: DeepWeeds' species in label order 0..8, as its labels.csv names them.
DEEPWEEDS_CLASSES = ("Chinee apple", "Lantana", "Parkinsonia", "Parthenium", "Prickly acacia",
                     "Rubber vine", "Siam weed", "Snake weed", "Negative")
DEEPWEEDS_FOLDS = 5
PAPER_FRACTIONS = (0.6, 0.2, 0.2)
#: A stratified split puts at least one image of every class in each of train, val and test.
MIN_PER_CLASS = 3
_SHOW = 5  # how many offending items an error message lists


def default_data_dir() -> Path:
    """Where downloaded datasets live: ``$GRAFTSEARCH_DATA`` or ``~/.cache/graftsearch/data``."""
    env = os.environ.get("GRAFTSEARCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graftsearch" / "data"


def default_deepweeds_dir() -> Path:
    return default_data_dir() / "deepweeds"


def listing(items: Sequence[Any], n: int = _SHOW) -> str:
    """``'a', 'b', 'c' and 4 more`` for error messages."""
    shown = ", ".join(f"'{i}'" for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------
# the specification


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Which images, and how they are split into train, val and test.

    ``source`` is what ``--data`` takes (see the module docstring); ``split`` is ``"paper"``,
    ``"official:K"`` or ``"column"``; ``seed`` draws the ``paper`` split; ``split_column`` names
    the column of a CSV listing holding ``train``/``val``/``test`` (default ``"split"`` with
    ``split="column"``).
    """

    source: str
    split: str = "paper"
    seed: int = 0
    split_column: Optional[str] = None

    def __post_init__(self) -> None:
        source = self.source
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, str) or not source.strip():
            raise ParameterError(param_message(
                "data", "a path, 'deepweeds:PATH', 'folder:PATH', 'csv:PATH' or 'deepweeds'",
                self.source, "Use `--data path/to/images` (one folder per class)."))
        object.__setattr__(self, "source", source.strip())
        kind, path = parse_source(self.source)
        if kind is not None and path is not None and not str(path).strip():
            raise ParameterError(param_message("data", f"a path after '{kind}:'", self.source))
        split = self.split
        valid = isinstance(split, str) and (split in ("paper", "column")
                                            or _fold_of(split) is not None)
        if not valid:
            raise ParameterError(param_message(
                "split", "'paper', 'official:K' with K in 0..4 (DeepWeeds) or 'column'", split,
                "Use `--split paper` for the stratified 60/20/20 split drawn with the seed."))
        if not is_int(self.seed) or self.seed < 0:
            raise ParameterError(param_message("seed", "a non-negative integer", self.seed))
        object.__setattr__(self, "seed", int(self.seed))
        column = self.split_column
        if column is not None and (not isinstance(column, str) or not column.strip()):
            raise ParameterError(param_message("split_column", "a column name of the CSV listing",
                                               column))
        if split == "column" and column is None:
            object.__setattr__(self, "split_column", "split")
        elif split != "column" and column is not None:
            raise ParameterError(param_message(
                "split_column", "unset unless split='column'", column,
                "Use `--split column --split-column NAME` to take the split from a CSV column."))

    @property
    def fold(self) -> Optional[int]:
        """K of ``official:K``, else None."""
        return _fold_of(self.split)

    def settings(self) -> Dict[str, Any]:
        """What decides the split (part of every fingerprint); the seed only where it is used."""
        out: Dict[str, Any] = {"split": self.split}
        if self.split == "paper":
            out["seed"] = self.seed
        if self.split == "column":
            out["split_column"] = self.split_column
        return out


def _fold_of(split: str) -> Optional[int]:
    if isinstance(split, str) and split.startswith("official:"):
        k = split.split(":", 1)[1]
        if k.isdigit() and 0 <= int(k) < DEEPWEEDS_FOLDS:
            return int(k)
    return None


def parse_source(source: str) -> Tuple[Optional[str], Optional[Path]]:
    """(kind or None when it is to be detected, path or None for the default DeepWeeds dir)."""
    if source == "deepweeds":
        return "deepweeds", None
    for kind in KINDS:
        if source.startswith(kind + ":"):
            return kind, Path(source[len(kind) + 1:]).expanduser()
    return None, Path(source).expanduser()


# ---------------------------------------------------------------------------------------------
# splits and datasets


@dataclass(frozen=True, eq=False)
class SplitData:
    """One split: image paths, labels (indices into ``classes``) and file names, in one order."""

    name: str
    paths: List[Path]
    labels: np.ndarray
    names: List[str]
    classes: Tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> Dict[str, int]:
        """Images per class."""
        per = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, per)}

    def fingerprint(self) -> str:
        """SHA-256 of the split settings, classes, and every file's name, label, size and mtime.

        The files are stat'ed now, so a file touched since loading changes the fingerprint.
        """
        h = hashlib.sha256()
        h.update(json.dumps({"split_name": self.name, "classes": list(self.classes),
                             **dict(self.settings)}, sort_keys=True).encode())
        missing = []
        for path, name, label in zip(self.paths, self.names, self.labels.tolist()):
            try:
                st = os.stat(path)
            except OSError:
                missing.append(name)
                continue
            h.update(f"\n{name}\t{label}\t{st.st_size}\t{st.st_mtime_ns}".encode())
        if missing:
            raise DataError(f"{len(missing)} image file(s) of the {self.name} split disappeared: "
                            f"{listing(missing)}.")
        return h.hexdigest()


class ImageDataset:
    """A labelled image collection split into ``train``, ``val`` and ``test``.

    ``classes`` are the class names in label order, ``kind`` is ``deepweeds``, ``folder`` or
    ``csv``, ``root`` the directory (or CSV file) it was read from.
    """

    splits = SPLITS

    def __init__(self, *, kind: str, root: Path, classes: Sequence[str], spec: DataSpec,
                 split_data: Mapping[str, SplitData]):
        self.kind = kind
        self.root = root
        self.classes = list(classes)
        self.spec = spec
        self._splits = dict(split_data)

    def split(self, name: str) -> SplitData:
        if isinstance(name, SplitData):
            return name
        if name not in self._splits:
            raise ParameterError(param_message("split", f"one of {list(SPLITS)}", name))
        return self._splits[name]

    def fingerprint(self) -> str:
        """SHA-256 over the fingerprints of the three splits."""
        h = hashlib.sha256(self.kind.encode())
        for name in SPLITS:
            h.update(self.split(name).fingerprint().encode())
        return h.hexdigest()

    def __len__(self) -> int:
        return sum(len(s) for s in self._splits.values())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(self._splits[n])}" for n in SPLITS)
        return (f"ImageDataset(kind={self.kind!r}, root='{self.root}', "
                f"classes={len(self.classes)}, split={self.spec.split!r}, {sizes})")


@dataclass
class _Listing:
    """What a source reader returns before splitting."""

    kind: str
    root: Path
    paths: List[Path]
    names: List[str]
    labels: np.ndarray
    classes: List[str]
    official: Optional[Dict[str, List[int]]] = None  # split -> row indices
    column: Optional[List[str]] = None               # split value per row


def load_dataset(spec: Union[DataSpec, str, os.PathLike], *,
                 classes: Optional[Sequence[str]] = None, download: Optional[bool] = None,
                 progress: Optional[ProgressCallback] = None, **kwargs: Any) -> ImageDataset:
    """Read a data source and split it.

    ``load_dataset("images/")``, ``load_dataset("deepweeds:/data/dw", split="official:0")``,
    ``load_dataset(DataSpec(source="list.csv", split="column"))``. ``classes`` fixes the class
    order of a folder tree or CSV listing (every label must be one of them). The bare source
    ``"deepweeds"`` downloads DeepWeeds into the default data directory when it is not there
    (``download=False`` refuses, ``download=True`` also allows it for an explicit path).
    """
    if isinstance(spec, DataSpec):
        if kwargs:
            raise ParameterError(param_message("kwargs", "empty when a DataSpec is given", kwargs))
    else:
        spec = DataSpec(source=spec, **kwargs)
    kind, path = parse_source(spec.source)
    if path is None:
        path = default_deepweeds_dir()
        if download is not False and not deepweeds_complete(path):
            from graftsearch.data._download import download_deepweeds

            logger.info("DeepWeeds is not in %s; downloading it", path)
            download_deepweeds(path, progress=progress)
    elif download and kind in (None, "deepweeds") and not deepweeds_complete(path):
        from graftsearch.data._download import download_deepweeds

        download_deepweeds(path, progress=progress)
        kind = "deepweeds"
    if not path.exists():
        hint = ("Run `graftsearch data download deepweeds` first, or pass `--data PATH`."
                if kind == "deepweeds" else
                "Pass an image folder (one sub-folder per class), a CSV listing (path,label) or "
                "a DeepWeeds directory.")
        raise DataError(param_message("data", "an existing file or directory", str(path), hint))
    if kind is None:
        kind = detect_kind(path)
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise ParameterError(param_message("classes", "at least two distinct class names",
                                               classes))
    if kind == "deepweeds":
        if classes is not None and list(classes) != list(DEEPWEEDS_CLASSES):
            raise ParameterError(param_message("classes", "unset for DeepWeeds (its 9 species are "
                                               "fixed)", classes))
        lst = _read_deepweeds(path, spec)
    elif kind == "folder":
        lst = _read_folder(path, classes)
    else:
        lst = _read_csv(path, spec, classes)
    if spec.fold is not None and kind != "deepweeds":
        raise DataError(param_message("split", "'paper' or 'column' for a non-DeepWeeds source",
                                      spec.split, "Official folds exist only for DeepWeeds."))
    if spec.split == "column" and kind != "csv":
        raise DataError(param_message("split", "'paper' for an image folder or DeepWeeds directory",
                                      spec.split, "A split column needs a CSV listing: "
                                      "`--data csv:list.csv --split column`."))
    _check_files_exist(lst)
    if spec.split == "paper":
        rows = stratified_split(lst.labels, lst.classes, spec.seed)
    elif spec.fold is not None:
        rows = lst.official
    else:
        rows = _column_split(lst.column, spec.split_column)
    settings = {"kind": lst.kind, **spec.settings()}
    split_data = {
        name: SplitData(name=name, paths=[lst.paths[i] for i in idx],
                        labels=lst.labels[np.asarray(idx, dtype=np.int64)].astype(np.int64),
                        names=[lst.names[i] for i in idx], classes=tuple(lst.classes),
                        settings=settings)
        for name, idx in rows.items()}
    for name in SPLITS:
        if not len(split_data[name]):
            raise DataError(f"The {name} split of '{path}' is empty ({spec.split} split); every "
                            "split needs images.")
    return ImageDataset(kind=lst.kind, root=lst.root, classes=lst.classes, spec=spec,
                        split_data=split_data)


def detect_kind(path: Path) -> str:
    """``deepweeds`` (labels.csv + images/), ``csv`` (a .csv file) or ``folder`` (a directory)."""
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return "csv"
        raise DataError(param_message(
            "data", "a directory or a CSV listing (path,label)", str(path),
            "Use `--data csv:FILE` if that file is a CSV listing with another extension."))
    if deepweeds_complete(path):
        return "deepweeds"
    return "folder"


def deepweeds_complete(path: Path) -> bool:
    return (path / "images").is_dir() and _labels_file(path) is not None


def _labels_file(root: Path) -> Optional[Path]:
    for candidate in (root / "labels.csv", root / "labels" / "labels.csv"):
        if candidate.is_file():
            return candidate
    return None


def _read_table(path: Path, what: str):
    import pandas as pd

    try:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"The {what} '{path}' does not exist.") from None
    except Exception as exc:  # pandas raises several parser error types
        raise DataError(f"The {what} '{path}' cannot be read as CSV ({type(exc).__name__}: "
                        f"{exc}).") from None


def _read_deepweeds(root: Path, spec: DataSpec) -> _Listing:
    labels_file = _labels_file(root)
    if labels_file is None or not (root / "images").is_dir():
        raise DataError(param_message(
            "data", "a DeepWeeds directory holding images/ and labels.csv (or labels/labels.csv)",
            str(root), "Run `graftsearch data download deepweeds --to DIR` to fetch it."))
    df = _read_table(labels_file, "DeepWeeds label file")
    for col in ("Filename", "Label"):
        if col not in df.columns:
            raise DataError(f"The DeepWeeds label file '{labels_file}' must have the columns "
                            f"Filename,Label[,Species]; it has {list(df.columns)}.")
    if df.empty:
        raise DataError(f"The DeepWeeds label file '{labels_file}' lists no images.")
    names = [n.strip() for n in df["Filename"]]
    labels, bad = _int_labels(df["Label"], len(DEEPWEEDS_CLASSES))
    if bad:
        raise DataError(f"{len(bad)} row(s) of '{labels_file}' have a Label that is not a class "
                        f"index 0..8 of DeepWeeds' 9 species: {listing(bad)}. Fix the file or "
                        "download it again.")
    if "Species" in df.columns:
        wrong = [f"{n} ({lab} = {sp!r})" for n, lab, sp in zip(names, labels, df["Species"])
                 if sp.strip() != DEEPWEEDS_CLASSES[lab]]
        if wrong:
            raise DataError(f"{len(wrong)} row(s) of '{labels_file}' name a Species that does not "
                            f"belong to their Label: {listing(wrong)}. Label k must be "
                            f"{list(DEEPWEEDS_CLASSES)}[k].")
    _check_unique(names, labels_file)
    lst = _Listing(kind="deepweeds", root=root, paths=[root / "images" / n for n in names],
                   names=names, labels=labels, classes=list(DEEPWEEDS_CLASSES))
    if spec.fold is not None:
        lst.official = _official_rows(root, labels_file.parent, spec.fold, names, labels)
    return lst


def _int_labels(values, n_classes: int) -> Tuple[np.ndarray, List[str]]:
    out = np.zeros(len(values), dtype=np.int64)
    bad = []
    for i, v in enumerate(values):
        v = str(v).strip()
        if v.lstrip("-").isdigit() and 0 <= int(v) < n_classes:
            out[i] = int(v)
        else:
            bad.append(f"row {i + 2}: {v!r}")
    return out, bad


def _check_unique(names: Sequence[str], where: Path) -> None:
    seen, dup = set(), []
    for n in names:
        if n in seen:
            dup.append(n)
        seen.add(n)
    if dup:
        raise DataError(f"'{where}' lists {len(dup)} image(s) more than once: {listing(dup)}.")


def _official_rows(root: Path, labels_dir: Path, fold: int, names: List[str],
                   labels: np.ndarray) -> Dict[str, List[int]]:
    row_of = {n: i for i, n in enumerate(names)}
    out: Dict[str, List[int]] = {}
    seen: Dict[str, str] = {}
    for split in SPLITS:
        fname = f"{split}_subset{fold}.csv"
        candidates = [labels_dir / fname, root / fname, root / "labels" / fname]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise DataError(f"The official DeepWeeds split file '{fname}' is not in "
                            f"'{labels_dir}'. Run `graftsearch data download deepweeds --to DIR` "
                            "(it fetches the split files), or use `--split paper`.")
        df = _read_table(path, "DeepWeeds split file")
        if "Filename" not in df.columns:
            raise DataError(f"The DeepWeeds split file '{path}' must have a Filename column; it "
                            f"has {list(df.columns)}.")
        fnames = [n.strip() for n in df["Filename"]]
        unknown = [n for n in fnames if n not in row_of]
        if unknown:
            raise DataError(f"The split file '{path}' names {len(unknown)} image(s) that do not "
                            f"exist in the dataset (not in labels.csv): {listing(unknown)}. Use "
                            "the split files that came with this labels.csv.")
        rows = [row_of[n] for n in fnames]
        if "Label" in df.columns:
            got, bad = _int_labels(df["Label"], len(DEEPWEEDS_CLASSES))
            wrong = [n for n, g, r in zip(fnames, got, rows) if g != labels[r]]
            if bad or wrong:
                raise DataError(f"The split file '{path}' gives {len(bad) + len(wrong)} image(s) "
                                f"a label other than labels.csv does: {listing(bad + wrong)}.")
        twice = [n for n in fnames if n in seen]
        if twice:
            raise DataError(f"The split file '{path}' repeats image(s) of the "
                            f"{seen[twice[0]]} split: {listing(twice)}.")
        seen.update({n: split for n in fnames})
        out[split] = rows
    return out


def _read_folder(root: Path, classes: Optional[Sequence[str]]) -> _Listing:
    if not root.is_dir():
        raise DataError(param_message("data", "a directory with one sub-folder per class",
                                      str(root)))
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        loose = [p.name for p in root.iterdir() if p.is_file() and is_image_file(p)]
        what = (f"holds {len(loose)} image(s) but no class folders" if loose else "is empty")
        raise DataError(param_message(
            "data", "a directory with one sub-folder of images per class", str(root),
            f"The directory {what}. Put each class's images in a folder named after the class, "
            "or pass a CSV listing (path,label)."))
    per_class = {d.name: image_paths_under(d) for d in class_dirs}
    empty = [n for n, files in per_class.items() if not files]
    if empty:
        raise DataError(f"{len(empty)} class folder(s) of '{root}' hold no images: "
                        f"{listing(empty)}. Add images or remove the folder(s).")
    names, paths, label_names = [], [], []
    for cls, files in per_class.items():
        for p in files:
            paths.append(p)
            names.append(p.relative_to(root).as_posix())
            label_names.append(cls)
    class_list, labels = _class_indices(label_names, classes, f"the folders of '{root}'")
    return _Listing(kind="folder", root=root, paths=paths, names=names, labels=labels,
                    classes=class_list)


def _class_indices(label_names: Sequence[str], classes: Optional[Sequence[str]],
                   where: str) -> Tuple[List[str], np.ndarray]:
    if classes is None:
        found = sorted(set(label_names))
        if all(c.lstrip("-").isdigit() for c in found):
            found = sorted(found, key=int)  # "10" after "9"
        classes = found
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for c in label_names if c not in index})
    if unknown:
        raise DataError(param_message(
            "classes", f"a list holding every label of {where}", list(classes),
            f"{len(unknown)} label(s) are not in the class list: {listing(unknown)}. Add them to "
            "the class list or fix the labels."))
    if len(classes) < 2:
        raise DataError(f"{where} hold a single class {list(classes)}; classification needs at "
                        "least two.")
    return list(classes), np.asarray([index[c] for c in label_names], dtype=np.int64)


def _read_csv(path: Path, spec: DataSpec, classes: Optional[Sequence[str]]) -> _Listing:
    if not path.is_file():
        raise DataError(param_message("data", "a CSV listing file (path,label)", str(path)))
    df = _read_table(path, "CSV listing")
    cols = {c.strip().lower(): c for c in df.columns}
    for need in ("path", "label"):
        if need not in cols:
            raise DataError(f"The CSV listing '{path}' must have the columns path,label; it has "
                            f"{list(df.columns)}.")
    if df.empty:
        raise DataError(f"The CSV listing '{path}' lists no images.")
    base = path.parent
    names = [str(v).strip() for v in df[cols["path"]]]
    blank = [f"row {i + 2}" for i, n in enumerate(names) if not n]
    label_names = [str(v).strip() for v in df[cols["label"]]]
    blank += [f"row {i + 2}" for i, v in enumerate(label_names) if not v]
    if blank:
        raise DataError(f"The CSV listing '{path}' has an empty path or label in "
                        f"{len(blank)} row(s): {listing(blank)}.")
    _check_unique(names, path)
    paths = [Path(n).expanduser() if Path(n).expanduser().is_absolute() else base / n
             for n in names]
    class_list, labels = _class_indices(label_names, classes, f"the labels of '{path}'")
    column = None
    if spec.split == "column":
        key = spec.split_column.strip().lower()
        if key not in cols:
            raise DataError(param_message(
                "split_column", f"a column of '{path}' ({', '.join(map(str, df.columns))})",
                spec.split_column))
        column = [str(v).strip().lower() for v in df[cols[key]]]
    return _Listing(kind="csv", root=path, paths=paths, names=names, labels=labels,
                    classes=class_list, column=column)


def _check_files_exist(lst: _Listing) -> None:
    missing = [n for n, p in zip(lst.names, lst.paths) if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(lst.paths)} image file(s) listed for '{lst.root}' "
                        f"do not exist: {listing(missing)}. Restore them or remove them from the "
                        "listing.")


def _column_split(values: List[str], column: str) -> Dict[str, List[int]]:
    aliases = {"validation": "val", "valid": "val"}
    values = [aliases.get(v, v) for v in values]
    bad = sorted({v for v in values if v not in SPLITS})
    if bad:
        raise DataError(param_message("split_column", f"a column holding only {list(SPLITS)}",
                                      column, f"It also holds {listing(bad)}."))
    return {s: [i for i, v in enumerate(values) if v == s] for s in SPLITS}


def stratified_split(labels: np.ndarray, classes: Sequence[str], seed: int) -> Dict[str, List[int]]:
    """The paper's stratified 60/20/20 split of row indices, drawn with ``seed``.

    Each class is shuffled on its own generator (derived from the seed and the class name), so
    adding images to one class leaves the other classes' splits alone. At least one image of
    every class lands in val and in test. Rows keep their dataset order within a split.
    """
    labels = np.asarray(labels, dtype=np.int64)
    small = []
    chosen: Dict[str, List[int]] = {s: [] for s in SPLITS}
    for c, name in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        n = len(idx)
        if n == 0:
            continue
        if n < MIN_PER_CLASS:
            small.append(f"{name} ({n})")
            continue
        rng = np.random.default_rng(derive_seed(seed, "paper-split", name))
        perm = idx[rng.permutation(n)]
        n_val = max(1, int(np.floor(n * PAPER_FRACTIONS[1] + 0.5)))
        n_test = max(1, int(np.floor(n * PAPER_FRACTIONS[2] + 0.5)))
        n_train = n - n_val - n_test
        chosen["train"].extend(perm[:n_train].tolist())
        chosen["val"].extend(perm[n_train:n_train + n_val].tolist())
        chosen["test"].extend(perm[n_train + n_val:].tolist())
    if small:
        raise DataError(f"{len(small)} class(es) have too few images for a stratified 60/20/20 "
                        f"split: {listing(small)}. Each class needs at least {MIN_PER_CLASS} (one "
                        "for each of train, val and test). Add images, drop the class, or give "
                        "the split yourself with a CSV listing and `--split column`.")
    return {s: sorted(rows) for s, rows in chosen.items()}


# ---------------------------------------------------------------------------------------------
# loading images


def bad_images_message(bad: Sequence[Tuple[str, str]]) -> str:
    # Each err is a whole sentence already; drop its final period so the list reads cleanly.
    first = "; ".join(f"'{name}': {str(err).rstrip('.')}" for name, err in bad[:_SHOW])
    more = f" (and {len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
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
    images = SplitImages(data, preprocessing, augment=augment)
    sampler = _KeySampler(len(data), shuffle=shuffle, augment=augment, seed=seed, split=data.name)
    return ImageLoader(images, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                       drop_last=drop_last, pin_memory=pin_memory,
                       skip_bad_images=skip_bad_images)
