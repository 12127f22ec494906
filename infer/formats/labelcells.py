"""What a label cell of a data file means, for every reader (CSV cells, Parquet/Arrow values).

A cell's text is trimmed of surrounding ASCII spaces and tabs and must not be empty.

- Without classes (training discovers them): a cell of decimal digits is an integer label (at
  most MAX_LABEL_DIGITS digits once leading zeros are dropped); any other text is a name. A
  chunk's labels are int64 when every cell is an integer, else an object array of str (its
  integers written without leading zeros, so `007` and `7` are one label in any chunk).
- With a model's classes: the class index of a cell (`common.labels.label_indices`: a class
  name, else its index 0..K-1 written as a number); anything else is an error.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..common.labels import label_indices

MAX_LABEL_DIGITS = 18  # an integer label fits int64
Classes = tuple[str, ...] | None


def show_classes(classes: tuple[str, ...]) -> str:
    """`bag, shirt, shoe`, or the first five and the last of a long list."""
    if len(classes) <= 8:
        return ", ".join(classes)
    return ", ".join(classes[:5]) + ", ..., " + classes[-1]


def not_a_class(text: str, classes: tuple[str, ...]) -> str:
    shown = text if len(text) <= 40 else text[:40] + "..."
    return (
        f"label {shown!r} is not one of the model's {len(classes)} classes "
        f"({show_classes(classes)})"
    )


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _lookup(text: str) -> str:
    """The text label_indices is given: a long number without its leading zeros (int() of
    thousands of digits would raise; such a number is no index anyway)."""
    return text.lstrip("0") or "0" if len(text) > MAX_LABEL_DIGITS and _digits(text) else text


def label_problem(cell: str, classes: Classes) -> str | None:
    """Why one label cell (unquoted) is not a label, or None."""
    text = cell.strip(" \t")
    if not text:
        return "empty label value"
    digits = text.lstrip("0")
    long = _digits(text) and len(digits) > MAX_LABEL_DIGITS
    if long and (classes is None or text not in classes):
        return f"label of {len(digits)} digits: an integer label has at most {MAX_LABEL_DIGITS}"
    if classes is not None and label_indices(np.array([_lookup(text)]), classes)[1] == 0:
        return not_a_class(text, classes)
    return None


def names_agree(classes: tuple[str, ...]) -> bool:
    """Whether every class named by a number is named by its own index: then an integer cell v
    is class v (v < K) or no class, so integers need no lookup by name."""
    return all(name == str(i) for i, name in enumerate(classes) if _digits(name))


def integer_labels(values: np.ndarray, classes: Classes) -> tuple[np.ndarray, int | None, str]:
    """(int64 labels, first bad position or None, why) of integer label values."""
    if values.size == 0:
        return values.astype(np.int64), None, ""
    top = np.iinfo(np.int64).max if classes is None else len(classes) - 1
    if classes is None or names_agree(classes):
        low = values.min() if values.dtype.kind == "i" else 0
        if low < 0 or values.max() > top:
            at = int(np.flatnonzero((values < 0) | (values > top))[0])
            why = (
                not_a_class(str(values[at]), classes)
                if classes is not None
                else f"label {values[at]} is not an integer label 0, 1, 2, ... (nor a name)"
            )
            return values.astype(np.int64), at, why
        return values.astype(np.int64), None, ""
    indices, first = label_indices(values, classes)
    if first < len(values):
        return indices, first, not_a_class(str(values[first]), classes)
    return indices, None, ""


def text_labels(arr: pa.Array, classes: Classes) -> tuple[np.ndarray, int | None, str]:
    """(labels, first bad position or None, why) of a string array of label cells."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    text = pc.utf8_trim(arr, characters=" \t")
    n = len(text)
    empty = np.flatnonzero(pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False))
    digits = pc.match_substring_regex(text, "^[0-9]+$")
    canon = pc.if_else(digits, pc.replace_substring_regex(text, "^0+([0-9])", r"\1"), text)
    long = pc.and_(digits, pc.greater(pc.utf8_length(canon), MAX_LABEL_DIGITS))
    if classes is not None:  # a long number may still be a class's name
        long = pc.and_(long, pc.invert(pc.is_in(text, pa.array(classes, pa.string()))))
    too_long = np.flatnonzero(long.to_numpy(zero_copy_only=False))
    first = min([int(a[0]) for a in (empty, too_long) if a.size], default=n)
    values = text.to_numpy(zero_copy_only=False)  # (n,) object array of str
    if classes is not None:
        shortened = pc.if_else(pc.greater(pc.utf8_length(text), MAX_LABEL_DIGITS), canon, text)
        lookup = pc.if_else(digits, shortened, text).to_numpy(zero_copy_only=False)
        indices, at = label_indices(lookup[:first], classes)
        if at < first:
            return indices, at, not_a_class(values[at], classes)
        if first < n:
            return indices, first, label_problem(values[first], classes) or ""
        return indices, None, ""
    if first < n:
        return values, first, label_problem(values[first], classes) or ""
    if pc.all(digits).as_py() is not False:  # every cell an integer (or no cells)
        return canon.cast(pa.int64()).to_numpy(zero_copy_only=False), None, ""
    return canon.to_numpy(zero_copy_only=False), None, ""
