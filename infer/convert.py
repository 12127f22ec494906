"""`convert`: fcls data between CSV (.csv, .csv.gz), Parquet and Arrow IPC, in constant memory;
and a folder of images (PNG, JPEG) into any of them, decoded once (`formats.images`): the fast
way to score a folder many times.

The input is read by the same validating readers as fcls-infer and fcls-train (so a file that
converts is a file they accept), unlabelled (`ID`) or labelled (`label`) form detected from its header
or schema, and written block by block (Parquet: one row group per ~ROW_GROUP_ROWS rows) to a
temp file renamed into place only on success (`fcls.infer.files`).

Any geometry: the output has the input's P pixels per row (pixel columns named and numbered
as `formats.columns` reads them: pix1..pixP, pixel0..pixel{P-1}, ...). It is written in fcls's
own form: `ID` first and pix1..pixP (unlabelled), or pix1..pixP and `label` last (labelled).
Labels are kept as the file has them: integers (uint8 when the first rows' fit, else int64)
or names (strings).

Pixel layouts of a Parquet / IPC output:
- `binary` (default): one `pixels` column of fixed_size_binary(P), one byte per pixel;
- `columns`: `pix1..pixP` uint8 columns, the CSV's shape (any Parquet tool shows them);
- `list`: one `pixels` column of fixed_size_list<uint8>[P].
`binary` is the default because it reads fastest: one column chunk per row group instead of
P, no per-value decoding (see README, "Parquet and Arrow IPC", for the measurement).
"""

from __future__ import annotations

import gzip
import io
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .common.errors import ConfigError, DataError
from .common.output import atomic_path, output_errors
from .common.spec import Kind, pixel_column_names
from .formats.chunk import Chunk
from .formats.images import folder_digest
from .formats.paths import check_outputs, is_regular
from .formats.results import csv_field
from .formats.sources import header_pixels, id_type, input_kind, is_folder, open_chunks
from .formats.tables import TableWriter, table_format

PixelLayout = Literal["binary", "columns", "list"]
LAYOUTS: tuple[str, ...] = ("binary", "columns", "list")
COMPRESSIONS: tuple[str, ...] = ("zstd", "snappy", "lz4", "gzip", "none")
GZIP_LEVEL = 6  # gzip(1)'s default: Python's 9 is several times slower for a few % less
ROW_GROUP_ROWS = 8192  # 8 MiB held before a row group is written, at 32x32


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


def data_schema(
    kind: Kind,
    ids: pa.DataType,
    layout: PixelLayout,
    n_pixels: int,
    labels: pa.DataType | None = None,
) -> pa.Schema:
    """Columns of a Parquet / IPC data file of `n_pixels` pixels per row: ID first
    (unlabelled) or label last (labelled, of type `labels`, uint8 by default)."""
    if layout == "columns":
        names = pixel_column_names(n_pixels)
        pixels = [pa.field(c, pa.uint8(), nullable=False) for c in names]
    elif layout == "binary":
        pixels = [pa.field("pixels", pa.binary(n_pixels), nullable=False)]
    else:
        pixels = [pa.field("pixels", pa.list_(pa.uint8(), n_pixels), nullable=False)]
    if kind == "unlabelled":
        return pa.schema([pa.field("ID", ids, nullable=False), *pixels])
    return pa.schema([*pixels, pa.field("label", labels or pa.uint8(), nullable=False)])


def label_type(labels: np.ndarray) -> pa.DataType:
    """The output type of raw labels: uint8 for integers 0..255 (fcls's own), int64 for larger
    integers, string for names."""
    if labels.dtype != np.int64:
        return pa.string()
    return pa.uint8() if labels.max(initial=0) <= 255 else pa.int64()


def _label_array(chunk: Chunk, t: pa.DataType, name: str) -> pa.Array:
    """The chunk's labels as type `t` (the first chunk's), or a DataError when they do not fit."""
    assert chunk.labels is not None
    labels = chunk.labels
    if t == pa.string():
        text = labels.astype(str) if labels.dtype == np.int64 else labels
        return pa.array(text, pa.string())
    if labels.dtype != np.int64 or (t == pa.uint8() and labels.max(initial=0) > 255):
        shown = next((v for v in labels if not isinstance(v, int) or v > 255), labels[0])
        raise DataError(
            name,
            f"label {shown!r} does not fit the {t} label column the first rows set (rows from "
            f"{chunk.start} on): convert a file whose labels are all integers or all names",
        )
    return pa.array(labels).cast(t)


