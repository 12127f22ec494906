"""Streaming, validated reader for fcls CSV files (`ID,pix1..pix1024` and `pix1..pix1024,label`).

Bytes are read in blocks that end on a line break. Each block goes through up to three
readers, each exact on what it accepts:

1. `_fast_block`: vectorised numpy over the block's bytes, for the common shape (no quotes, no
   spaces, no CR other than CRLF, pixel cells of 1-3 digits, ID first). It either returns the
   arrays the grammar defines or declines (None) without judging the block.
2. pyarrow's CSV reader straight into uint8 columns, plus the grammar's extra checks: it takes
   everything the grammar allows (quotes, spaces, leading zeros, any column order) and rejects
   the rest.
3. When pyarrow rejects a block, it is re-read line by line in Python only to name the exact
   line and column.

Rows are never looped over in Python on paths 1 and 2. Measured on Fashion-MNIST rows (2-core
AVX2 box, one thread): path 1 ~100,000 rows/s, path 2 ~45,000 rows/s.

The grammar (defined here once; the fast path and the line-by-line diagnosis both obey it):

- Lines end at b"\\n" only, and line numbers count b"\\n", so they are the file's. A "\\r" is
  allowed only right before a b"\\n" (CRLF) and is then not part of the line; any other "\\r"
  (old Mac line ends, "\\r" inside a quoted field or at the end of the file) is an error.
  Other separators (\\v, \\f, \\x1c-\\x1e, U+0085, U+2028 ...) are ordinary characters.
- A line is at most `MAX_LINE_BYTES` bytes (its "\\r" included): a longer one is refused as
  soon as that many bytes have been read without a line break, so memory stays bounded.
- The file is UTF-8 text without NUL bytes. A UTF-8 BOM is skipped before the header only.
- Line 1 is the header. Every later empty line (b"" or "\\r" before b"\\n") is skipped; a line
  of spaces is a one-field row, not an empty line.
- Fields are separated by ",". A field that starts with '"' is quoted: it runs to the next
  '"' that is not doubled ('""' stands for '"'), and any text after its closing quote up to
  the next "," is appended verbatim; a '"' elsewhere is an ordinary character. A quoted field
  must close on its own line. Every data line has as many fields as the header.
- Header names are compared after removing surrounding ASCII spaces and tabs; each expected
  column appears exactly once, in any order.
- ID cells are any text, kept verbatim (not trimmed).
- Pixel cells (after unquoting) are `[ \\t]*[0-9]+[ \\t]*`: ASCII decimal digits, leading zeros
  allowed, only ASCII spaces and tabs around them, with a value in 0..255; label cells the
  same with a value in 0..9. Nothing else: no sign, no hex (pyarrow alone reads 0xff as 255),
  no decimal point or exponent, no other whitespace (\\v, \\f, NBSP), no empty cell.
- The first bad line in the file is reported. Within a line the checks run in this order:
  length, stray "\\r", NUL, UTF-8, unclosed quote, field count (these name no column), then
  the cells in the file's column order (these name the column).
"""

from __future__ import annotations

import gzip
import io
import re
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .errors import DataError
from .files import atomic_file, output_errors

N_PIXELS = 1024
PIXEL_COLUMNS: tuple[str, ...] = tuple(f"pix{i}" for i in range(1, N_PIXELS + 1))
N_CLASSES = 10
Kind = Literal["eval", "train"]
DEFAULT_CHUNK_BYTES = 2 << 20  # ~750 rows: amortises parsing, keeps peak RSS under 300 MB
# A valid row is at most ~4 KiB of pixels plus its ID; a line longer than this is not data.
MAX_LINE_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"
_CELL = re.compile(r"[ \t]*([0-9]+)[ \t]*")  # pixel and label cells, matched in full


@dataclass(frozen=True)
class Chunk:
    """A block of consecutive rows: pixels always, IDs for eval files, labels for train files."""

    pixels: np.ndarray  # (n, 1024) uint8
    ids: pa.Array | None  # (n,) string, verbatim from the file
    labels: np.ndarray | None  # (n,) int64 in 0..9
    first_line: int  # 1-based file line of the first row

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def source_name(src: str | Path | BinaryIO) -> str:
    """A printable name for an input: its path, `<stdin>` for '-', or the stream's name."""
    if isinstance(src, (str, Path)):
        return "<stdin>" if str(src) == "-" else str(src)
    return str(getattr(src, "name", "<stream>"))


