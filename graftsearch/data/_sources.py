"""Reading a data source (a DeepWeeds directory, an image-folder tree, a CSV listing) into its
images, labels and classes, and splitting it into an :class:`ImageDataset`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from graftsearch._utils.errors import DataError, ParameterError, param_message
from graftsearch.data._images import image_paths_under, is_image_file
from graftsearch.data._spec import (DEEPWEEDS_CLASSES, SPLITS, DataSpec, default_deepweeds_dir,
                                    listing, parse_source)
from graftsearch.data._splits import (column_split, int_labels, official_rows, read_table,
                                      stratified_split)
from graftsearch._utils.progress import ProgressCallback

logger = logging.getLogger("graftsearch")


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
        self._stores: Dict[int, Any] = {}

    def use_store(self, store) -> None:
        """Read images of ``store.image_size`` from ``store`` (an :class:`ImageStore` of this
        data, decoded once) instead of decoding the files again; a store of other files is
        refused."""
        from graftsearch.data._store import store_fingerprint

        if store.fingerprint != store_fingerprint(self, store.image_size):
            raise DataError(f"The image store '{store.path}' holds other files than this data "
                            "(a file changed since it was built). Build it again with "
                            "build_image_store(dataset, image_size, cache_dir=...).")
        self._stores[int(store.image_size)] = store

    def store_for(self, image_size: int):
        """The attached image store of that size, or None (images are then decoded)."""
        return self._stores.get(int(image_size))

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
                 progress: Optional[ProgressCallback] = None, skip_missing: bool = False,
                 **kwargs: Any) -> ImageDataset:
    """Read a data source and split it.

    ``load_dataset("images/")``, ``load_dataset("deepweeds:/data/dw", split="official:0")``,
    ``load_dataset(DataSpec(source="list.csv", split="column"))``. ``classes`` fixes the class
    order of a folder tree or CSV listing (every label must be one of them). The bare source
    ``"deepweeds"`` downloads DeepWeeds into the default data directory when it is not there
    (``download=False`` refuses, ``download=True`` also allows it for an explicit path).
    Files a CSV listing or DeepWeeds' labels name that do not exist stop the loading with a list
    of them, or, with ``skip_missing`` (``--skip-bad-images``), are left out with a warning.
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
    lst = _check_files_exist(lst, skip_missing)
    if spec.split == "paper":
        rows = stratified_split(lst.labels, lst.classes, spec.seed)
    elif spec.fold is not None:
        rows = lst.official
    else:
        rows = column_split(lst.column, spec.split_column)
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


def _read_deepweeds(root: Path, spec: DataSpec) -> _Listing:
    labels_file = _labels_file(root)
    if labels_file is None or not (root / "images").is_dir():
        raise DataError(param_message(
            "data", "a DeepWeeds directory holding images/ and labels.csv (or labels/labels.csv)",
            str(root), "Run `graftsearch data download deepweeds --to DIR` to fetch it."))
    df = read_table(labels_file, "DeepWeeds label file")
    for col in ("Filename", "Label"):
        if col not in df.columns:
            raise DataError(f"The DeepWeeds label file '{labels_file}' must have the columns "
                            f"Filename,Label[,Species]; it has {list(df.columns)}.")
    if df.empty:
        raise DataError(f"The DeepWeeds label file '{labels_file}' lists no images.")
    names = [n.strip() for n in df["Filename"]]
    labels, bad = int_labels(df["Label"], len(DEEPWEEDS_CLASSES))
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
        lst.official = official_rows(root, labels_file.parent, spec.fold, names, labels)
    return lst


def _check_unique(names: Sequence[str], where: Path) -> None:
    seen, dup = set(), []
    for n in names:
        if n in seen:
            dup.append(n)
        seen.add(n)
    if dup:
        raise DataError(f"'{where}' lists {len(dup)} image(s) more than once: {listing(dup)}.")


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
    df = read_table(path, "CSV listing")
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


def _check_files_exist(lst: _Listing, skip_missing: bool = False) -> _Listing:
    present = [p.is_file() for p in lst.paths]
    missing = [n for n, ok in zip(lst.names, present) if not ok]
    if not missing:
        return lst
    what = (f"{len(missing)} of {len(lst.paths)} image file(s) listed for '{lst.root}' do not "
            f"exist: {listing(missing)}")
    if not skip_missing or len(missing) == len(lst.paths):
        raise DataError(f"{what}. Restore them or remove them from the listing, or leave them "
                        "out with `--skip-bad-images` (load_dataset(..., skip_missing=True)).")
    logger.warning("%s; left out (--skip-bad-images).", what)
    return _keep_rows(lst, present)


def _keep_rows(lst: _Listing, keep: Sequence[bool]) -> _Listing:
    rows = [i for i, k in enumerate(keep) if k]
    new_row = {old: new for new, old in enumerate(rows)}
    official = None if lst.official is None else {
        split: [new_row[i] for i in idx if i in new_row] for split, idx in lst.official.items()}
    return replace(lst, paths=[lst.paths[i] for i in rows], names=[lst.names[i] for i in rows],
                   labels=lst.labels[np.asarray(rows, dtype=np.int64)], official=official,
                   column=None if lst.column is None else [lst.column[i] for i in rows])
