"""The CSV fast path: vectorised numpy over a block's bytes for the common row shape.

It either returns exactly the arrays the grammar (`csvgrammar`) defines or declines (None)
without judging the block, which then goes to pyarrow and the line-by-line diagnosis."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .chunk import Chunk
from .columns import Columns
from .csvgrammar import MAX_LINE_BYTES
from .labelcells import Classes, names_agree


@dataclass(frozen=True)
class _Layout:
    """Where the fast path finds each value in a row of `fields` fields."""

    fields: int  # fields per row: the header's
    id_first: bool  # unlabelled files: field 0 is the ID (the fast path needs it there)
    pixels: slice | np.ndarray  # fields of the pixels, in pixel order
    label: int | None  # field of the label (labelled files)
    label_limit: int | None  # labels must be below it (a model's K), None: any 0..999


def fast_layout(columns: Columns, classes: Classes = None) -> _Layout | None:
    """The fast path's layout for these columns, or None when it never applies (ID not first,
    or class names that are numbers other than their own index)."""
    if columns.label is None and columns.id != 0:
        return None
    if classes is not None and not names_agree(classes):
        return None
    cols = np.array(columns.pixels)
    first, n = int(cols[0]), len(cols)
    in_order = bool((cols == np.arange(first, first + n)).all())
    pixels: slice | np.ndarray = slice(first, first + n) if in_order else cols
    limit = None if classes is None else len(classes)
    return _Layout(len(columns.names), columns.id == 0, pixels, columns.label, limit)


class Scratch(threading.local):
    """Per-thread work arrays of `fast_block`, kept between blocks.

    A block needs eight byte-sized temporaries; allocating them afresh made the kernel
    fault in fresh pages for every block, far more so when two threads parse, so each
    thread reuses its own (figures: bench/README.md).
    """

    def __init__(self) -> None:
        self.flags = np.empty((0, 0), bool)  # (4, capacity) bool
        self.bytes = np.empty((0, 0), np.uint8)  # (4, capacity) uint8

    def get(self, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Four bool and four uint8 arrays of `size` elements (contents undefined)."""
        if self.flags.shape[1] < size:
            capacity = max(size, self.flags.shape[1] * 5 // 4)
            self.flags = np.empty((4, capacity), bool)
            self.bytes = np.empty((4, capacity), np.uint8)
        return [f[:size] for f in self.flags], [b[:size] for b in self.bytes]


def fast_block(buf: bytes, layout: _Layout, line: int, scratch: Scratch) -> Chunk | None:
    """Rows of `buf` by vectorised numpy, or None to leave the block to pyarrow.

    Takes only blocks in which every row has exactly the header's fields separated by "," with
    no quotes, every pixel (and label) cell is 1-3 ASCII digits (a label below the model's
    number of classes, when given), no line is empty or longer than
    MAX_LINE_BYTES, and a "\\r" appears only in CRLF; IDs may hold any UTF-8 text except '"'
    and NUL. On such blocks the grammar's result is fixed by the digits alone, so this returns
    exactly what the pyarrow path would; anything else returns None, never an error.
    """
    if b"\r" in buf:
        if buf.count(b"\r") != buf.count(b"\r\n"):
            return None
        buf = buf.replace(b"\r\n", b"\n")
    if not buf.endswith(b"\n"):
        buf += b"\n"  # the file's last line
    a = np.frombuffer(buf, np.uint8)  # (bytes,) uint8
    if a.size < 4:  # a row of two fields and its "\n" at least
        return None
    (sep, digit, odd, tmp), (d, dz, low, high) = scratch.get(a.size)
    n = int(np.count_nonzero(np.equal(a, 10, out=tmp)))  # lines ("\n")
    np.logical_or(np.equal(a, 44, out=sep), tmp, out=sep)  # "," or "\n"
    fields = layout.fields
    flat = np.flatnonzero(sep)  # every field's end, (n * fields,) int64 when the rows are right
    if flat.size != n * fields or a[0] == 44:
        return None
    ends = flat.reshape(n, fields)
    if not (a[ends[:, -1]] == 10).all():  # with n line breaks, each row ends at its own
        return None
    starts = np.empty(n, np.int64)  # (n,) offset of each line
    starts[0] = 0
    starts[1:] = ends[:-1, -1] + 1
    if (ends[:, -1] - starts >= MAX_LINE_BYTES).any():
        return None
    if np.logical_and(sep[1:], sep[:-1], out=tmp[1:]).any():
        return None  # an empty field or an empty line
    np.subtract(a, 48, out=d)  # digits become 0..9, every other byte >= 10 (uint8 wraps)
    np.less(d, 10, out=digit)
    if not _odd_bytes_in_ids(digit, sep, odd, tmp, starts, ends, layout.id_first):
        return None
    values = _field_values(d, digit, dz, low, high, ends)
    pixels = values[:, layout.pixels]
    if pixels.max(initial=0) > 255:
        return None
    labels = ids = None
    if layout.label is not None:
        labels = values[:, layout.label].astype(np.int64)
        if layout.label_limit is not None and labels.max(initial=0) >= layout.label_limit:
            return None
    if layout.id_first:
        ids = _gather_ids(a, starts, ends[:, 0])
        if ids is None:
            return None
    return Chunk(pixels=pixels.astype(np.uint8), ids=ids, labels=labels, start=line)


def _odd_bytes_in_ids(
    digit: np.ndarray,
    sep: np.ndarray,
    odd: np.ndarray,
    tmp: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    id_first: bool,
) -> bool:
    """Whether every byte that is neither a digit nor a separator, and every 4th digit of a
    run, lies in an ID cell (one search finds both); uses `odd` and `tmp` as scratch."""
    np.logical_not(np.logical_or(digit, sep, out=odd), out=odd)
    run = np.logical_and(digit[3:], digit[2:-1], out=tmp[3:])
    np.logical_and(run, digit[1:-2], out=run)
    np.logical_and(run, digit[:-3], out=run)
    np.logical_or(odd[3:], run, out=odd[3:])
    pos = np.flatnonzero(odd)
    if pos.size:
        if not id_first:
            return False
        row = np.searchsorted(starts, pos, "right") - 1
        if (pos >= ends[row, 0]).any():  # past the row's ID
            return False
    return True


def _field_values(
    d: np.ndarray,
    digit: np.ndarray,
    dz: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    ends: np.ndarray,
) -> np.ndarray:
    """(n, fields) uint16: each field's value from the (up to three) digits before its end."""
    np.multiply(d, digit, out=dz)  # (bytes,) uint8, 0 on separators
    # At a field's end e: tens and ones (<= 99) and the hundreds digit, which counts only
    # when a tens digit sits between (else dz[e - 3] belongs to the previous field).
    np.multiply(dz[1:-2], 10, out=low[3:])
    np.add(low[3:], dz[2:-1], out=low[3:])
    low[1], low[2] = dz[0], 10 * dz[0] + dz[1]  # a block has 4 bytes at least
    np.multiply(dz[:-3], digit[1:-2], out=high[3:])
    high[:3] = 0
    fields = np.take(high, ends).astype(np.uint16)  # np.take: cheaper than high[ends]
    fields *= 100
    fields += np.take(low, ends)
    return fields


def _gather_ids(a: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array | None:
    """The ID cells a[starts[i]:ends[i]] as one string array; None if one is not plain UTF-8."""
    lengths = ends - starts
    offsets = np.zeros(len(starts) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    text = a[np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])]  # uint8
    if (text == 34).any() or (text == 0).any():  # a quote, or NUL: the slow path decides
        return None
    ids = pa.StringArray.from_buffers(len(starts), pa.py_buffer(offsets), pa.py_buffer(text))
    if (text >= 0x80).any():
        try:
            ids.validate(full=True)
        except pa.ArrowInvalid:
            return None
    return ids
