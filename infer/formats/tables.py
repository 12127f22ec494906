"""Streaming, validated reader for fcls data in Parquet and Arrow IPC files (torch-free).

Accepted schemas (extra columns are ignored: a columnar file is read column by column):

- `ID` + `pix1..pixP` (unlabelled) or `pix1..pixP` + `label` (labelled), the pixel columns
  named and numbered as `columns.resolve` says (`pixelN`, from 0 or 1, any order): each of
  any integer type, every value in 0..255, no nulls;
- `ID` + one `pixels` column (unlabelled) or `pixels` + `label` (labelled), `pixels` being
  fixed_size_list<integer>[P], list<integer> of length P per row, or P-byte binary /
  fixed_size_binary(P) (one byte per pixel).

P is the reader's `pixels` (a model's), or the file's own when None: its number of pixel
columns, its fixed size, or else the first row's length, which every row must then have.

`ID` (or `id`) is an integer or string column (dictionary-encoded strings are decoded) without
nulls and keeps its Arrow type; `label` is an integer or string column without nulls, read as
`labelcells` says (raw labels, or a model's class indices when `classes` are given).

Rows are counted from 1 (the first data row is row 1, whatever the row groups or batches), and
every error names the file, the row and the column: `x.parquet row 17 column pix3: ...`. Of
several bad values the error names the first bad row and, in it, the first bad column in the
file's order, whatever the batch size.
Schema errors (a missing column, a float pixel column) name the column only.

Memory: Parquet is read with `ParquetFile.iter_batches` (at most `batch_rows` rows per chunk,
pages streamed through a READ_BUFFER, so even a file of one huge row group is never held
whole); IPC files are memory-mapped and their record batches sliced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..common.errors import DataError
from ..common.output import output_errors
from ..common.spec import Kind
from .chunk import Chunk
from .columns import Expected, expected_count, resolve
from .labelcells import Classes, integer_labels, text_labels

PARQUET_SUFFIXES = (".parquet", ".pq")
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")
TABLE_SUFFIXES = PARQUET_SUFFIXES + IPC_SUFFIXES
DEFAULT_BATCH_ROWS = 4096  # 4 MiB of pixels per chunk at 32x32
READ_BUFFER = 1 << 20  # bytes of a Parquet column chunk read at a time
Format = Literal["csv", "parquet", "ipc"]


def table_format(path: str | Path) -> Format:
    """The input format a path names by its extension: parquet, ipc, or csv (anything else)."""
    suffix = Path(str(path)).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in IPC_SUFFIXES:
        return "ipc"
    return "csv"


def row_error(name: str, row: int, message: str, column: str | None = None) -> DataError:
    """A DataError located at a 1-based data row: `NAME row ROW column COL: MESSAGE`."""
    return DataError(f"{name} row {row}", message, None, column)


def _is_id_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


@dataclass(frozen=True)
class Layout:
    """Which columns of a schema hold the rows, and in which form the pixels are."""

    kind: Kind
    pixels: Literal["columns", "list", "binary"]
    columns: tuple[str, ...]  # the columns to read: the key (ID or label), then the pixels
    file_order: tuple[str, ...] = ()  # the same columns in the file's order (errors name the first)
    n_pixels: int | None = None  # pixels per row; None: the first row's (variable-size lists)

    @property
    def has_ids(self) -> bool:
        return self.kind == "unlabelled"

    @property
    def key(self) -> str:
        """The ID column (`ID` or `id`) or the label column."""
        return self.columns[0]


def plan_layout(schema: pa.Schema, kind: Kind, name: str, pixels: Expected = None) -> Layout:
    """Check a schema against the accepted forms (before any row is read)."""
    names = list(schema.names)
    cols = resolve(names, kind, name, pixels, others=True)
    want = expected_count(pixels)[0]
    form: Literal["columns", "list", "binary"]
    n: int | None
    if cols.packed:  # the pixel columns are checked first, then the ID or label
        form, n = _pixels_form(schema.field("pixels").type, name, want)
        columns: tuple[str, ...] = (cols.key, "pixels")
    else:
        for col in cols.pixel_names:
            t = schema.field(col).type
            if not pa.types.is_integer(t):
                raise DataError(name, f"type {t}: pixels must be integers 0..255", None, col)
        form, n = "columns", cols.n_pixels
        columns = (cols.key, *cols.pixel_names)
    _check_key_column(schema, kind, name, cols.key)
    used = set(columns)
    return Layout(kind, form, columns, tuple(c for c in names if c in used), n)


def _pixels_form(
    t: pa.DataType, name: str, want: int | None
) -> tuple[Literal["list", "binary"], int | None]:
    """The form of a single `pixels` column (P-byte binary, or a list of P integers) and P
    when the type fixes it (else `want`, None for the first row's)."""

    def refuse(message: str) -> DataError:
        return DataError(name, message, None, "pixels")

    if (pa.types.is_fixed_size_binary(t) and t.byte_width < 1) or (
        pa.types.is_fixed_size_list(t) and t.list_size < 1
    ):
        raise refuse(f"type {t}: a row needs at least one pixel")
    if pa.types.is_fixed_size_binary(t):
        if want is not None and t.byte_width != want:
            raise refuse(f"fixed_size_binary({t.byte_width}): expected {want} bytes")
        return "binary", t.byte_width
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary", want
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        if pa.types.is_fixed_size_list(t) and want is not None and t.list_size != want:
            raise refuse(f"fixed-size list of {t.list_size}: expected {want} values")
        if not pa.types.is_integer(t.value_type):
            raise refuse(f"list of {t.value_type}: pixels must be integers 0..255")
        return "list", t.list_size if pa.types.is_fixed_size_list(t) else want
    size = "P" if want is None else str(want)
    raise refuse(f"type {t}: expected a list of {size} integers or {size}-byte binary")


def _check_key_column(schema: pa.Schema, kind: Kind, name: str, key: str) -> None:
    """The ID column of an unlabelled file (integers or strings) or the label column of a
    labelled one (integers or strings)."""
    t = schema.field(key).type
    value = t.value_type if pa.types.is_dictionary(t) else t
    if kind == "unlabelled":
        if not _is_id_type(value):
            raise DataError(name, f"type {t}: IDs must be integers or strings", None, key)
    elif not (pa.types.is_integer(t) or _is_text(value)):
        raise DataError(name, f"type {t}: labels must be integers or strings", None, key)


def _first_null(arr: pa.Array) -> int:
    return int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])


