"""What fitness functions read: pooled features per split and tap, and labels.

A :class:`FeatureSource` is anything with this shape; the on-disk feature cache is one, and
:class:`ArrayFeatures` is an in-memory one (tests, synthetic problems, features computed
elsewhere).
"""

from __future__ import annotations

from typing import Dict, Mapping, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.taps._records import TapList


@runtime_checkable
class FeatureSource(Protocol):
    """Pooled tap features and labels, split by split.

    ``features(split, tap_index)`` is an (images, channels) array of the GAP of tap
    ``tap_index`` (1-based); ``labels(split)`` holds class indices into ``classes``.
    ``fingerprint`` identifies the contents, so that a run's archive is never reused on other
    features.
    """

    taps: TapList
    classes: Sequence[str]
    splits: Tuple[str, ...]
    fingerprint: str

    def features(self, split: str, tap_index: int) -> np.ndarray: ...

    def labels(self, split: str) -> np.ndarray: ...


def selection_features(source: FeatureSource, split: str, selection: Sequence[int],
                       dtype=np.float32) -> np.ndarray:
    """The concatenation, in tap order, of the selected taps' features of one split."""
    return np.concatenate([np.asarray(source.features(split, i), dtype=dtype)
                           for i in sorted(selection)], axis=1)


class ArrayFeatures:
    """A :class:`FeatureSource` held in memory.

    ``features[split]`` is a list with one (images, channels) array per tap, in tap order.
    """

    def __init__(self, taps: TapList, classes: Sequence[str],
                 features: Mapping[str, Sequence[np.ndarray]], labels: Mapping[str, np.ndarray],
                 *, fingerprint: str | None = None):
        self.taps = taps
        self.classes = list(classes)
        self.splits = tuple(features)
        self._features: Dict[str, Tuple[np.ndarray, ...]] = {}
        self._labels: Dict[str, np.ndarray] = {}
        for split, arrays in features.items():
            arrays = tuple(np.asarray(a) for a in arrays)
            if len(arrays) != len(taps):
                raise ParameterError(param_message(
                    "features", f"one array per tap ({len(taps)}) for split '{split}'", len(arrays)))
            y = np.asarray(labels[split], dtype=np.int64)
            for tap, a in zip(taps, arrays):
                if a.ndim != 2 or a.shape != (len(y), tap.channels):
                    raise ParameterError(param_message(
                        "features", f"an array of shape ({len(y)}, {tap.channels}) for tap "
                        f"{tap.index} of split '{split}'", a.shape))
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise ParameterError(param_message("labels", f"class indices in 0..{len(self.classes) - 1}",
                                                   f"{int(y.min())}..{int(y.max())}"))
            self._features[split] = arrays
            self._labels[split] = y
        if fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            for split in self.splits:
                h.update(split.encode())
                for a in self._features[split]:
                    h.update(np.ascontiguousarray(a).tobytes())
                h.update(self._labels[split].tobytes())
            fingerprint = h.hexdigest()
        self.fingerprint = fingerprint

    def features(self, split: str, tap_index: int) -> np.ndarray:
        self._check_split(split)
        return self._features[split][self.taps.tap(tap_index).index - 1]

    def labels(self, split: str) -> np.ndarray:
        self._check_split(split)
        return self._labels[split]

    def _check_split(self, split: str) -> None:
        if split not in self._features:
            raise ParameterError(param_message("split", f"one of {list(self.splits)}", split))
