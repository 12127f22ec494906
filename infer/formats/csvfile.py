"""Opening fcls CSV inputs (plain, .gz, stdin, streams) and reading them as validated `Chunk`s,
at any number of pixel columns (`columns.resolve`); writing them (`write_eval_csv`)."""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..common.errors import DataError
from ..common.output import atomic_file, output_errors
from ..common.spec import Kind, pixel_column_names
from .chunk import Chunk
from .columns import Columns, Expected, resolve
from .csvfast import Scratch, fast_block, fast_layout
from .csvgrammar import (
    BOM,
    MAX_LINE_BYTES,
    breaks_byte_rules,
    diagnose,
    header_columns,
    header_names,
    is_blank,
    too_long,
)
from .labelcells import Classes, text_labels
from .paths import is_stdin

# bytes per block: large enough to amortise parsing, small enough to keep peak memory low
DEFAULT_CHUNK_BYTES = 2 << 20


def source_name(src: str | Path | BinaryIO) -> str:
    """A printable name for an input: its path, `<stdin>` for '-', or the stream's name."""
    if isinstance(src, (str, Path)):
        return "<stdin>" if is_stdin(src) else str(src)
    return str(getattr(src, "name", "<stream>"))


def open_source(src: str | Path | BinaryIO) -> tuple[BinaryIO, bool]:
    """Open a path ('-' is stdin, '.gz' is decompressed); return the stream and whether we own it."""
    name = source_name(src)
    if not isinstance(src, (str, Path)):
        return src, False
    if is_stdin(src):
        return sys.stdin.buffer, False
    path = Path(src)
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise DataError(name, "no such file") from None
    except IsADirectoryError:
        raise DataError(name, "is a directory, not a CSV file") from None
    except OSError as e:
        raise DataError(name, f"cannot open: {e.strerror}") from None
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), True  # type: ignore[return-value]
    return raw, True


def read_block(stream: BinaryIO, n: int, name: str, line: int) -> bytes:
    """Read up to n bytes, turning decompression failures into a DataError at `line`."""
    try:
        return stream.read(n)
    except EOFError:
        raise DataError(name, "truncated gzip file (compressed stream ends early)", line) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(name, f"corrupt gzip data: {e}", line) from None


def count_lines(buf: bytes) -> int:
    """How many b"\\n" `buf` holds (numpy's vectorised count beats bytes.count's loop)."""
    return int(np.count_nonzero(np.frombuffer(buf, np.uint8) == 10))


@dataclass(frozen=True)
class LineBlock:
    """A block: whole input lines as raw bytes, and where they lie in the input."""

    data: bytes
    line: int  # file line of the first byte
    end_offset: int  # bytes of the (decompressed) input up to the end of the block, header included
    end_line: int  # file line just after the block