def open_source(src: str | Path | BinaryIO) -> tuple[BinaryIO, bool]:
    """Open a path ('-' is stdin, '.gz' is decompressed); return the stream and whether we own it."""
    name = source_name(src)
    if not isinstance(src, (str, Path)):
        return src, False
    if str(src) == "-":
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
    """How many b"\\n" `buf` holds (numpy's count is ~8x faster than bytes.count's loop)."""
    return int(np.count_nonzero(np.frombuffer(buf, np.uint8) == 10))


def _too_long() -> str:
    return f"line longer than {MAX_LINE_BYTES} bytes (not an fcls CSV row)"


def _expected(kind: Kind) -> list[str]:
    return ["ID", *PIXEL_COLUMNS] if kind == "eval" else [*PIXEL_COLUMNS, "label"]


def _check_header(header: list[str], kind: Kind, name: str) -> None:
    """Every expected column exactly once, nothing else (order is free)."""
    expected = _expected(kind)
    if kind == "eval" and "ID" not in header:
        raise DataError(name, f"missing ID column (header starts {','.join(header[:3])}...)", 1)
    seen: set[str] = set()
    for i, col in enumerate(header, start=1):
        if col in seen:
            raise DataError(name, f"duplicate column {col!r}", 1, str(i))
        seen.add(col)
    missing = [c for c in expected if c not in seen]
    expected_set = set(expected)
    extra = [c for c in header if c not in expected_set]
    if missing or extra:
        n_pix = sum(c in set(PIXEL_COLUMNS) for c in header)
        parts = [
            f"expected {len(expected)} columns ({expected[0]},...,{expected[-1]}), got {len(header)}"
        ]
        parts.append(f"{n_pix} of {N_PIXELS} pixel columns")
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        raise DataError(name, "; ".join(parts), 1)


def _line_text(raw: bytes, terminated: bool) -> str:
    """A line's text (raw is without its b"\\n"), or raise ValueError saying which byte rule it breaks."""
    if len(raw) > MAX_LINE_BYTES:
        raise ValueError(_too_long())
    body = raw[:-1] if terminated and raw.endswith(b"\r") else raw
    if b"\r" in body:
        raise ValueError("carriage return (\\r) inside a line: only \\n or \\r\\n may end a line")
    if b"\0" in body:
        raise ValueError("NUL byte (binary data, not CSV text)")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"not UTF-8 text (byte 0x{body[e.start]:02x} at byte {e.start + 1} of the line)"
        ) from None


def _split_fields(text: str) -> list[str] | None:
    """Split one line into its fields by the grammar's quoting rules; None if a quote stays open."""
    if '"' not in text:
        return text.split(",")
    fields: list[str] = []
    pos, n = 0, len(text)
    while True:
        if text.startswith('"', pos):
            parts: list[str] = []
            pos += 1
            while True:
                close = text.find('"', pos)
                if close < 0:
                    return None
                parts.append(text[pos:close])
                if not text.startswith('"', close + 1):
                    pos = close + 1
                    break
                parts.append('"')  # a doubled quote
                pos = close + 2
            end = text.find(",", pos)
            end = n if end < 0 else end
            parts.append(text[pos:end])  # text after the closing quote, verbatim
            fields.append("".join(parts))
        else:
            end = text.find(",", pos)
            end = n if end < 0 else end
            fields.append(text[pos:end])
        if end == n:
            return fields
        pos = end + 1


def _cell_problem(value: str, col: str) -> str | None:
    """Why a cell breaks the grammar, or None: pixels are integers 0..255, labels 0..9."""
    if col == "ID":
        return None
    hi = 255 if col != "label" else N_CLASSES - 1
    what = "pixel" if col != "label" else "label"
    match = _CELL.fullmatch(value)
    if match is None:
        if value.strip(" \t") == "":
            return f"empty {what} value"
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"{what} {shown!r} is not an integer in 0..{hi} (decimal digits only)"
    digits = match.group(1).lstrip("0") or "0"  # int() of a huge string would raise
    if len(digits) > 3 or int(digits) > hi:
        shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
        return f"{what} {shown} is out of range 0..{hi}"
    return None