@dataclass(frozen=True)
class _Fault:
    """The first bad value of one column in a batch: its row (from 0) and what is wrong."""

    at: int
    column: str
    message: str


def _out_of_range(values: np.ndarray, hi: int) -> int | None:
    """The index of the first value outside 0..hi, or None."""
    if values.size == 0:
        return None
    low = values.min() if values.dtype.kind == "i" else 0
    if low >= 0 and values.max() <= hi:
        return None
    return int(np.flatnonzero((values < 0) | (values > hi))[0])


def _int_values(arr: pa.Array) -> np.ndarray:
    """A null-free integer array as numpy (zero-copy)."""
    return arr.to_numpy(zero_copy_only=False)


def _int_column(
    arr: pa.Array, hi: int, column: str, what: str
) -> tuple[np.ndarray | None, _Fault | None]:
    """An integer column's values in 0..hi, or its first null or out-of-range value."""
    # the rows before the first null are the only ones whose range can name an earlier row
    end = _first_null(arr) if arr.null_count else len(arr)
    if arr.type == pa.uint8() and hi >= 255:
        values = np.frombuffer(arr.buffers()[1], np.uint8, end, arr.offset)
    else:
        values = _int_values(arr.slice(0, end))
        at = _out_of_range(values, hi)
        if at is not None:
            return None, _Fault(at, column, f"{what} {values[at]} is out of range 0..{hi}")
    if end < len(arr):
        return None, _Fault(end, column, f"null {what} value")
    return values, None


def _columns_pixels(
    batch: pa.RecordBatch, names: tuple[str, ...], faults: list[_Fault]
) -> np.ndarray | None:
    """(n, P) uint8 from the P integer pixel columns `names` (in pixel order), range-checked."""
    out = np.empty((batch.num_rows, len(names)), np.uint8)
    for j, col in enumerate(names):
        values, fault = _int_column(batch.column(col), 255, col, "pixel")
        if fault is not None:
            faults.append(fault)
        elif not faults:
            out[:, j] = values
    return None if faults else out


