"""`convert`: fcls data between CSV (.csv, .csv.gz), Parquet and Arrow IPC, in constant memory.

The input is read by the same validating readers as fcls-infer and fcls-train (so a file that
converts is a file they accept), unlabelled (`ID`) or labelled (`label`) form detected from its header
or schema, and written block by block (Parquet: one row group per ~ROW_GROUP_ROWS rows) to a
temp file renamed into place only on success (`fcls.infer.files`).

Pixel layouts of a Parquet / IPC output:
- `binary` (default): one `pixels` column of fixed_size_binary(1024), one byte per pixel;
- `columns`: `pix1..pix1024` uint8 columns, the CSV's shape (any Parquet tool shows them);
- `list`: one `pixels` column of fixed_size_list<uint8>[1024].
`binary` is the default because it reads fastest: one column chunk per row group instead of
1024, no per-value decoding (see README, "Parquet and Arrow IPC", for the measurement).
"""

from __future__ import annotations

import gzip
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .common.errors import ConfigError
from .common.output import atomic_path, output_errors
from .common.spec import N_PIXELS, PIXEL_COLUMNS, Kind
from .formats.chunk import Chunk
from .formats.paths import check_outputs, is_regular
from .formats.results import csv_field
from .formats.sources import id_type, input_kind, open_chunks
from .formats.tables import TableWriter, table_format

PixelLayout = Literal["binary", "columns", "list"]
LAYOUTS: tuple[str, ...] = ("binary", "columns", "list")
COMPRESSIONS: tuple[str, ...] = ("zstd", "snappy", "lz4", "gzip", "none")
GZIP_LEVEL = 6  # gzip(1)'s default: Python's 9 is several times slower for a few % less
ROW_GROUP_ROWS = 8192  # (8192, 1024) uint8 = 8 MiB held before a row group is written


@dataclass(frozen=True)
class ConvertSummary:
    """What one `convert` call did."""

    rows: int
    kind: Kind
    seconds: float
    source: str
    dest: str
    bytes_in: int
    bytes_out: int

    def line(self) -> str:
        """The one-line summary fcls-convert prints."""
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.rows} rows ({self.kind}) in {self.seconds:.2f}s ({rate:,.0f} rows/s): "
            f"{self.source} ({self.bytes_in:,} bytes) -> {self.dest} ({self.bytes_out:,} bytes)"
        )


def output_format(dest: Path) -> Literal["csv", "parquet", "ipc"]:
    """csv for .csv / .csv.gz, else parquet or ipc by extension (anything else is refused)."""
    fmt = table_format(dest)
    if fmt == "csv" and not dest.name.lower().endswith((".csv", ".csv.gz")):
        raise ConfigError(
            f"{dest}: unknown output format; use .csv, .csv.gz, .parquet, .pq, .arrow, "
            ".feather or .ipc"
        )
    return fmt


def data_schema(kind: Kind, ids: pa.DataType, layout: PixelLayout) -> pa.Schema:
    """Columns of a Parquet / IPC data file: ID first (unlabelled) or label last (labelled)."""
    if layout == "columns":
        pixels = [pa.field(c, pa.uint8(), nullable=False) for c in PIXEL_COLUMNS]
    elif layout == "binary":
        pixels = [pa.field("pixels", pa.binary(N_PIXELS), nullable=False)]
    else:
        pixels = [pa.field("pixels", pa.list_(pa.uint8(), N_PIXELS), nullable=False)]
    if kind == "unlabelled":
        return pa.schema([pa.field("ID", ids, nullable=False), *pixels])
    return pa.schema([*pixels, pa.field("label", pa.uint8(), nullable=False)])