def _row_problem(raw: bytes, terminated: bool, header: list[str]) -> tuple[str, str | None] | None:
    """Why one data line breaks the grammar (and in which column), or None."""
    if raw == b"" or (terminated and raw == b"\r"):
        return None  # an empty line
    try:
        text = _line_text(raw, terminated)
    except ValueError as e:
        return str(e), None
    row = _split_fields(text)
    if row is None:
        return "quoted field not closed on its line", None
    if len(row) != len(header):
        return f"expected {len(header)} fields, got {len(row)} (ragged row)", None
    for col, value in zip(header, row):
        problem = _cell_problem(value, col)
        if problem:
            return problem, col
    return None


def _diagnose(
    buf: bytes, first_line: int, header: list[str], name: str, fallback: str
) -> DataError:
    """Re-read a rejected block line by line (split at b"\\n" only) to find the first bad row."""
    start, line = 0, first_line
    while start < len(buf):
        end = buf.find(b"\n", start)
        terminated = end >= 0
        end = end if terminated else len(buf)
        problem = _row_problem(buf[start:end], terminated, header)
        if problem:
            return DataError(name, problem[0], line, problem[1])
        start, line = end + 1, line + 1
    last = first_line + buf.count(b"\n")
    return DataError(name, f"unreadable rows between lines {first_line} and {last}: {fallback}")


def _has_long_line(buf: bytes) -> bool:
    """Whether a line of `buf` is longer than MAX_LINE_BYTES, in a few memchr calls per block.

    A line longer than MAX_LINE_BYTES covers a whole aligned window of MAX_LINE_BYTES // 2
    bytes, so only windows without a b"\\n" need a closer look.
    """
    if len(buf) <= MAX_LINE_BYTES:
        return False
    step = MAX_LINE_BYTES // 2
    for start in range(0, len(buf) - step + 1, step):
        if buf.find(b"\n", start, start + step) < 0:
            begin = buf.rfind(b"\n", 0, start) + 1
            end = buf.find(b"\n", start + step)
            if (len(buf) if end < 0 else end) - begin > MAX_LINE_BYTES:
                return True
    return False


def _has_stray_cr(buf: bytes) -> bool:
    """Whether a "\\r" of the block is not followed by b"\\n".

    One memchr per line is ~10x cheaper than counting b"\\r\\n" in a CRLF file; past a few
    thousand "\\r" (many short lines) the two counts take over.
    """
    pos = buf.find(b"\r")
    for _ in range(4096):
        if pos < 0:
            return False
        if buf[pos + 1 : pos + 2] != b"\n":
            return True
        pos = buf.find(b"\r", pos + 2)
    return buf.count(b"\r") != buf.count(b"\r\n")


def _breaks_byte_rules(buf: bytes) -> bool:
    """Whether the block has a NUL, a stray "\\r" or an overlong line (pyarrow takes all three)."""
    return b"\0" in buf or _has_long_line(buf) or _has_stray_cr(buf)


def _is_blank(buf: bytes) -> bool:
    """Whether the block holds only empty lines (no stray "\\r")."""
    return not buf.strip(b"\r\n") and not buf.replace(b"\r\n", b"\n").strip(b"\n")


def parse_header_line(raw: bytes, kind: Kind, name: str, terminated: bool = True) -> list[str]:
    """Check the header line (`raw` without its b"\\n") and return its column names."""
    try:
        text = _line_text(raw, terminated).removeprefix("\ufeff")
    except ValueError as e:
        raise DataError(name, f"header: {e}", 1) from None
    row = _split_fields(text)
    if row is None:
        raise DataError(name, "header: quoted field not closed on its line", 1)
    header = [c.strip(" \t") for c in row]
    _check_header(header, kind, name)
    return header


