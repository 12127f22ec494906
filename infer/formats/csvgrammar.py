"""The grammar of fcls CSV files (`ID,pix1..pixN` and `pix1..pixN,label` at any N).

Bytes are read in blocks that end on a line break. Each block goes through up to three
readers, each exact on what it accepts:

1. `fast_block`: vectorised numpy over the block's bytes, for the common shape (no quotes, no
   spaces, no CR other than CRLF, pixel cells of 1-3 digits, ID first). It either returns the
   arrays the grammar defines or declines (None) without judging the block.
2. pyarrow's CSV reader straight into uint8 columns (labels as text), plus the grammar's
   extra checks: it takes
   everything the grammar allows (quotes, spaces, leading zeros, any column order) and rejects
   the rest.
3. When pyarrow rejects a block, it is re-read line by line in Python only to name the exact
   line and column.

Rows are never looped over in Python on paths 1 and 2; path 1 is the faster of the two
(figures: bench/README.md).

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
- Header names are compared after removing surrounding ASCII spaces and tabs; which names
  are pixel, label and ID columns is `columns.resolve`'s rule (each name once, any order,
  nothing else).
- ID cells are any text, kept verbatim (not trimmed).
- Pixel cells (after unquoting) are `[ \\t]*[0-9]+[ \\t]*`: ASCII decimal digits, leading zeros
  allowed, only ASCII spaces and tabs around them, with a value in 0..255. Nothing else: no
  sign, no hex (pyarrow alone reads 0xff as 255), no decimal point or exponent, no other
  whitespace (\\v, \\f, NBSP), no empty cell.
- Label cells (after unquoting) are what `labelcells` says: any text, trimmed of spaces and
  tabs, not empty; with a model's classes, a class name or index.
- The first bad line in the file is reported. Within a line the checks run in this order:
  length, stray "\\r", NUL, UTF-8, unclosed quote, field count (these name no column), then
  the cells in the file's column order (these name the column).
"""

from __future__ import annotations

import re

from ..common.errors import DataError
from ..common.spec import Kind
from .columns import Columns, Expected, resolve
from .labelcells import Classes, label_problem

# A valid row is a few KiB of pixels plus its ID; a line longer than this is not data.
MAX_LINE_BYTES = 1 << 20

BOM = b"\xef\xbb\xbf"
_CELL = re.compile(r"[ \t]*([0-9]+)[ \t]*")  # pixel and label cells, matched in full


def too_long() -> str:
    return f"line longer than {MAX_LINE_BYTES} bytes (not an fcls CSV row)"


def _line_text(raw: bytes, terminated: bool) -> str:
    """A line's text (raw is without its b"\\n"), or raise ValueError saying which byte rule it breaks."""
    if len(raw) > MAX_LINE_BYTES:
        raise ValueError(too_long())
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


def roles(columns: Columns) -> list[str]:
    """What each header position holds: "id", "label" or "pixel" (a CSV has nothing else)."""
    out = ["pixel"] * len(columns.names)
    if columns.id is not None:
        out[columns.id] = "id"
    if columns.label is not None:
        out[columns.label] = "label"
    return out


def _cell_problem(value: str, role: str, classes: Classes) -> str | None:
    """Why a cell breaks the grammar, or None: pixels are integers 0..255, labels as
    `labelcells` says, IDs any text."""
    if role == "id":
        return None
    if role == "label":
        return label_problem(value, classes)
    match = _CELL.fullmatch(value)
    if match is None:
        if value.strip(" \t") == "":
            return "empty pixel value"
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"pixel {shown!r} is not an integer in 0..255 (decimal digits only)"
    digits = match.group(1).lstrip("0") or "0"  # int() of a huge string would raise
    if len(digits) > 3 or int(digits) > 255:
        shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
        return f"pixel {shown} is out of range 0..255"
    return None


def _row_problem(
    raw: bytes, terminated: bool, header: list[str], kinds: list[str], classes: Classes
) -> tuple[str, str | None] | None:
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
    for col, role, value in zip(header, kinds, row):
        problem = _cell_problem(value, role, classes)
        if problem:
            return problem, col
    return None


def diagnose(
    buf: bytes, first_line: int, columns: Columns, name: str, fallback: str, classes: Classes = None
) -> DataError:
    """Re-read a rejected block line by line (split at b"\\n" only) to find the first bad row."""
    start, line = 0, first_line
    header, kinds = list(columns.names), roles(columns)
    while start < len(buf):
        end = buf.find(b"\n", start)
        terminated = end >= 0
        end = end if terminated else len(buf)
        problem = _row_problem(buf[start:end], terminated, header, kinds, classes)
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

    One memchr per line is much cheaper than counting b"\\r\\n" in a CRLF file; past a few
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


def breaks_byte_rules(buf: bytes) -> bool:
    """Whether the block has a NUL, a stray "\\r" or an overlong line (pyarrow takes all three)."""
    return b"\0" in buf or _has_long_line(buf) or _has_stray_cr(buf)


def is_blank(buf: bytes) -> bool:
    """Whether the block holds only empty lines (no stray "\\r")."""
    return not buf.strip(b"\r\n") and not buf.replace(b"\r\n", b"\n").strip(b"\n")


def parse_header_line(
    raw: bytes, kind: Kind, name: str, terminated: bool = True, pixels: Expected = None
) -> list[str]:
    """Check the header line (`raw` without its b"\\n") and return its column names."""
    return list(header_columns(raw, kind, name, terminated, pixels).names)


def header_names(raw: bytes, name: str, terminated: bool = True) -> list[str]:
    """The column names of a header line, unchecked but for its bytes and quotes."""
    try:
        text = _line_text(raw, terminated).removeprefix("\ufeff")
    except ValueError as e:
        raise DataError(name, f"header: {e}", 1) from None
    row = _split_fields(text)
    if row is None:
        raise DataError(name, "header: quoted field not closed on its line", 1)
    return [c.strip(" \t") for c in row]


def header_columns(
    raw: bytes, kind: Kind, name: str, terminated: bool = True, pixels: Expected = None
) -> Columns:
    """The columns of a header line read as `kind` (`columns.resolve`), or a DataError."""
    return resolve(header_names(raw, name, terminated), kind, name, pixels, line=1)
