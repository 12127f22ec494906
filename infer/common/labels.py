"""Class labels as files hold them (integers 0..K-1 or any text) <-> class indices.

The one place that maps label values to classes: which classes a training file has, and which
of a model's classes a label names (fcls-eval). How a cell's text becomes a value is the
readers' (formats/labelcells.py).
"""

from __future__ import annotations

import numpy as np

from .spec import SpecError, number_names

_INT = np.vectorize(lambda s: s.isascii() and s.isdigit(), otypes=[bool])


def classes_of(labels: np.ndarray) -> tuple[tuple[str, ...], bool]:
    """(class names, integer?) of a training file's labels (any array, shown as text).

    Integer labels (every label a decimal number) define classes 0..K-1, K = the largest + 1,
    and every one of them must have rows; any other labels are names, in sorted order."""
    distinct = np.unique(np.asarray(labels).astype(str))
    if distinct.size and _INT(distinct).all():
        values = sorted({int(v) for v in distinct})
        k = values[-1] + 1
        absent = sorted(set(range(k)) - set(values))
        if absent:
            shown = ", ".join(map(str, absent[:5])) + (" ..." if len(absent) > 5 else "")
            raise SpecError(
                f"integer labels must be 0..K-1: labels run to {k - 1}, but no row has "
                f"label {shown}"
            )
        if k < 2:
            raise SpecError(f"every row has label {values[0]}: a classifier needs 2 classes")
        return number_names(k), True
    names = tuple(str(v) for v in distinct)
    if len(names) < 2:
        raise SpecError(f"every row has label {names[0] if names else '?'!r}: need 2 classes")
    return names, False


def label_indices(labels: np.ndarray, class_names: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """(n,) int64 class indices of `labels` and the position of the first label that is not one
    of the classes (or n): a class's name, else its index 0..K-1 written as a number."""
    text = np.asarray(labels).astype(str)
    out = np.full(text.shape, -1, np.int64)
    if text.size == 0:
        return out, 0
    distinct, inverse = np.unique(text, return_inverse=True)
    by_name = {name: i for i, name in enumerate(class_names)}
    k = len(class_names)
    mapped = np.array([_index(v, by_name, k) for v in distinct.tolist()], np.int64)
    out = mapped[inverse.reshape(-1)]
    bad = np.flatnonzero(out < 0)
    return out, int(bad[0]) if bad.size else int(out.size)


def _index(value: str, by_name: dict[str, int], k: int) -> int:
    if value in by_name:
        return by_name[value]
    if value.isascii() and value.isdigit() and int(value) < k:
        return int(value)
    return -1


__all__ = ["classes_of", "label_indices"]