@dataclass(frozen=True)
class _Layout:
    """Where the fast path finds each value in a row of N_PIXELS + 1 fields."""

    id_first: bool  # eval files: field 0 is the ID (the fast path needs it there)
    pixels: slice | np.ndarray  # fields of pix1..pix1024, in that order
    label: int | None  # field of the label (train files)


def _fast_layout(header: list[str], kind: Kind) -> _Layout | None:
    """The fast path's layout for this header, or None when it never applies (ID not first)."""
    if kind == "eval" and header[0] != "ID":
        return None
    where = {c: i for i, c in enumerate(header)}
    cols = np.array([where[c] for c in PIXEL_COLUMNS])
    first = int(cols[0])
    in_order = bool((cols == np.arange(first, first + N_PIXELS)).all())
    pixels: slice | np.ndarray = slice(first, first + N_PIXELS) if in_order else cols
    return _Layout(kind == "eval", pixels, where.get("label"))


_FIELDS = N_PIXELS + 1  # fields per row in both kinds


class _Scratch(threading.local):
    """Per-thread work arrays of `_fast_block`, kept between blocks.

    A block needs eight byte-sized temporaries; allocating them afresh made the kernel
    fault in ~8 MB of pages per 2 MiB block when two threads parse (3x the page faults
    of one thread, measured), so each thread reuses its own.
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


def _fast_block(buf: bytes, layout: _Layout, line: int, scratch: _Scratch) -> Chunk | None:
    """Rows of `buf` by vectorised numpy, or None to leave the block to pyarrow.

    Takes only blocks in which every row has exactly 1025 fields separated by "," with no
    quotes, every pixel (and label) cell is 1-3 ASCII digits, no line is empty or longer than
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
    (sep, digit, odd, tmp), (d, dz, low, high) = scratch.get(a.size)
    n = int(np.count_nonzero(np.equal(a, 10, out=tmp)))  # lines ("\n")
    np.logical_or(np.equal(a, 44, out=sep), tmp, out=sep)  # "," or "\n"
    flat = np.flatnonzero(sep)  # every field's end, (n * 1025,) int64 when the rows are right
    if flat.size != n * _FIELDS or a[0] == 44:
        return None
    ends = flat.reshape(n, _FIELDS)
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
    # Bytes that are neither digits nor separators, and the 4th digit of a run, may only be
    # in IDs: one search finds both.
    np.logical_not(np.logical_or(digit, sep, out=odd), out=odd)
    run = np.logical_and(digit[3:], digit[2:-1], out=tmp[3:])
    np.logical_and(run, digit[1:-2], out=run)
    np.logical_and(run, digit[:-3], out=run)
    np.logical_or(odd[3:], run, out=odd[3:])
    pos = np.flatnonzero(odd)
    if pos.size:
        if not layout.id_first:
            return None
        row = np.searchsorted(starts, pos, "right") - 1
        if (pos >= ends[row, 0]).any():  # past the row's ID
            return None
    np.multiply(d, digit, out=dz)  # (bytes,) uint8, 0 on separators
    # At a field's end e: tens and ones (<= 99) and the hundreds digit, which counts only
    # when a tens digit sits between (else dz[e - 3] belongs to the previous field).
    np.multiply(dz[1:-2], 10, out=low[3:])
    np.add(low[3:], dz[2:-1], out=low[3:])
    low[1], low[2] = dz[0], 10 * dz[0] + dz[1]  # a row has 1025 bytes at least
    np.multiply(dz[:-3], digit[1:-2], out=high[3:])
    high[:3] = 0
    fields = np.take(high, ends).astype(np.uint16)  # (n, 1025) uint16; take: 20% < [ends]
    fields *= 100
    fields += np.take(low, ends)
    pixels = fields[:, layout.pixels]
    if pixels.max(initial=0) > 255:
        return None
    labels = ids = None
    if layout.label is not None:
        labels = fields[:, layout.label].astype(np.int64)
        if labels.max(initial=0) >= N_CLASSES:
            return None
    if layout.id_first:
        ids = _gather_ids(a, starts, ends[:, 0])
        if ids is None:
            return None
    return Chunk(pixels=pixels.astype(np.uint8), ids=ids, labels=labels, first_line=line)


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


