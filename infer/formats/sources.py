"""One dispatcher from an input path to its `Chunk`s: a folder of images (ImageReader), else
CSV (CsvReader) or Parquet / Arrow IPC (TableReader), chosen by extension. Every consumer
(fcls-infer, fcls-train, fcls-eval, fcls-convert, the Ray engine) opens inputs here, so a
format is added in one place."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from ..common.errors import DataError
from ..common.spec import ImageSpec, Kind, parse_image_size
from ..common.system import file_sha256
from .chunk import Chunk
from .columns import Expected, check_not_data, detect_kind, expected_count
from .csvfile import CsvReader, read_columns, read_header, read_names, source_name
from .images import ImageReader, folder_digest, list_images, no_images
from .labelcells import Classes
from .tables import TableReader, plan_layout, table_format, table_schema

Source = str | Path | BinaryIO


def is_table(src: Source) -> bool:
    """Whether `src` is a Parquet or Arrow IPC path (streams and '-' are CSV)."""
    return isinstance(src, (str, Path)) and str(src) != "-" and table_format(src) != "csv"


def is_folder(src: Source) -> bool:
    """Whether `src` is a directory: a folder of images (`formats.images`)."""
    return isinstance(src, (str, Path)) and str(src) != "-" and Path(src).is_dir()


def open_chunks(
    src: Source,
    kind: Kind = "unlabelled",
    limit: int | None = None,
    pixels: Expected = None,
    classes: Classes = None,
    image_size: str | None = None,
) -> Iterable[Chunk]:
    """The validated chunks of any fcls input (CSV, .csv.gz, stdin, Parquet, Arrow IPC, a
    folder of images).

    `pixels`: the pixel count a row must have (an int, or a model's ImageSpec, whose size the
    error names, and to which a folder's images are converted), None for the file's own;
    `classes`: a model's class names, so that `Chunk.labels` are class indices, None for the
    file's raw labels (`labelcells`); `image_size` (HxW or HxWxC): the size a folder's images
    are converted to when `pixels` is None (else its first image's); other inputs ignore it."""
    if is_folder(src):
        geometry = parse_image_size(image_size) if image_size else None
        return ImageReader(src, kind, limit, pixels=pixels, classes=classes, geometry=geometry)  # type: ignore[arg-type]
    if is_table(src):
        return TableReader(Path(src), kind, limit=limit, pixels=pixels, classes=classes)  # type: ignore[arg-type]
    return CsvReader(src, kind, limit=limit, pixels=pixels, classes=classes)


def input_kind(src: str | Path) -> Kind:
    """unlabelled or labelled, from the CSV header or the table schema (ID or id, or label);
    a folder of images is labelled when every image lies in a (class) sub-folder."""
    if is_folder(src):
        images = list_images(Path(src))
        if not images:
            raise no_images(Path(src))
        return "unlabelled" if any("/" not in rel for rel in images) else "labelled"
    if is_table(src):
        return detect_kind(table_schema(src).names)
    names = read_names(src)
    # no ID and no label may mean no header at all: say so before guessing the kind
    check_not_data(names, ("unlabelled", "labelled"), source_name(src))
    return detect_kind(names)


def check_header(src: Source, kind: Kind, pixels: Expected = None) -> None:
    """Validate only the CSV header or the table schema of `src` as `kind` (no row is read);
    a DataError says what does not fit. Reads from a stream: not for stdin ('-'). A folder is
    listed and its first image's header read (its layout checked as `kind`)."""
    if is_folder(src):
        ImageReader(src, kind, pixels=pixels).open()  # type: ignore[arg-type]
    elif is_table(src):
        plan_layout(table_schema(src), kind, str(src), pixels)  # type: ignore[arg-type]
    else:
        read_header(src, kind, pixels)


def is_unlabelled(src: Source) -> bool:
    """Whether `src` is a path whose header or schema is a valid unlabelled one (ID, pixels,
    no label): what a consumer that needs labels names in its refusal. False for stdin and
    for a folder (its reader says itself what a labelled folder lacks)."""
    if not isinstance(src, (str, Path)) or str(src) == "-" or is_folder(src):
        return False
    try:
        check_header(src, "unlabelled")
    except DataError:
        return False
    return True


def id_type(src: Source) -> pa.DataType:
    """The Arrow type of the IDs an eval input yields (CSV IDs and image paths are strings)."""
    if not is_table(src) or is_folder(src):
        return pa.string()
    schema = table_schema(src)  # type: ignore[arg-type]
    layout = plan_layout(schema, "unlabelled", str(src))  # a bad ID column is a DataError
    t = schema.field(layout.key).type
    return t.value_type if pa.types.is_dictionary(t) else t


def read_pixels(
    src: Source, kind: Kind = "unlabelled", limit: int | None = None, pixels: Expected = None
) -> np.ndarray:
    """The pixels of (the first `limit`) rows of any input as one (N, P) uint8 array."""
    chunks = [c.pixels for c in open_chunks(src, kind, limit, pixels)]
    if chunks:
        return np.concatenate(chunks)
    want = expected_count(pixels)[0]
    if want is None:  # no rows: the header still says how many pixels a row has
        want = header_pixels(src, kind)
    return np.empty((0, want), np.uint8)


def header_pixels(src: Source, kind: Kind) -> int:
    """Pixels per row by the header or schema (0 when it does not say: a stream, a list); a
    folder's first image's values."""
    if is_folder(src):
        h, w, c = ImageReader(src, kind).open()  # type: ignore[arg-type]
        return h * w * c
    if is_table(src):
        return plan_layout(table_schema(src), kind, str(src)).n_pixels or 0  # type: ignore[arg-type]
    if isinstance(src, (str, Path)) and str(src) != "-":
        return read_columns(src, kind).n_pixels
    return 0


def read_train(
    src: Source, limit: int | None = None, image_size: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A whole labelled input as (N, P) uint8 pixels and its N raw labels: int64 when every
    label is an integer, else an object array of str (integers as their digits). A folder's
    images are converted to `image_size` (HxW or HxWxC), else to its first image's."""
    chunks = list(open_chunks(src, "labelled", limit, image_size=image_size))
    if not chunks:
        raise DataError(source_name(src), "no data rows")
    pixels = np.concatenate([c.pixels for c in chunks])
    parts = [c.labels for c in chunks if c.labels is not None]
    if any(p.dtype != np.int64 for p in parts):  # names in some chunk: all labels as text
        parts = [p.astype(str).astype(object) if p.dtype == np.int64 else p for p in parts]
    return pixels, np.concatenate(parts)


def image_size_of(src: Source, image_size: str | None) -> str | None:
    """The size rows of `src` are read at: `image_size` when given, else for a folder of images
    its first image's (`HxWxC`); None for other inputs, whose rows carry their own count."""
    if image_size is not None or not is_folder(src):
        return image_size
    h, w, c = ImageReader(src).open()  # type: ignore[arg-type]
    return ImageSpec(h, w, c).size


def source_digest(src: Path) -> tuple[str, int]:
    """(sha256, bytes) that identify a data input (what model.pt records of its training data):
    a file's content, or a folder's listing of relative paths, sizes and mtimes (fast: no
    image is read; `images.folder_digest`)."""
    if is_folder(src):
        return folder_digest(Path(src))
    return file_sha256(Path(src)), Path(src).stat().st_size
