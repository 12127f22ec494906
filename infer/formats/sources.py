"""One dispatcher from an input path to its `Chunk`s: CSV (CsvReader) or Parquet / Arrow IPC
(TableReader), chosen by extension. Every consumer (fcls-infer, fcls-train, fcls-convert, the
Ray engine) opens inputs here, so a format is added in one place."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from ..common.errors import DataError
from ..common.spec import N_PIXELS, Kind
from .chunk import Chunk
from .csvfile import CsvReader, read_header, source_name
from .tables import TableReader, detect_kind, plan_layout, table_format, table_schema

Source = str | Path | BinaryIO


def is_table(src: Source) -> bool:
    """Whether `src` is a Parquet or Arrow IPC path (streams and '-' are CSV)."""
    return isinstance(src, (str, Path)) and str(src) != "-" and table_format(src) != "csv"


def open_chunks(
    src: Source, kind: Kind = "unlabelled", limit: int | None = None
) -> Iterable[Chunk]:
    """The validated chunks of any fcls input (CSV, .csv.gz, stdin, Parquet, Arrow IPC)."""
    if is_table(src):
        return TableReader(Path(src), kind, limit=limit)  # type: ignore[arg-type]
    return CsvReader(src, kind, limit=limit)


def input_kind(src: str | Path) -> Kind:
    """unlabelled or labelled, from the CSV header or the table schema (ID, or label)."""
    if is_table(src):
        return detect_kind(table_schema(src).names)
    try:
        read_header(src, "unlabelled")
    except DataError as e:
        if "missing ID column" not in e.reason:
            raise
        read_header(src, "labelled")  # a labelled file, or its header's own error
        return "labelled"
    return "unlabelled"


def check_header(src: Source, kind: Kind) -> None:
    """Validate only the CSV header or the table schema of `src` as `kind` (no row is read);
    a DataError says what does not fit. Reads from a stream: not for stdin ('-')."""
    if is_table(src):
        plan_layout(table_schema(src), kind, str(src))  # type: ignore[arg-type]
    else:
        read_header(src, kind)


def is_unlabelled(src: Source) -> bool:
    """Whether `src` is a path whose header or schema is a valid unlabelled one (ID, pixels,
    no label): what a consumer that needs labels names in its refusal. False for stdin."""
    if not isinstance(src, (str, Path)) or str(src) == "-":
        return False
    try:
        check_header(src, "unlabelled")
    except DataError:
        return False
    return True


def id_type(src: Source) -> pa.DataType:
    """The Arrow type of the IDs an eval input yields (CSV IDs are strings)."""
    if not is_table(src):
        return pa.string()
    schema = table_schema(src)  # type: ignore[arg-type]
    plan_layout(schema, "unlabelled", str(src))  # a missing or mistyped ID column is a DataError
    t = schema.field("ID").type
    return t.value_type if pa.types.is_dictionary(t) else t


def read_pixels(src: Source, kind: Kind = "unlabelled", limit: int | None = None) -> np.ndarray:
    """The pixels of (the first `limit`) rows of any input as one (N, 1024) uint8 array."""
    chunks = [c.pixels for c in open_chunks(src, kind, limit)]
    return np.concatenate(chunks) if chunks else np.empty((0, N_PIXELS), np.uint8)


def read_train(src: Source, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A whole labelled input as (N, 1024) uint8 pixels and (N,) int64 labels."""
    chunks = list(open_chunks(src, "labelled", limit))
    if not chunks:
        raise DataError(source_name(src), "no data rows")
    pixels = np.concatenate([c.pixels for c in chunks])
    labels = np.concatenate([c.labels for c in chunks if c.labels is not None])
    return pixels, labels