class BlockParser:
    """Parses blocks of whole data lines of one file whose header is known."""

    def __init__(self, header: list[str], kind: Kind, name: str, use_threads: bool = True):
        self.header, self.kind, self.name = header, kind, name
        self._layout = _fast_layout(header, kind)
        self._scratch = _Scratch()
        types: dict[str, pa.DataType] = dict.fromkeys(PIXEL_COLUMNS, pa.uint8())
        types.update({"ID": pa.string()} if kind == "eval" else {"label": pa.uint8()})
        self._options = (
            pacsv.ReadOptions(column_names=header, use_threads=use_threads, block_size=4 << 20),
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
        if buf[:1] in b"\r\n" and _is_blank(buf):  # b"" is in b"\r\n", and blank
            return None
        if self._layout is not None:
            chunk = _fast_block(buf, self._layout, line, self._scratch)
            if chunk is not None:
                return chunk
        return self._parse_arrow(buf, line)

    def _parse_arrow(self, buf: bytes, line: int) -> Chunk:
        """Parse one block with pyarrow, holding it to the grammar."""

        def reject(reason: str) -> DataError:
            return _diagnose(buf, line, self.header, self.name, reason)

        if _breaks_byte_rules(buf):
            raise reject("NUL, stray carriage return or overlong line")
        # pyarrow drops a BOM at the start of its input; here it belongs to the first cell.
        data = b"\n" + buf if buf.startswith(_BOM) else buf
        try:
            table = pacsv.read_csv(io.BytesIO(data), *self._options)
        except pa.ArrowException as e:
            raise reject(str(e)) from None
        # a lone "x" is a cheap memchr; "0x" alone is a slow search in digits
        maybe_hex = (b"x" in buf and b"0x" in buf) or (b"X" in buf and b"0X" in buf)
        if maybe_hex and self._has_hex_cell(data):
            raise reject("hexadecimal number")
        labels = ids = None
        if self.kind == "train":
            labels = table.column("label").to_numpy().astype(np.int64)
            if labels.size and labels.max() >= N_CLASSES:
                raise reject("label out of range")
        else:
            ids = table.column("ID").combine_chunks()
            if pc.any(pc.match_substring(ids, "\n")).as_py():  # a quote left open
                raise reject("quoted field across lines")
        return Chunk(pixels=_pixel_matrix(table), ids=ids, labels=labels, first_line=line)

    def _has_hex_cell(self, data: bytes) -> bool:
        """Whether a pixel or label cell is a hex number like 0xff, which pyarrow accepts.

        Only blocks that contain "0x" get here (e.g. IDs like 0x1f): the numeric cells are
        read again as text, which costs about one more parse of the block.
        """
        read, parse, _ = self._options
        columns = [c for c in self.header if c != "ID"]
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()), include_columns=columns
        )
        table = pacsv.read_csv(io.BytesIO(data), read, parse, convert)
        return any(
            pc.any(pc.match_substring(table.column(c), "x", ignore_case=True)).as_py()
            for c in columns
        )