def _bad_length(lengths: pa.Array, n: int, p: int) -> int:
    """The index of the first length other than p (nulls count as bad), or n; with p < 1 (no
    size) every row is bad."""
    if p < 1:
        return 0
    bad = np.flatnonzero(lengths.fill_null(-1).to_numpy(zero_copy_only=False) != p)
    return int(bad[0]) if bad.size else n


def _row_size(lengths: pa.Array, p: int | None) -> int:
    """P: the expected size, else the first row's (0 when it is null or empty: then no row
    fits, and the first row is the fault)."""
    if p is not None:
        return p
    first = lengths[0].as_py() if len(lengths) else None
    return first or 0


def _length_fault(at: int, length: int | None, p: int, unit: str) -> _Fault:
    if length is None:
        return _Fault(at, "pixels", "null pixels value")
    if p < 1:
        return _Fault(at, "pixels", "empty pixels value (no pixels)")
    return _Fault(at, "pixels", f"{length} {unit}, expected {p}")


def _binary_pixels(arr: pa.Array, p: int | None, faults: list[_Fault]) -> np.ndarray | None:
    """(n, P) uint8 from a binary column of P-byte values (one byte per pixel)."""
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type):
        p = arr.type.byte_width
        if arr.null_count:
            faults.append(_Fault(_first_null(arr), "pixels", "null pixels value"))
            return None
        data = np.frombuffer(arr.buffers()[1], np.uint8, n * p, arr.offset * p)
        return data.reshape(n, p)
    lengths = pc.binary_length(arr)
    p = _row_size(lengths, p)
    at = _bad_length(lengths, n, p)
    if at < n:
        faults.append(_length_fault(at, lengths[at].as_py(), p, "bytes"))
        return None
    offset_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = arr.buffers()[1]  # np.frombuffer's offset counts bytes, not elements
    start = (
        int(np.frombuffer(offsets, offset_type, 1, arr.offset * offset_type().itemsize)[0])
        if n
        else 0
    )
    data = np.frombuffer(arr.buffers()[2], np.uint8, n * p, start) if n else np.empty(0, np.uint8)
    return data.reshape(n, p)