class LineInput:
    """An opened CSV input read as whole lines: its header line first, then blocks of lines.

    The one place that cuts CSV input into blocks (the reader, the local pipeline and Ray's
    planning and parsing all use it). A block is the first `chunk_bytes` bytes from its start
    cut after their last line break, or one whole line when that line is longer, so blocks
    depend only on where they start: a resumed run cuts exactly as the interrupted one did. A
    line with no line break within MAX_LINE_BYTES is refused at its line without reading on.
    """

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream, self.name = stream, name
        self.offset = 0  # input bytes handed out so far (header line and blocks)
        self._buf = b""  # bytes read from the stream past `offset`

    def header_line(self) -> tuple[bytes, bool]:
        """The first line (without its b"\\n") and whether a line break ended it."""
        while b"\n" not in self._buf and len(self._buf) <= MAX_LINE_BYTES:
            if self._fill(len(self._buf) + (1 << 16), 1):
                break
        head, newline, _ = self._buf.partition(b"\n")
        if not head.strip():
            raise DataError(self.name, "empty file (no header line)", 1)
        self._take(len(head) + len(newline))
        return head, bool(newline)

    def header(self, kind: Kind, pixels: Expected = None) -> Columns:
        """Read and check the header line; its columns."""
        raw, terminated = self.header_line()
        return header_columns(raw, kind, self.name, terminated, pixels)

    def names(self) -> list[str]:
        """Read the header line; its column names, unchecked."""
        raw, terminated = self.header_line()
        return header_names(raw, self.name, terminated)

    def skip_to(self, offset: int, line: int) -> None:
        """Move on to input byte `offset`: a seek in a plain file, reading past it otherwise."""
        n = offset - self.offset
        dropped = min(n, len(self._buf))
        self._take(dropped)
        n -= dropped
        self.offset += n
        if n <= 0:
            return
        if not isinstance(self.stream, gzip.GzipFile) and self.stream.seekable():
            self.stream.seek(n, io.SEEK_CUR)
            return
        while n > 0:
            piece = self._read(min(n, 1 << 20), line)
            if not piece:
                raise DataError(
                    self.name, "input is shorter than when the interrupted run read it", line
                )
            n -= len(piece)

    def blocks(self, chunk_bytes: int, line: int, end: int | None = None) -> Iterator[LineBlock]:
        """Blocks from the current offset (file line `line`) to the input's end, or to byte
        `end` (a line boundary: a shard of the file) without reading past it."""
        while True:
            room = chunk_bytes if end is None else min(chunk_bytes, end - self.offset)
            if room <= 0:
                return
            last = self._fill(room, line) or room < chunk_bytes
            cut = min(room, len(self._buf)) if last else self._buf.rfind(b"\n", 0, room) + 1
            if cut == 0:  # one line longer than a block: the block is that line
                cut = self._line_end(max(chunk_bytes, 1 << 16), line, end)
            data = self._take(cut)
            if not data:
                return
            end_line = line + count_lines(data)
            yield LineBlock(data, line, self.offset, end_line)
            line = end_line
            if last:
                return

    def _line_end(self, step: int, line: int, end: int | None) -> int:
        """Bytes up to the end of the first buffered line, reading on up to MAX_LINE_BYTES."""
        searched = 0
        while (found := self._buf.find(b"\n", searched)) < 0:
            if len(self._buf) > MAX_LINE_BYTES:
                raise DataError(self.name, too_long(), line)  # before reading any more of it
            searched = len(self._buf)
            room = step if end is None else min(step, end - self.offset - len(self._buf))
            more = self._read(room, line) if room > 0 else b""
            if not more:
                return len(self._buf)  # the input (or the shard) ends inside this line
            self._buf += more
        return found + 1

    def _take(self, n: int) -> bytes:
        data, self._buf = self._buf[:n], self._buf[n:]
        self.offset += len(data)
        return data

    def _fill(self, n: int, line: int) -> bool:
        """Read until `n` bytes are buffered; True when the input ends first."""
        while len(self._buf) < n:
            more = self._read(n - len(self._buf), line)
            if not more:
                return True
            self._buf += more
        return False

    def _read(self, n: int, line: int) -> bytes:
        try:
            return read_block(self.stream, n, self.name, line)
        except OSError as e:
            reason = f"cannot read ({e.strerror or type(e).__name__})"
            raise DataError(self.name, reason, line) from None