class CsvReader:
    """Iterate over `Chunk`s of an fcls CSV file in constant memory."""

    def __init__(
        self,
        src: str | Path | BinaryIO,
        kind: Kind = "eval",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        limit: int | None = None,
        use_threads: bool = True,
        name: str | None = None,
        first_line: int = 2,
    ) -> None:
        self.src, self.kind, self.chunk_bytes, self.limit = src, kind, chunk_bytes, limit
        self.name = name or source_name(src)
        # file line of the first row (a byte range of a file starts later)
        self.first_line = first_line
        self.use_threads = use_threads
        self.header: list[str] = []

    def __iter__(self) -> Iterator[Chunk]:
        stream, owned = open_source(self.src)
        try:
            yield from self._chunks(stream)
        finally:
            if owned:
                stream.close()

    def _read_header(self, stream: BinaryIO) -> bytes:
        """Parse and check the header line; return the bytes read past it."""
        buf = b""
        while b"\n" not in buf:
            if len(buf) > MAX_LINE_BYTES:
                raise DataError(self.name, f"header: {_too_long()}", 1)
            more = read_block(stream, 1 << 16, self.name, 1)
            if not more:
                break
            buf += more
        if not buf.strip():
            raise DataError(self.name, "empty file (no header line)", 1)
        head, newline, rest = buf.partition(b"\n")
        self.header = parse_header_line(head, self.kind, self.name, bool(newline))
        return rest

    def _chunks(self, stream: BinaryIO) -> Iterator[Chunk]:
        carry = self._read_header(stream)
        parser = BlockParser(self.header, self.kind, self.name, self.use_threads)
        line = self.first_line  # file line of the first byte in `carry`
        remaining = self.limit
        while remaining is None or remaining > 0:
            if len(carry) > MAX_LINE_BYTES and b"\n" not in carry:
                raise DataError(self.name, _too_long(), line)  # before reading any more of it
            more = read_block(stream, self.chunk_bytes, self.name, line)
            buf = carry + more
            if more:
                cut = buf.rfind(b"\n") + 1
                if cut == 0:  # one row longer than the block: read on, up to MAX_LINE_BYTES
                    carry = buf
                    continue
                buf, carry = buf[:cut], buf[cut:]
            else:
                carry = b""
            chunk = parser.parse(buf, line)
            line += count_lines(buf)
            if chunk is not None:
                if remaining is not None:
                    chunk = _head(chunk, remaining)
                    remaining -= len(chunk)
                yield chunk
            if not more:
                return


def _pixel_matrix(table: pa.Table) -> np.ndarray:
    """(n, 1024) uint8 filled column by column from the arrow buffers (no nulls by construction).

    Viewing each column's data buffer with np.frombuffer is ~8x faster than
    np.stack(column.to_numpy()), which made this copy the reader's bottleneck.
    """
    out = np.empty((table.num_rows, N_PIXELS), np.uint8)
    for j, name in enumerate(PIXEL_COLUMNS):
        row = 0
        for arr in table.column(name).chunks:
            n = len(arr)
            out[row : row + n, j] = np.frombuffer(arr.buffers()[1], np.uint8, n, arr.offset)
            row += n
    return out


def _head(chunk: Chunk, n: int) -> Chunk:
    if len(chunk) <= n:
        return chunk
    return Chunk(
        pixels=chunk.pixels[:n],
        ids=None if chunk.ids is None else chunk.ids[:n],
        labels=None if chunk.labels is None else chunk.labels[:n],
        first_line=chunk.first_line,
    )


def read_header(src: str | Path | BinaryIO, kind: Kind = "eval") -> list[str]:
    """Read and validate only the header of a CSV file."""
    reader = CsvReader(src, kind)
    stream, owned = open_source(src)
    try:
        reader._read_header(stream)
    finally:
        if owned:
            stream.close()
    return reader.header


def read_train_csv(
    src: str | Path | BinaryIO, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole `pix1..pix1024,label` file into (N, 1024) uint8 pixels and (N,) int64 labels."""
    chunks = list(CsvReader(src, "train", limit=limit))
    if not chunks:
        raise DataError(source_name(src), "no data rows after the header", 2)
    pixels = np.concatenate([c.pixels for c in chunks])
    labels = np.concatenate([c.labels for c in chunks if c.labels is not None])
    return pixels, labels


def write_eval_csv(path: Path, pixels: np.ndarray, ids: pa.Array | None = None) -> Path:
    """Write (n, 1024) uint8 rows as an `ID,pix1..pix1024` file (IDs 0..n-1 by default), atomically."""
    columns = {"ID": ids if ids is not None else pa.array(np.arange(len(pixels), dtype=np.int64))}
    columns.update({name: pa.array(pixels[:, j]) for j, name in enumerate(PIXEL_COLUMNS)})
    with atomic_file(path) as f:
        f.write((",".join(["ID", *PIXEL_COLUMNS]) + "\n").encode())
        with output_errors(path):
            pacsv.write_csv(pa.table(columns), f.raw, pacsv.WriteOptions(include_header=False))
    return path