def chunk_batch(
    chunk: Chunk, schema: pa.Schema, layout: PixelLayout, name: str = "input"
) -> pa.RecordBatch:
    """A chunk as a record batch of `data_schema`."""
    pixels = np.ascontiguousarray(chunk.pixels)  # (n, P) uint8
    n, p = pixels.shape
    if layout == "columns":
        by_column = np.ascontiguousarray(pixels.T)  # (P, n): each column contiguous
        pix: list[pa.Array] = [pa.array(by_column[j]) for j in range(p)]
    elif layout == "binary":
        pix = [pa.FixedSizeBinaryArray.from_buffers(pa.binary(p), n, [None, pa.py_buffer(pixels)])]
    else:
        pix = [pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), p)]
    if chunk.ids is not None:
        columns = [chunk.ids.cast(schema.field("ID").type), *pix]
    else:
        columns = [*pix, _label_array(chunk, schema.field("label").type, name)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def csv_header(kind: Kind, n_pixels: int) -> bytes:
    """The fcls CSV header of an unlabelled or labelled file of `n_pixels` pixels per row."""
    names = pixel_column_names(n_pixels)
    cols = ["ID", *names] if kind == "unlabelled" else [*names, "label"]
    return (",".join(cols) + "\n").encode()


def csv_rows(chunk: Chunk) -> bytes:
    """The fcls CSV text of a chunk's rows: IDs and label names quoted only where needed,
    pixels and integer labels as integers."""
    names = pixel_column_names(chunk.pixels.shape[1])
    table = pa.table({c: chunk.pixels[:, j] for j, c in enumerate(names)})
    ids = None if chunk.ids is None else csv_field(chunk.ids)
    label = None
    if chunk.labels is not None:
        if chunk.labels.dtype == np.int64:
            table = table.append_column("label", pa.array(chunk.labels))
        else:
            label = csv_field(pa.array(chunk.labels, pa.string()))
    texts = [t for t in (ids, label) if t is not None]
    if not any(pc.any(pc.starts_with(t, '"')).as_py() for t in texts):
        if label is not None:
            table = table.append_column("label", label)
        return _write_plain(table if ids is None else table.add_column(0, "ID", ids))
    # pyarrow quotes every string or none: write the pixels alone and join the rest around them
    lines = _write_plain(table).split(b"\n")[: table.num_rows]
    heads = [b""] * len(lines) if ids is None else [i.encode() + b"," for i in ids.to_pylist()]
    tails = [b""] * len(lines) if label is None else [b"," + t.encode() for t in label.to_pylist()]
    return b"".join(h + line + t + b"\n" for h, line, t in zip(heads, lines, tails))


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
    image_size: str | None = None,
) -> ConvertSummary:
    """Convert one fcls data file (CSV, .csv.gz, Parquet, Arrow IPC) or a folder of images to
    another format.

    A folder is labelled (its class folders' names the labels) when every image lies in a
    sub-folder, else unlabelled (IDs the images' relative paths); its images are converted to
    `image_size` (HxW or HxWxC), else to its first image's size and channels.
    Raises DataError (bad input, located), ConfigError (unknown output format, output is the
    input, bad layout/compression, `image_size` for a file) and OutputError; nothing is left
    at `dest` on failure.
    """
    src, dest = Path(src), Path(dest)
    if image_size is not None and not is_folder(src):
        raise ConfigError(
            f"--image-size {image_size}: it sizes a folder's images; {src} is not a folder "
            "(its rows keep their own pixel count)"
        )
    if layout not in LAYOUTS:
        raise ConfigError(f"pixel layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    fmt = output_format(dest)
    check_outputs([src], [dest])
    if kind is None and src.exists() and not is_regular(src) and not is_folder(src):
        # the form (ID or label) is read from the header before the rows: twice, for a pipe
        raise ConfigError(
            f"{src} is not a regular file: fcls-convert reads its header before its rows; "
            "save it to a file first"
        )
    t0 = time.perf_counter()
    kind = kind or input_kind(src)
    with atomic_path(dest, durable=durable) as tmp:
        chunks = open_chunks(src, kind, image_size=image_size)
        if fmt == "csv":
            rows = _write_csv(src, chunks, kind, tmp, dest)
        else:
            rows = _write_table(src, chunks, kind, tmp, dest, layout, compression)
    seconds = time.perf_counter() - t0
    size_in = folder_digest(src)[1] if is_folder(src) else src.stat().st_size
    return ConvertSummary(rows, kind, seconds, str(src), str(dest), size_in, dest.stat().st_size)


def _write_table(
    src: Path,
    source: Iterable[Chunk],
    kind: Kind,
    tmp: Path,
    dest: Path,
    layout: PixelLayout,
    compression: str,
) -> int:
    """Write a Parquet / IPC file of `source` (the chunks of `src`); its schema is set by the
    first chunk (pixels per row, the labels' type), or by the header when there are no rows."""
    ids = id_type(src) if kind == "unlabelled" else pa.string()
    chunks = iter(source)
    first = next(chunks, None)
    if first is None:
        schema = data_schema(kind, ids, layout, header_pixels(src, kind) or 1)
    else:
        labels = pa.uint8() if first.labels is None else label_type(first.labels)
        schema = data_schema(kind, ids, layout, first.pixels.shape[1], labels)
    writer = TableWriter(
        tmp,
        dest,
        schema,
        compression=None if compression == "none" else compression,
        group_rows=ROW_GROUP_ROWS,
    )
    rows = 0
    try:
        for chunk in itertools.chain([] if first is None else [first], chunks):
            writer.write(chunk_batch(chunk, schema, layout, str(src)))
            rows += len(chunk)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return rows


def _write_csv(src: Path, chunks: Iterable[Chunk], kind: Kind, tmp: Path, dest: Path) -> int:
    rows = 0
    with output_errors(dest):
        raw = tmp.open("wb")
    try:
        out: BinaryIO = raw
        if dest.name.lower().endswith(".gz"):
            out = gzip.GzipFile(
                filename="", fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
            )  # type: ignore[assignment]
        written = False
        for chunk in chunks:
            if not written:
                with output_errors(dest):
                    out.write(csv_header(kind, chunk.pixels.shape[1]))
                written = True
            text = csv_rows(chunk)
            with output_errors(dest):
                out.write(text)
            rows += len(chunk)
        with output_errors(dest):
            if not written:  # no rows: the header alone
                out.write(csv_header(kind, header_pixels(src, kind) or 1))
            out.close()
    finally:
        with output_errors(dest):
            raw.close()
    return rows