class CsvReader:
    """Iterate over `Chunk`s of an fcls CSV file in constant memory.

    `start` (input byte offset, file line) and `end` (byte offset) read one shard of a file
    (Ray's plan); by default the whole file after its header. `pixels`: the pixel columns a
    row must have (a count or a model's spec), None for any count; `classes`: a model's class
    names, so that labels are class indices, None for the file's own labels (`labelcells`).
    """

    def __init__(
        self,
        src: str | Path | BinaryIO,
        kind: Kind = "unlabelled",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        limit: int | None = None,
        use_threads: bool = True,
        name: str | None = None,
        start: tuple[int, int] | None = None,
        end: int | None = None,
        *,
        pixels: Expected = None,
        classes: Classes = None,
    ) -> None:
        self.src, self.kind, self.chunk_bytes, self.limit = src, kind, chunk_bytes, limit
        self.name = name or source_name(src)
        self.start, self.end = start, end
        self.use_threads = use_threads
        self.pixels, self.classes = pixels, classes
        self.header: list[str] = []
        self.columns: Columns | None = None  # once the header is read

    def __iter__(self) -> Iterator[Chunk]:
        remaining = self.limit
        for parser, block in self.blocks():
            chunk = parser.parse(block.data, block.line)
            if chunk is not None:
                if remaining is not None:
                    chunk = _head(chunk, remaining)
                    remaining -= len(chunk)
                yield chunk
            if remaining is not None and remaining <= 0:
                return  # before reading another block

    def blocks(self) -> Iterator[tuple[BlockParser, LineBlock]]:
        """The header checked, then the unparsed blocks with this file's parser, for callers
        that parse elsewhere (the pipeline parses them on a pool of threads)."""
        stream, owned = open_source(self.src)
        try:
            lines = LineInput(stream, self.name)
            self.columns = lines.header(self.kind, self.pixels)
            self.header = list(self.columns.names)
            parser = BlockParser(
                self.columns, self.kind, self.name, self.use_threads, classes=self.classes
            )
            line = 2
            if self.start is not None:
                lines.skip_to(*self.start)
                line = self.start[1]
            for block in lines.blocks(self.chunk_bytes, line, self.end):
                yield parser, block
        finally:
            if owned:
                stream.close()


def _head(chunk: Chunk, n: int) -> Chunk:
    if len(chunk) <= n:
        return chunk
    return Chunk(
        pixels=chunk.pixels[:n],
        ids=None if chunk.ids is None else chunk.ids[:n],
        labels=None if chunk.labels is None else chunk.labels[:n],
        start=chunk.start,
    )


def read_header(
    src: str | Path | BinaryIO, kind: Kind = "unlabelled", pixels: Expected = None
) -> list[str]:
    """Read and validate only the header of a CSV file; its column names."""
    return list(read_columns(src, kind, pixels).names)


def read_columns(src: str | Path | BinaryIO, kind: Kind, pixels: Expected = None) -> Columns:
    """Read and validate only the header of a CSV file; its columns."""
    stream, owned = open_source(src)
    try:
        return LineInput(stream, source_name(src)).header(kind, pixels)
    finally:
        if owned:
            stream.close()


def read_names(src: str | Path | BinaryIO) -> list[str]:
    """The column names of a CSV file's header, unchecked (to tell its kind)."""
    stream, owned = open_source(src)
    try:
        return LineInput(stream, source_name(src)).names()
    finally:
        if owned:
            stream.close()


def write_eval_csv(path: Path, pixels: np.ndarray, ids: pa.Array | None = None) -> Path:
    """Write (n, P) uint8 rows as an `ID,pix1..pixP` file (IDs 0..n-1 by default), atomically."""
    key = ids if ids is not None else pa.array(np.arange(len(pixels), dtype=np.int64))
    return _write_rows(path, pixels, {"ID": key}, {})