def chunk_batch(chunk: Chunk, schema: pa.Schema, layout: PixelLayout) -> pa.RecordBatch:
    """A chunk as a record batch of `data_schema`."""
    pixels = np.ascontiguousarray(chunk.pixels)  # (n, 1024) uint8
    n = len(pixels)
    if layout == "columns":
        by_column = np.ascontiguousarray(pixels.T)  # (1024, n): each column contiguous
        pix: list[pa.Array] = [pa.array(by_column[j]) for j in range(N_PIXELS)]
    elif layout == "binary":
        pix = [
            pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(N_PIXELS), n, [None, pa.py_buffer(pixels)]
            )
        ]
    else:
        pix = [pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), N_PIXELS)]
    if chunk.ids is not None:
        columns = [chunk.ids.cast(schema.field("ID").type), *pix]
    else:
        assert chunk.labels is not None
        columns = [*pix, pa.array(chunk.labels.astype(np.uint8))]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def csv_header(kind: Kind) -> bytes:
    """The fcls CSV header of an unlabelled or labelled file."""
    cols = ["ID", *PIXEL_COLUMNS] if kind == "unlabelled" else [*PIXEL_COLUMNS, "label"]
    return (",".join(cols) + "\n").encode()


def csv_rows(chunk: Chunk) -> bytes:
    """The fcls CSV text of a chunk's rows: IDs quoted only where needed, pixels as integers."""
    table = pa.table({c: chunk.pixels[:, j] for j, c in enumerate(PIXEL_COLUMNS)})
    if chunk.labels is not None:
        table = table.append_column("label", pa.array(chunk.labels))
    if chunk.ids is None:
        return _write_plain(table)
    ids = csv_field(chunk.ids)
    if not pc.any(pc.starts_with(ids, '"')).as_py():
        return _write_plain(table.add_column(0, "ID", ids))
    # pyarrow quotes every string or none: write the pixels alone and put the IDs in front
    lines = _write_plain(table).split(b"\n")
    return b"".join(i.encode() + b"," + line + b"\n" for i, line in zip(ids.to_pylist(), lines))


def _write_plain(table: pa.Table) -> bytes:
    """CSV text of cells that need no quotes, without a header."""
    out = io.BytesIO()
    pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return out.getvalue()


def convert(
    src: str | Path,
    dest: str | Path,
    *,
    layout: PixelLayout = "binary",
    compression: str = "zstd",
    kind: Kind | None = None,
    durable: bool = True,
) -> ConvertSummary:
    """Convert one fcls data file (CSV, .csv.gz, Parquet, Arrow IPC) to another format.

    Raises DataError (bad input, located), ConfigError (unknown output format, output is the
    input, bad layout/compression) and OutputError; nothing is left at `dest` on failure.
    """
    src, dest = Path(src), Path(dest)
    if layout not in LAYOUTS:
        raise ConfigError(f"pixel layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    fmt = output_format(dest)
    check_outputs([src], [dest])
    if kind is None and src.exists() and not is_regular(src):
        # the form (ID or label) is read from the header before the rows: twice, for a pipe
        raise ConfigError(
            f"{src} is not a regular file: fcls-convert reads its header before its rows; "
            "save it to a file first"
        )
    t0 = time.perf_counter()
    kind = kind or input_kind(src)
    rows = 0
    with atomic_path(dest, durable=durable) as tmp:
        if fmt == "csv":
            rows = _write_csv(src, kind, tmp, dest)
        else:
            ids = id_type(src) if kind == "unlabelled" else pa.string()
            schema = data_schema(kind, ids, layout)
            writer = TableWriter(
                tmp,
                dest,
                schema,
                compression=None if compression == "none" else compression,
                group_rows=ROW_GROUP_ROWS,
            )
            try:
                for chunk in open_chunks(src, kind):
                    writer.write(chunk_batch(chunk, schema, layout))
                    rows += len(chunk)
            except BaseException:
                writer.abort()
                raise
            writer.close()
    seconds = time.perf_counter() - t0
    return ConvertSummary(
        rows, kind, seconds, str(src), str(dest), src.stat().st_size, dest.stat().st_size
    )


def _write_csv(src: Path, kind: Kind, tmp: Path, dest: Path) -> int:
    rows = 0
    with output_errors(dest):
        raw = tmp.open("wb")
    try:
        out: BinaryIO = raw
        if dest.name.lower().endswith(".gz"):
            out = gzip.GzipFile(
                filename="", fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
            )  # type: ignore[assignment]
        with output_errors(dest):
            out.write(csv_header(kind))
        for chunk in open_chunks(src, kind):
            text = csv_rows(chunk)
            with output_errors(dest):
                out.write(text)
            rows += len(chunk)
        with output_errors(dest):
            out.close()
    finally:
        with output_errors(dest):
            raw.close()
    return rows
