"""Streaming, validated reader for fcls data in Parquet and Arrow IPC files (torch-free).

Accepted schemas (extra columns are ignored: a columnar file is read column by column):

- `ID` + `pix1..pix1024` (unlabelled) or `pix1..pix1024` + `label` (labelled): each pixel column of any
  integer type, every value in 0..255, no nulls;
- `ID` + one `pixels` column (unlabelled) or `pixels` + `label` (labelled), `pixels` being
  fixed_size_list<integer>[1024], list<integer> of length 1024 per row, or 1024-byte
  binary / fixed_size_binary(1024) (one byte per pixel).

`ID` is an integer or string column (dictionary-encoded strings are decoded) without nulls and
keeps its Arrow type; `label` is an integer column in 0..9 without nulls.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..common.errors import DataError
from ..common.output import output_errors
from ..common.spec import N_CLASSES, N_PIXELS, PIXEL_COLUMNS, Kind
from .chunk import Chunk

PARQUET_SUFFIXES = (".parquet", ".pq")
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")
TABLE_SUFFIXES = PARQUET_SUFFIXES + IPC_SUFFIXES
DEFAULT_BATCH_ROWS = 4096  # (4096, 1024) uint8 = 4 MiB of pixels per chunk
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


@dataclass(frozen=True)
class Layout:
    """Which columns of a schema hold the rows, and in which form the pixels are."""

    kind: Kind
    pixels: Literal["columns", "list", "binary"]
    columns: tuple[str, ...]  # the columns to read, in the order they are used
    file_order: tuple[str, ...] = ()  # the same columns in the file's order (errors name the first)

    @property
    def has_ids(self) -> bool:
        return self.kind == "unlabelled"


def detect_kind(names: Sequence[str]) -> Kind:
    """unlabelled when the schema has `ID`, labelled when it has `label` (and no `ID`)."""
    return "labelled" if "label" in names and "ID" not in names else "unlabelled"


def plan_layout(schema: pa.Schema, kind: Kind, name: str) -> Layout:
    """Check a schema against the accepted forms (before any row is read)."""
    names = list(schema.names)
    seen: set[str] = set()
    for col in names:
        if col in seen:
            raise DataError(name, f"duplicate column {col!r}", None, col)
        seen.add(col)
    head = ",".join(names[:3]) + ("..." if len(names) > 3 else "")
    if kind == "unlabelled" and "ID" not in seen:
        raise DataError(name, f"missing ID column (columns: {head})")
    if kind == "labelled" and "label" not in seen:
        raise DataError(name, f"missing label column (columns: {head})")
    has_pix = [c for c in PIXEL_COLUMNS if c in seen]
    if "pixels" in seen and has_pix:
        raise DataError(name, "both a pixels column and pix1..pix1024 columns: keep one form")
    form: Literal["columns", "list", "binary"]
    if "pixels" in seen:  # the pixel columns are checked first, then the ID or label
        form = _pixels_form(schema.field("pixels").type, name)
        columns: tuple[str, ...] = (_check_key_column(schema, kind, name), "pixels")
    else:
        _check_pixel_columns(schema, seen, name)
        form = "columns"
        columns = (_check_key_column(schema, kind, name), *PIXEL_COLUMNS)
    used = set(columns)
    return Layout(kind, form, columns, tuple(c for c in names if c in used))


def _pixels_form(t: pa.DataType, name: str) -> Literal["list", "binary"]:
    """The form of a single `pixels` column: 1024-byte binary, or a list of 1024 integers."""

    def refuse(message: str) -> DataError:
        return DataError(name, message, None, "pixels")

    if pa.types.is_fixed_size_binary(t):
        if t.byte_width != N_PIXELS:
            raise refuse(f"fixed_size_binary({t.byte_width}): expected {N_PIXELS} bytes")
        return "binary"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        if pa.types.is_fixed_size_list(t) and t.list_size != N_PIXELS:
            raise refuse(f"fixed-size list of {t.list_size}: expected {N_PIXELS} values")
        if not pa.types.is_integer(t.value_type):
            raise refuse(f"list of {t.value_type}: pixels must be integers 0..255")
        return "list"
    raise refuse(f"type {t}: expected a list of {N_PIXELS} integers or {N_PIXELS}-byte binary")


def _check_pixel_columns(schema: pa.Schema, seen: set[str], name: str) -> None:
    """pix1..pix1024 all present, each of an integer type."""
    missing = [c for c in PIXEL_COLUMNS if c not in seen]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            name,
            f"{N_PIXELS - len(missing)} of {N_PIXELS} pixel columns (missing {shown}); "
            "expected pix1..pix1024 or one pixels column",
        )
    for col in PIXEL_COLUMNS:
        t = schema.field(col).type
        if not pa.types.is_integer(t):
            raise DataError(name, f"type {t}: pixels must be integers 0..255", None, col)


def _check_key_column(schema: pa.Schema, kind: Kind, name: str) -> str:
    """The ID column of an unlabelled file (integers or strings) or the label column of a
    labelled one (integers); returns its name."""
    if kind == "unlabelled":
        t = schema.field("ID").type
        value = t.value_type if pa.types.is_dictionary(t) else t
        if not _is_id_type(value):
            raise DataError(name, f"type {t}: IDs must be integers or strings", None, "ID")
        return "ID"
    t = schema.field("label").type
    if not pa.types.is_integer(t):
        raise DataError(name, f"type {t}: labels must be integers 0..9", None, "label")
    return "label"


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


def _columns_pixels(batch: pa.RecordBatch, faults: list[_Fault]) -> np.ndarray | None:
    """(n, 1024) uint8 from pix1..pix1024 integer columns, range-checked."""
    out = np.empty((batch.num_rows, N_PIXELS), np.uint8)
    for j, col in enumerate(PIXEL_COLUMNS):
        values, fault = _int_column(batch.column(col), 255, col, "pixel")
        if fault is not None:
            faults.append(fault)
        elif not faults:
            out[:, j] = values
    return None if faults else out


def _bad_length(lengths: pa.Array, n: int) -> int:
    """The index of the first length other than 1024 (nulls count as bad), or n."""
    bad = np.flatnonzero(lengths.fill_null(-1).to_numpy(zero_copy_only=False) != N_PIXELS)
    return int(bad[0]) if bad.size else n


def _binary_pixels(arr: pa.Array, faults: list[_Fault]) -> np.ndarray | None:
    """(n, 1024) uint8 from a binary column of 1024-byte values (one byte per pixel)."""
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type):
        if arr.null_count:
            faults.append(_Fault(_first_null(arr), "pixels", "null pixels value"))
            return None
        data = np.frombuffer(arr.buffers()[1], np.uint8, n * N_PIXELS, arr.offset * N_PIXELS)
        return data.reshape(n, N_PIXELS)
    lengths = pc.binary_length(arr)
    at = _bad_length(lengths, n)
    if at < n:
        message = (
            "null pixels value"
            if not arr[at].is_valid
            else f"{lengths[at].as_py()} bytes, expected {N_PIXELS}"
        )
        faults.append(_Fault(at, "pixels", message))
        return None
    offset_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = arr.buffers()[1]  # np.frombuffer's offset counts bytes, not elements
    start = (
        int(np.frombuffer(offsets, offset_type, 1, arr.offset * offset_type().itemsize)[0])
        if n
        else 0
    )
    data = (
        np.frombuffer(arr.buffers()[2], np.uint8, n * N_PIXELS, start)
        if n
        else np.empty(0, np.uint8)
    )
    return data.reshape(n, N_PIXELS)


def _list_pixels(arr: pa.Array, faults: list[_Fault]) -> np.ndarray | None:
    """(n, 1024) uint8 from a (fixed-size) list column of integers, length- and range-checked."""
    n = len(arr)
    lengths = pc.list_value_length(arr)  # null for a null list
    end = _bad_length(lengths, n)
    fault = None
    if end < n:
        length = lengths[end].as_py()
        message = (
            "null pixels value"
            if length is None
            else f"list of {length} values, expected {N_PIXELS}"
        )
        fault = _Fault(end, "pixels", message)
    # the rows before `end` hold 1024 values each: a bad value there is an earlier fault
    flat = arr.slice(0, end).flatten()
    null_at = _first_null(flat) if flat.null_count else len(flat)
    values = _int_values(flat.slice(0, null_at))
    range_at = None if values.dtype == np.uint8 else _out_of_range(values, 255)
    if range_at is not None:
        fault = _Fault(
            range_at // N_PIXELS,
            "pixels",
            f"pixel {values[range_at]} is out of range 0..255 "
            f"(value {range_at % N_PIXELS + 1} of the row)",
        )
    elif null_at < len(flat):
        fault = _Fault(
            null_at // N_PIXELS,
            "pixels",
            f"null pixel (value {null_at % N_PIXELS + 1} of the row)",
        )
    if fault is not None:
        faults.append(fault)
        return None
    return values.astype(np.uint8, copy=False).reshape(n, N_PIXELS)


def _ids(arr: pa.Array, faults: list[_Fault]) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.null_count:
        faults.append(_Fault(_first_null(arr), "ID", "null ID value"))
    return arr


def batch_chunk(batch: pa.RecordBatch, layout: Layout, name: str, first_row: int) -> Chunk:
    """Validate one record batch (its first row is data row `first_row`) into a Chunk.

    A bad batch is refused at its first bad row and, in that row, the first bad column in the
    file's order: every column is checked before choosing, so that the error does not depend
    on the batch size or on the order in which columns are read."""
    faults: list[_Fault] = []
    pixels: np.ndarray | None
    if layout.pixels == "columns":
        pixels = _columns_pixels(batch, faults)
    elif layout.pixels == "binary":
        pixels = _binary_pixels(batch.column("pixels"), faults)
    else:
        pixels = _list_pixels(batch.column("pixels"), faults)
    ids = labels = None
    if layout.kind == "unlabelled":
        ids = _ids(batch.column("ID"), faults)
    else:
        values, fault = _int_column(batch.column("label"), N_CLASSES - 1, "label", "label")
        if values is not None:
            labels = values.astype(np.int64)
        if fault is not None:
            faults.append(fault)
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
    """Iterate over `Chunk`s of a Parquet or Arrow IPC file in bounded memory."""

    def __init__(
        self,
        src: str | Path,
        kind: Kind = "unlabelled",
        batch_rows: int = DEFAULT_BATCH_ROWS,
        limit: int | None = None,
        name: str | None = None,
        row_groups: Sequence[int] | None = None,
        first_row: int = 1,
    ) -> None:
        self.path, self.kind, self.batch_rows, self.limit = Path(src), kind, batch_rows, limit
        self.name = name or str(src)
        self.format = table_format(src)
        self.row_groups = None if row_groups is None else list(row_groups)
        if self.row_groups is not None and self.format != "parquet":
            raise ValueError("row_groups applies to Parquet files only")
        self.first_row = first_row  # data row number of the first row read (row groups start later)
        self.header: list[str] = []

    def __iter__(self) -> Iterator[Chunk]:
        row, remaining = self.first_row, self.limit
        for batch, layout in self._batches():
            if remaining is not None:
                if remaining <= 0:
                    return
                batch = batch.slice(0, remaining)
                remaining -= batch.num_rows
            if batch.num_rows == 0:
                continue
            yield batch_chunk(batch, layout, self.name, row)
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
        return plan_layout(schema, self.kind, self.name)

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