def _list_pixels(arr: pa.Array, p: int | None, faults: list[_Fault]) -> np.ndarray | None:
    """(n, P) uint8 from a (fixed-size) list column of integers, length- and range-checked."""
    n = len(arr)
    lengths = pc.list_value_length(arr)  # null for a null list
    p = _row_size(lengths, p)
    end = _bad_length(lengths, n, p)
    fault = None
    if end < n:
        fault = _length_fault(end, lengths[end].as_py(), p, "values")
        if fault.message[0].isdigit():
            fault = _Fault(end, "pixels", "list of " + fault.message)
    # the rows before `end` hold P values each: a bad value there is an earlier fault
    flat = arr.slice(0, end).flatten()
    null_at = _first_null(flat) if flat.null_count else len(flat)
    values = _int_values(flat.slice(0, null_at))
    range_at = None if values.dtype == np.uint8 else _out_of_range(values, 255)
    if range_at is not None:
        fault = _Fault(
            range_at // p,
            "pixels",
            f"pixel {values[range_at]} is out of range 0..255 (value {range_at % p + 1} of the row)",
        )
    elif null_at < len(flat):
        fault = _Fault(null_at // p, "pixels", f"null pixel (value {null_at % p + 1} of the row)")
    if fault is not None:
        faults.append(fault)
        return None
    return values.astype(np.uint8, copy=False).reshape(n, p)


def _ids(arr: pa.Array, column: str, faults: list[_Fault]) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.null_count:
        faults.append(_Fault(_first_null(arr), column, "null ID value"))
    return arr


def _labels(arr: pa.Array, classes: Classes, faults: list[_Fault]) -> np.ndarray | None:
    """The label column's values (`labelcells`): its first null or bad value is a fault."""
    end = _first_null(arr) if arr.null_count else len(arr)
    head = arr.slice(0, end)
    if pa.types.is_integer(arr.type):
        labels, at, why = integer_labels(_int_values(head), classes)
    else:
        labels, at, why = text_labels(head, classes)
    if at is not None:
        faults.append(_Fault(at, "label", why))
    elif end < len(arr):
        faults.append(_Fault(end, "label", "null label value"))
    else:
        return labels
    return None


def batch_chunk(
    batch: pa.RecordBatch, layout: Layout, name: str, first_row: int, classes: Classes = None
) -> Chunk:
    """Validate one record batch (its first row is data row `first_row`) into a Chunk.

    A bad batch is refused at its first bad row and, in that row, the first bad column in the
    file's order: every column is checked before choosing, so that the error does not depend
    on the batch size or on the order in which columns are read."""
    faults: list[_Fault] = []
    pixels: np.ndarray | None
    if layout.pixels == "columns":
        pixels = _columns_pixels(batch, layout.columns[1:], faults)
    elif layout.pixels == "binary":
        pixels = _binary_pixels(batch.column("pixels"), layout.n_pixels, faults)
    else:
        pixels = _list_pixels(batch.column("pixels"), layout.n_pixels, faults)
    ids = labels = None
    if layout.kind == "unlabelled":
        ids = _ids(batch.column(layout.key), layout.key, faults)
    else:
        labels = _labels(batch.column(layout.key), classes, faults)
    if faults:
        first = min(faults, key=lambda f: (f.at, layout.file_order.index(f.column)))
        raise row_error(name, first_row + first.at, first.message, first.column)
    assert pixels is not None
    return Chunk(pixels=pixels, ids=ids, labels=labels, start=first_row)


def _open_failure(name: str, e: BaseException, what: str) -> DataError:
    if isinstance(e, FileNotFoundError):
        return DataError(name, "no such file")
    if isinstance(e, IsADirectoryError):
        return DataError(name, f"is a directory, not {what}")
    if isinstance(e, PermissionError):
        return DataError(name, "cannot open: permission denied")
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return DataError(name, f"not {what}, or truncated/corrupt ({detail})")


def table_schema(path: str | Path) -> pa.Schema:
    """The Arrow schema of a Parquet or IPC file (reads the footer / first message only)."""
    name = str(path)
    fmt = table_format(path)
    if fmt == "parquet":
        try:
            return pq.read_schema(path)
        except (OSError, pa.ArrowException) as e:
            raise _open_failure(name, e, "a Parquet file") from None
    with _IpcSource(name) as source:
        return source.schema


class _IpcSource:
    """An Arrow IPC file (random access) or stream, memory-mapped."""

    def __init__(self, name: str) -> None:
        self.name = name
        try:
            self.mmap = pa.memory_map(name)
        except (OSError, pa.ArrowException) as e:
            raise _open_failure(name, e, "an Arrow IPC file") from None
        self.file: Any = None
        self.stream: Any = None
        try:
            try:
                self.file = ipc.open_file(self.mmap)
                self.schema: pa.Schema = self.file.schema
            except pa.ArrowInvalid:
                self.mmap.seek(0)
                self.stream = ipc.open_stream(self.mmap)
                self.schema = self.stream.schema
        except (OSError, pa.ArrowException) as e:
            self.mmap.close()
            raise _open_failure(name, e, "an Arrow IPC file or stream") from None

    def __enter__(self) -> _IpcSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.mmap.close()

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self.file is not None:
            for i in range(self.file.num_record_batches):
                yield self.file.get_batch(i)
        else:
            yield from self.stream


class TableReader:
    """Iterate over `Chunk`s of a Parquet or Arrow IPC file in bounded memory.

    `pixels`: the pixels a row must have (a count or a model's spec), None for the file's own;
    `classes`: a model's class names (labels become class indices), None for raw labels."""

    def __init__(
        self,
        src: str | Path,
        kind: Kind = "unlabelled",
        batch_rows: int = DEFAULT_BATCH_ROWS,
        limit: int | None = None,
        name: str | None = None,
        row_groups: Sequence[int] | None = None,
        first_row: int = 1,
        *,
        pixels: Expected = None,
        classes: Classes = None,
    ) -> None:
        self.path, self.kind, self.batch_rows, self.limit = Path(src), kind, batch_rows, limit
        self.pixels, self.classes = pixels, classes
        self.name = name or str(src)
        self.format = table_format(src)
        self.row_groups = None if row_groups is None else list(row_groups)
        if self.row_groups is not None and self.format != "parquet":
            raise ValueError("row_groups applies to Parquet files only")
        self.first_row = first_row  # data row number of the first row read (row groups start later)
        self.header: list[str] = []

    def __iter__(self) -> Iterator[Chunk]:
        row, remaining = self.first_row, self.limit
        size = None  # the first row's pixels, which every later row must have
        for batch, layout in self._batches():
            if remaining is not None:
                if remaining <= 0:
                    return
                batch = batch.slice(0, remaining)
                remaining -= batch.num_rows
            if batch.num_rows == 0:
                continue
            if layout.n_pixels is None and size is not None:
                layout = replace(layout, n_pixels=size)
            chunk = batch_chunk(batch, layout, self.name, row, self.classes)
            size = chunk.pixels.shape[1]
            yield chunk
            row += batch.num_rows

    def _batches(self) -> Iterator[tuple[pa.RecordBatch, Layout]]:
        """Record batches of at most batch_rows rows; read failures become located DataErrors."""
        if self.format == "parquet":
            try:
                # pages streamed through a small buffer: without these two settings Arrow holds
                # a whole row group in memory, so memory would grow with the writer's choice
                pf = pq.ParquetFile(self.path, buffer_size=READ_BUFFER, pre_buffer=False)
            except (OSError, pa.ArrowException) as e:
                raise _open_failure(self.name, e, "a Parquet file") from None
            try:
                layout = self._layout(pf.schema_arrow)
                batches = pf.iter_batches(
                    batch_size=self.batch_rows,
                    row_groups=self.row_groups,
                    columns=list(layout.columns),
                )
                yield from self._guarded(batches, layout)
            finally:
                pf.close()
            return
        with _IpcSource(self.name) as source:
            layout = self._layout(source.schema)
            sliced = (
                b.slice(i, self.batch_rows)
                for b in source.batches()
                for i in range(0, b.num_rows, self.batch_rows)
            )
            yield from self._guarded(sliced, layout)

    def _layout(self, schema: pa.Schema) -> Layout:
        self.header = list(schema.names)
        return plan_layout(schema, self.kind, self.name, self.pixels)

    def _guarded(
        self, batches: Iterator[pa.RecordBatch], layout: Layout
    ) -> Iterator[tuple[pa.RecordBatch, Layout]]:
        row = self.first_row
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as e:
                detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise row_error(
                    self.name, row, f"unreadable data (truncated or corrupt: {detail})"
                ) from None
            yield batch.select(list(layout.columns)), layout
            row += batch.num_rows


class TableWriter:
    """Record batches into a Parquet file (row groups of about `group_rows` rows) or an Arrow IPC
    file, at `path` (a temp file staged by `fcls.infer.files`); OSErrors name `dest`."""

    def __init__(
        self,
        path: Path,
        dest: Path,
        schema: pa.Schema,
        compression: str | None = "zstd",
        group_rows: int = 0,
    ) -> None:
        self.dest, self.schema, self.group_rows = Path(dest), schema, group_rows
        self.format = table_format(dest)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._sink: Any = None
        with output_errors(self.dest):
            if self.format == "parquet":
                self._writer: Any = pq.ParquetWriter(
                    str(path), schema, compression=compression or "none"
                )
            else:  # uncompressed IPC stays memory-mappable: zero-copy reads
                self._sink = pa.OSFile(str(path), "wb")
                self._writer = ipc.new_file(self._sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        """Add rows; a row group (Parquet) or record batch (IPC) is written once enough are held."""
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, self.schema)
        self._pending, self._pending_rows = [], 0
        with output_errors(self.dest):
            if self.format == "parquet":
                self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
            else:
                for batch in table.combine_chunks().to_batches():
                    self._writer.write_batch(batch)

    def close(self) -> None:
        """Write what is held and the footer (a file with no rows still gets its schema)."""
        try:
            self._flush()
        finally:
            with output_errors(self.dest):
                self._writer.close()
                if self._sink is not None:
                    self._sink.close()

    def abort(self) -> None:
        """Close without caring about errors (the temp file is discarded by its owner)."""
        try:
            self._writer.close()
            if self._sink is not None:
                self._sink.close()
        except (OSError, pa.ArrowException):
            pass