def write_labelled_csv(path: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    """Write (n, P) uint8 rows and their (n,) labels as a `pix1..pixP,label` file, atomically."""
    return _write_rows(path, pixels, {}, {"label": pa.array(labels)})


def _write_rows(
    path: Path, pixels: np.ndarray, before: dict[str, pa.Array], after: dict[str, pa.Array]
) -> Path:
    names = pixel_column_names(pixels.shape[1])
    columns = {**before, **{name: pa.array(pixels[:, j]) for j, name in enumerate(names)}, **after}
    with atomic_file(path) as f:
        f.write((",".join(columns) + "\n").encode())
        with output_errors(path):
            pacsv.write_csv(pa.table(columns), f.raw, pacsv.WriteOptions(include_header=False))
    return path


class BlockParser:
    """Parses blocks of whole data lines of one file whose header is known."""

    def __init__(
        self,
        header: Columns | list[str],
        kind: Kind,
        name: str,
        use_threads: bool = True,
        *,
        classes: Classes = None,
    ):
        columns = header if isinstance(header, Columns) else resolve(header, kind, name, line=1)
        self.columns, self.header, self.kind, self.name = columns, list(columns.names), kind, name
        self.classes = classes
        self._layout = fast_layout(columns, classes)
        self._scratch = Scratch()
        types: dict[str, pa.DataType] = dict.fromkeys(columns.pixel_names, pa.uint8())
        key = columns.id_name if kind == "unlabelled" else "label"
        types[key] = pa.string()
        self._options = (
            pacsv.ReadOptions(
                column_names=self.header, use_threads=use_threads, block_size=4 << 20
            ),
            pacsv.ParseOptions(newlines_in_values=False),
            pacsv.ConvertOptions(
                column_types=types,
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    def parse(self, buf: bytes, line: int) -> Chunk | None:
        """The rows of `buf` (whole lines, the first is file line `line`); None if all are empty."""
        if buf[:1] in b"\r\n" and is_blank(buf):  # b"" is in b"\r\n", and blank
            return None
        if self._layout is not None:
            chunk = fast_block(buf, self._layout, line, self._scratch)
            if chunk is not None:
                return chunk
        return self._parse_arrow(buf, line)

    def _parse_arrow(self, buf: bytes, line: int) -> Chunk:
        """Parse one block with pyarrow, holding it to the grammar."""

        def reject(reason: str) -> DataError:
            return diagnose(buf, line, self.columns, self.name, reason, self.classes)

        if breaks_byte_rules(buf):
            raise reject("NUL, stray carriage return or overlong line")
        # pyarrow drops a BOM at the start of its input; here it belongs to the first cell.
        data = b"\n" + buf if buf.startswith(BOM) else buf
        try:
            table = pacsv.read_csv(io.BytesIO(data), *self._options)
        except pa.ArrowException as e:
            raise reject(str(e)) from None
        # a lone "x" is a cheap memchr; "0x" alone is a slow search in digits
        maybe_hex = (b"x" in buf and b"0x" in buf) or (b"X" in buf and b"0X" in buf)
        if maybe_hex and self._has_hex_cell(data):
            raise reject("hexadecimal number")
        labels = ids = None
        if self.kind == "labelled":
            text = table.column("label").combine_chunks()
            if pc.any(pc.match_substring(text, "\n")).as_py():  # a quote left open
                raise reject("quoted field across lines")
            labels, bad, why = text_labels(text, self.classes)
            if bad is not None:
                raise reject(why)
        else:
            ids = table.column(self.columns.id_name).combine_chunks()
            if pc.any(pc.match_substring(ids, "\n")).as_py():  # a quote left open
                raise reject("quoted field across lines")
        return Chunk(
            pixels=_pixel_matrix(table, self.columns.pixel_names),
            ids=ids,
            labels=labels,
            start=line,
        )

    def _has_hex_cell(self, data: bytes) -> bool:
        """Whether a pixel cell is a hex number like 0xff, which pyarrow accepts.

        Only blocks that contain "0x" get here (e.g. IDs like 0x1f): the numeric cells are
        read again as text, which costs about one more parse of the block.
        """
        read, parse, _ = self._options
        columns = list(self.columns.pixel_names)
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()), include_columns=columns
        )
        table = pacsv.read_csv(io.BytesIO(data), read, parse, convert)
        return any(
            pc.any(pc.match_substring(table.column(c), "x", ignore_case=True)).as_py()
            for c in columns
        )


def _pixel_matrix(table: pa.Table, names: tuple[str, ...]) -> np.ndarray:
    """(n, P) uint8 filled column by column from the arrow buffers (no nulls by construction).

    Viewing each column's data buffer with np.frombuffer avoids the per-column arrays of
    np.stack(column.to_numpy()), which made this copy the reader's bottleneck.
    """
    out = np.empty((table.num_rows, len(names)), np.uint8)
    for j, name in enumerate(names):
        row = 0
        for arr in table.column(name).chunks:
            n = len(arr)
            out[row : row + n, j] = np.frombuffer(arr.buffers()[1], np.uint8, n, arr.offset)
            row += n
    return out
