"""Row indices of train, val and test: the paper's stratified split, DeepWeeds' official folds and
a split column of a CSV listing."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from graftsearch._utils.errors import DataError, param_message
from graftsearch._utils.seeding import derive_seed
from graftsearch.data._spec import (DEEPWEEDS_CLASSES, MIN_PER_CLASS, PAPER_FRACTIONS, SPLITS,
                                    listing)


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


def official_rows(root: Path, labels_dir: Path, fold: int, names: List[str],
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
        df = read_table(path, "DeepWeeds split file")
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
            got, bad = int_labels(df["Label"], len(DEEPWEEDS_CLASSES))
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


def column_split(values: List[str], column: str) -> Dict[str, List[int]]:
    aliases = {"validation": "val", "valid": "val"}
    values = [aliases.get(v, v) for v in values]
    bad = sorted({v for v in values if v not in SPLITS})
    if bad:
        raise DataError(param_message("split_column", f"a column holding only {list(SPLITS)}",
                                      column, f"It also holds {listing(bad)}."))
    return {s: [i for i, v in enumerate(values) if v == s] for s in SPLITS}


def read_table(path: Path, what: str):
    import pandas as pd

    try:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"The {what} '{path}' does not exist.") from None
    except Exception as exc:  # pandas raises several parser error types
        raise DataError(f"The {what} '{path}' cannot be read as CSV ({type(exc).__name__}: "
                        f"{exc}).") from None


def int_labels(values, n_classes: int) -> Tuple[np.ndarray, List[str]]:
    out = np.zeros(len(values), dtype=np.int64)
    bad = []
    for i, v in enumerate(values):
        v = str(v).strip()
        if v.lstrip("-").isdigit() and 0 <= int(v) < n_classes:
            out[i] = int(v)
        else:
            bad.append(f"row {i + 2}: {v!r}")
    return out, bad
