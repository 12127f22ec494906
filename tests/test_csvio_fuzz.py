"""Property test of fcls.infer.csvio against an independent reference parse.

Files are generated from valid rows plus mutations (bad cells of every kind, hex, signs,
floats, spaces, quoting, CRLF, BOM, blank lines, ragged rows, huge fields, NUL and non-UTF-8
bytes, column reordering, truncated gzip). The reference below uses only the stdlib `csv`
module and plain int checks, never fcls code. The property: either both accept with identical
pixels, IDs and labels, or fcls raises DataError naming the first bad line (and column where
there is one) that the reference finds; never any other exception.

The default suite runs `test_reader_matches_reference` (300 examples, derandomized).
`test_reader_matches_reference_fuzz` runs 5,000 fresh examples; it carries the `fuzz` marker,
which pyproject's addopts leave out: run it with `pytest -m fuzz tests/test_csvio_fuzz.py`.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fcls.infer.common.errors import DataError
from fcls.infer.formats import csvfast, csvfile, csvgrammar

PIXELS = [f"pix{i}" for i in range(1, 1025)]
COLUMNS = {"unlabelled": ["ID", *PIXELS], "labelled": [*PIXELS, "label"]}
LIMIT = 20_000  # MAX_LINE_BYTES during these tests, so that overlong lines stay small
CLASSES = tuple(str(i) for i in range(10))  # a model's classes: labels 0..9


def _line_cap(limit: int) -> contextlib.ExitStack:
    """MAX_LINE_BYTES set to `limit` in every CSV module that reads it."""
    stack = contextlib.ExitStack()
    for module in (csvgrammar, csvfast, csvfile):
        stack.enter_context(mock.patch.object(module, "MAX_LINE_BYTES", limit))
    return stack


BOM = b"\xef\xbb\xbf"

BAD_CELLS = [
    *["0xff", "0XFF", "0x1", "0x", "0x100", "+5", "-0", "-1", "1e2", "5.0", ".5", "5."],
    *["", " ", "\t", "256", "999", "00256", "10", "NaN", "inf", "1_0", "5 5", "٥", "²"],
    *["5\x0b", "\x0c5", "\xa05", "5\u2028", "\u3000", "\ufeff5", "\x00", "\r5", "5\r", "5\n"],
    *['"5', '5"', '"5"x', '""', '"', '" 5 "', '"0x1"', '"5""', '"5","', "5,", ",5"],
]
VALID_STYLES = ["{}", " {}", "{}\t", "\t {} ", "00{}", '"{}"', '" {}"', '"{}" ', '"{}"0']
ID_CHARS = st.sampled_from(list('ab0x19 ,"\t\x0b\x1c\u2028\ufeffé€'))  # all valid
INSERTS = [
    *[b"\x00", b"\r", b"\n", b"\r\n", b'"', b",", b" ", b"\t", b"0x", b"x", b"-"],
    *[b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", BOM],
    *[b"\x0b", "\u2028".encode(), b"\x1c", b"\n\n", b"  \n"],
]


@dataclass(frozen=True)
class Case:
    data: bytes  # the uncompressed file
    kind: str
    chunk_bytes: int
    gzip: str  # "no", "ok" or "cut"
    cut: int  # bytes of the compressed file kept when gzip == "cut"
    as_stream: bool
    pixels: int | None = 1024  # what the reader is told: a model's pixels per row
    classes: tuple[str, ...] | None = CLASSES  # and its classes (labels 0..9)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


MUTATIONS = [
    *["cell", "hex", "text", "ragged", "huge", "bom", "id"],  # in the table of cells
    *["blank", "tail", "insert", "delete", "binary"],  # in the lines and bytes
]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["unlabelled", "labelled"]))
    chunk_bytes = draw(st.sampled_from([256, 1000, 3000, 9000, 1 << 16, 1 << 20]))
    gz = draw(st.sampled_from(["no"] * 6 + ["ok", "cut"]))
    cut = draw(st.integers(0, 4000))
    as_stream = draw(st.booleans())
    # about 30% of the files are valid; the others get one to three mutations
    mutations = [
        draw(st.sampled_from(MUTATIONS))
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3])))
    ]
    if "binary" in mutations:  # an arbitrary byte string
        return Case(draw(st.binary(max_size=3000)), kind, chunk_bytes, gz, cut, as_stream)

    n_rows = draw(st.sampled_from([0, 1, 2, 2, 3, 3, 4, 5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    columns = list(COLUMNS[kind])
    for _ in range(draw(st.integers(0, 3))):  # reorder columns (any order is allowed)
        i, j = draw(st.integers(0, 1024)), draw(st.integers(0, 1024))
        columns[i], columns[j] = columns[j], columns[i]
    table: list[list[str]] = []
    for _ in range(n_rows):
        values = {c: str(v) for c, v in zip(PIXELS, rng.integers(0, 256, 1024))}
        values["label"] = str(rng.integers(0, 10))
        id_text = draw(st.text(ID_CHARS, max_size=6))
        values["ID"] = _quote(id_text) if any(c in id_text for c in ',"') else id_text
        table.append([values[c] for c in columns])
    for _ in range(draw(st.integers(0, 4))):  # valid spellings: spaces, zeros, quotes
        if table:
            r, c = draw(st.integers(0, n_rows - 1)), draw(st.integers(0, 1024))
            if columns[c] != "ID":
                table[r][c] = draw(st.sampled_from(VALID_STYLES)).format(table[r][c])

    for what in sorted(mutations, key=lambda m: m == "ragged"):  # rows keep 1025 cells till last
        if not table:
            break
        r = draw(st.integers(0, n_rows - 1))
        c = draw(st.integers(0, len(table[r]) - 1))
        if what == "cell":
            table[r][c] = draw(st.sampled_from(BAD_CELLS))
        elif what == "hex":
            table[r][c] = draw(st.sampled_from(["0x1", " 0xff", "0XA", '"0x0"', "0x00a"]))
        elif what == "text":
            table[r][c] = draw(st.text(st.sampled_from(list('0123456789 \t+-.xXe"')), max_size=5))
        elif what == "ragged":
            if draw(st.booleans()):
                del table[r][c]
            else:
                table[r].insert(c, "0")
        elif what == "bom":  # pyarrow drops a BOM at the start of its input
            r = 0 if draw(st.booleans()) else r
            table[r][0] = "\ufeff" + table[r][0]
        elif what == "id":  # an ID the grammar refuses, or a label out of range
            if kind == "unlabelled":
                bad_ids = ["a\x00b", "a\rb", '"open', '"a\nb"', "x\r"]
                table[r][columns.index("ID")] = draw(st.sampled_from(bad_ids))
            else:
                bad_labels = ["10", "0x5", "-1", "", "9.0", "00010"]
                table[r][columns.index("label")] = draw(st.sampled_from(bad_labels))
        else:  # a huge field: digits or an ID (valid if the line is not too long), or junk
            size = draw(st.integers(1000, 2 * LIMIT))
            if draw(st.booleans()):
                c = columns.index("ID") if kind == "unlabelled" else c
                table[r][c] = "0" * size + "7" if columns[c] != "ID" else "a" * size
            else:
                table[r][c] = draw(st.sampled_from(["a" * size, "9" * size]))

    names = list(columns)
    for _ in range(draw(st.integers(0, 2))):  # spaces and quotes around header names
        at = draw(st.integers(0, 1024))
        names[at] = draw(st.sampled_from([" {}", "{}\t", '"{}"', '" {}"'])).format(names[at])
    header = ",".join(names)
    newline = "\r\n" if draw(st.booleans()) else "\n"
    lines = [header, *(",".join(row) for row in table)]
    for _ in range(draw(st.integers(0, 2))):  # empty lines
        lines.insert(draw(st.integers(1, len(lines))), "")
    for _ in range(mutations.count("blank")):  # lines that only look empty
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(["\r", " ", "\t"])))
    end = "\r" if "tail" in mutations else draw(st.sampled_from([newline, ""]))
    data = (BOM if draw(st.booleans()) else b"") + (newline.join(lines) + end).encode()
    for what in mutations:
        if what in ("insert", "delete"):  # mostly in the rows
            at = draw(st.integers(0 if draw(st.integers(0, 4)) == 0 else len(header), len(data)))
            if what == "delete":
                data = data[:at] + data[at + draw(st.integers(1, 50)) :]
            else:
                data = data[:at] + draw(st.sampled_from(INSERTS)) + data[at:]
    return Case(data, kind, chunk_bytes, gz, cut, as_stream)


# ---------------------------------------------------------------- the reference parse


@dataclass(frozen=True)
class Bad:
    line: int
    column: str | None


@dataclass(frozen=True)
class Good:
    pixels: np.ndarray  # (n, P) uint8
    ids: list[str] | None
    labels: list[int | str] | None


def _text(raw: bytes, terminated: bool) -> str | None:
    """The line's text, or None when it breaks a byte rule (length, \\r, NUL, UTF-8)."""
    if len(raw) > LIMIT:
        return None
    if terminated and raw[-1:] == b"\r":
        raw = raw[:-1]
    if b"\r" in raw or b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _fields(text: str) -> list[str] | None:
    """Fields by the stdlib csv module; None when a quoted field does not close on the line."""
    row = next(csv.reader([text + "\n"]))
    return None if any("\n" in f for f in row) else row


def _number(value: str, top: int) -> int | None:
    digits = value.strip(" \t")
    if digits == "" or any(ch not in "0123456789" for ch in digits):
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 3 and int(digits) <= top else None


PIXEL_NAME = re.compile(r"(pix|pixel)(0|[1-9][0-9]*)")


def header_roles(header: list[str], kind: str, pixels: int | None) -> dict[str, str] | None:
    """name -> "id", "label" or the pixel's index as text, by the rules of formats.columns;
    None when the header breaks one (a duplicate, no or two keys, a stranger, a gap, mixed
    prefixes, another number of pixels than `pixels`)."""
    if len(set(header)) != len(header):
        return None
    keys = [n for n in header if n in (("ID", "id") if kind == "unlabelled" else ("label",))]
    if len(keys) != 1:
        return None
    found = {n: PIXEL_NAME.fullmatch(n) for n in header if n != keys[0]}
    if not found or None in found.values():
        return None
    prefixes = {m.group(1) for m in found.values() if m}
    numbers = sorted(int(m.group(2)) for m in found.values() if m)
    lo = numbers[0]
    if len(prefixes) != 1 or lo > 1 or numbers != list(range(lo, lo + len(numbers))):
        return None
    if pixels is not None and len(numbers) != pixels:
        return None
    roles = {n: str(int(m.group(2)) - lo) for n, m in found.items() if m}
    roles[keys[0]] = "id" if kind == "unlabelled" else "label"
    return roles


def label_value(cell: str, classes: tuple[str, ...] | None) -> int | str | None:
    """A label cell's value (an int, or a name without classes), or None when it is bad."""
    text = cell.strip(" \t")
    digits = text.isascii() and text.isdigit()
    number = text.lstrip("0") or "0"
    if classes is None:
        if not text or (digits and len(number) > 18):
            return None
        return int(number) if digits else text
    if text in classes:
        return classes.index(text)
    if digits and len(number) <= 18 and int(number) < len(classes):
        return int(number)
    return None


def reference(
    data: bytes,
    kind: str,
    partial_tail: bool = False,
    pixels: int | None = 1024,
    classes: tuple[str, ...] | None = CLASSES,
) -> Good | Bad | None:
    """Parse `data` as the grammar says; None when a truncated file ends before any verdict.

    partial_tail: the last line was cut short (truncated gzip), so only its length is known.
    """
    lines = data.split(b"\n")  # lines[i] is file line i + 1; the last one has no b"\n"
    last = len(lines) - 1
    if partial_tail and last == 0:
        return Bad(1, None) if len(lines[0]) > LIMIT else None
    head = _text(lines[0], last > 0)
    row = None if head is None else _fields(head.removeprefix("\ufeff"))
    header = None if row is None else [name.strip(" \t") for name in row]
    roles = None if header is None else header_roles(header, kind, pixels)
    if header is None or roles is None:
        return Bad(1, None)
    width = len(header) - 1
    ids: list[str] = []
    labels: list[int | str] = []
    rows: list[list[int]] = []
    for i in range(1, len(lines)):
        raw, terminated = lines[i], i < last
        if partial_tail and i == last:
            return Bad(i + 1, None) if len(raw) > LIMIT else None
        if raw == b"" or (terminated and raw == b"\r"):
            continue
        text = _text(raw, terminated)
        cells = None if text is None else _fields(text)
        if cells is None or len(cells) != len(header):
            return Bad(i + 1, None)
        pixel_row = [0] * width
        for name, value in zip(header, cells):
            role = roles[name]
            if role == "id":
                ids.append(value)
            elif role == "label":
                label = label_value(value, classes)
                if label is None:
                    return Bad(i + 1, name)
                labels.append(label)
            else:
                number = _number(value, 255)
                if number is None:
                    return Bad(i + 1, name)
                pixel_row[int(role)] = number
        rows.append(pixel_row)
    array = np.array(rows, np.uint8).reshape(-1, width)
    return Good(
        array, ids if kind == "unlabelled" else None, labels if kind == "labelled" else None
    )


# ---------------------------------------------------------------- the property


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(autouse=True, scope="module")
def _csv_field_limit() -> object:
    """The reference must read huge fields too (the csv module's own limit is 128 KiB)."""
    previous = csv.field_size_limit(1 << 24)
    yield
    csv.field_size_limit(previous)


def _read(case: Case, workdir: Path) -> Good:
    if case.gzip == "no":
        path = workdir / "case.csv"
        path.write_bytes(case.data)
        src: Path | io.BytesIO = io.BytesIO(case.data) if case.as_stream else path
    else:
        blob = gzip.compress(case.data, mtime=0)
        src = workdir / "case.csv.gz"
        src.write_bytes(blob[: case.cut] if case.gzip == "cut" else blob)
    reader = csvfile.CsvReader(
        src,  # type: ignore[arg-type]
        case.kind,  # type: ignore[arg-type]
        chunk_bytes=case.chunk_bytes,
        pixels=case.pixels,
        classes=case.classes,
    )
    chunks = list(reader)
    width = chunks[0].pixels.shape[1] if chunks else 0
    pixels = np.concatenate([c.pixels for c in chunks]) if chunks else np.empty((0, width))
    if case.kind == "unlabelled":
        return Good(pixels, [s for c in chunks for s in c.ids.to_pylist()], None)
    for c in chunks:  # int64 indices, or raw labels: int64 or text
        assert c.labels is not None and (c.labels.dtype == np.int64 or case.classes is None)
    return Good(
        pixels, None, [v if isinstance(v, str) else int(v) for c in chunks for v in c.labels]
    )


def check(case: Case, workdir: Path) -> None:
    """The property: the same rows as the reference, or a DataError at its first bad line."""
    expected: Good | Bad | None
    cut = case.gzip == "cut" and case.cut < len(gzip.compress(case.data, mtime=0))
    if cut and case.cut == 0:  # no bytes at all: gzip reads it as an empty file
        cut, expected = False, reference(b"", case.kind, False, case.pixels, case.classes)
    elif cut:
        blob = gzip.compress(case.data, mtime=0)[: case.cut]
        try:
            prefix = zlib.decompressobj(wbits=31).decompress(blob)
        except zlib.error:
            prefix = b""
        expected = reference(prefix, case.kind, True, case.pixels, case.classes)
    else:
        expected = reference(case.data, case.kind, False, case.pixels, case.classes)
    with _line_cap(LIMIT):
        try:
            got: Good | DataError = _read(case, workdir)
        except DataError as e:
            got = e
    # shown by --hypothesis-show-statistics: the mix of verdicts the examples reach
    if isinstance(got, Good):
        event(f"accepted ({'no rows' if len(got.pixels) == 0 else 'rows'})")
    else:
        where = "header" if got.line == 1 else "row, column" if got.column else "row"
        event(f"refused: {'gzip' if 'gzip' in got.reason else where}")
    if cut:  # a truncated gzip file is never accepted
        assert isinstance(got, DataError), "truncated gzip file accepted"
        if "gzip" in got.reason:
            assert expected is None or isinstance(expected, Bad)
            assert expected is None or (got.line is not None and got.line <= expected.line), got
            return
        assert isinstance(expected, Bad), f"fcls: {got}, reference found no error"
        assert (got.line, got.column if got.line != 1 else None) == (expected.line, expected.column)
        return
    if isinstance(expected, Good):
        assert isinstance(got, Good), f"fcls refused a valid file: {got}"
        if len(expected.pixels):
            np.testing.assert_array_equal(got.pixels, expected.pixels)
        assert len(got.pixels) == len(expected.pixels)
        assert got.ids == expected.ids
        # a chunk's raw labels are int64 or text (integers written as their number)
        texts = [str(v) for v in expected.labels or []]
        assert (got.labels is None) == (expected.labels is None)
        assert [str(v) for v in got.labels or []] == texts
        if case.classes is not None or all(isinstance(v, int) for v in expected.labels or []):
            assert got.labels == expected.labels
        return
    assert isinstance(got, DataError), f"fcls accepted a file bad at {expected}"
    assert "\n" not in str(got)
    # header errors (line 1) may name a column position; the reference does not
    assert (got.line, got.column if got.line != 1 else None) == (expected.line, expected.column), (
        str(got)
    )


COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=300, derandomize=True, **COMMON)
@given(case=cases())
def test_reader_matches_reference(case: Case, workdir: Path) -> None:
    check(case, workdir)


@pytest.mark.fuzz
@pytest.mark.slow
@settings(max_examples=5000, **COMMON)
@given(case=cases())
def test_reader_matches_reference_fuzz(case: Case, workdir: Path) -> None:
    check(case, workdir)


def test_reference_agrees_with_hand_checked_lines() -> None:
    """The reference itself: a few verdicts worked out by hand."""
    head = "ID," + ",".join(PIXELS)
    row = ",".join(["0"] * 1024)
    good = reference(f'{head}\n"a,""b""",{row}\n\r\nz, 7,{row[2:]}\r\n'.encode(), "unlabelled")
    assert isinstance(good, Good) and good.ids == ['a,"b"', "z"] and good.pixels[1, 0] == 7
    assert reference(f"{head}\nq,0x1,{row[2:]}\n".encode(), "unlabelled") == Bad(2, "pix1")
    assert reference(f"{head}\nq,{row}\r\r\n".encode(), "unlabelled") == Bad(2, None)
    assert reference(f'{head}\n"q,{row}\n'.encode(), "unlabelled") == Bad(2, None)
    assert reference(f"{head}\n\nq,{row},0\n".encode(), "unlabelled") == Bad(3, None)
    assert reference(f"{head}\nq,{row[:-1]}256\n".encode(), "unlabelled") == Bad(2, "pix1024")


# ------------------------------------------------- the fast path against the pyarrow path


def check_fast_path(case: Case) -> None:
    """`fast_block` either declines a block or returns exactly what the pyarrow path returns
    (which then must not refuse the block)."""
    head, newline, body = case.data.partition(b"\n")
    try:
        columns = csvgrammar.header_columns(head, case.kind, "f.csv", bool(newline), case.pixels)  # type: ignore[arg-type]
    except DataError:
        return
    parser = csvfile.BlockParser(columns, case.kind, "f.csv", classes=case.classes)  # type: ignore[arg-type]
    layout = csvfast.fast_layout(columns, case.classes)
    if layout is None or not body:
        event("fast path: never applies (ID not first, or no rows)")
        return
    with _line_cap(LIMIT):
        fast = csvfast.fast_block(body, layout, 2, csvfast.Scratch())
        if fast is None:
            event("fast path: declined")
            return
        event("fast path: taken")
        slow = parser._parse_arrow(body, 2)  # a DataError here fails the test
    np.testing.assert_array_equal(fast.pixels, slow.pixels)
    assert fast.pixels.dtype == np.uint8 and fast.start == slow.start
    if case.kind == "unlabelled":
        assert fast.ids is not None and slow.ids is not None
        assert fast.ids.type == slow.ids.type and fast.ids.to_pylist() == slow.ids.to_pylist()
    else:
        assert fast.labels is not None and slow.labels is not None
        assert fast.labels.dtype == slow.labels.dtype == np.int64
        np.testing.assert_array_equal(fast.labels, slow.labels)


# Edits at the fast path's edges: each keeps a block almost plain, so that most examples
# reach the numpy path and the rest are declined for one reason.
EDGE_CELLS = [
    *["0", "00", "000", "255", "256", "999", "0000", "0255", "1000", "9", "10", ""],
    *[" 5", "5 ", "\t5", '"5"', "0x5", "+5", "-5", "5.0", "5\r", "٥", "5\x00"],
]
EDGE_IDS = [
    *["1234567", "img_00001", "é€", "a b", "\t", "", 'a"b', '"a"', "\ufeff1", "x\r"],
    *["a\x00", "0x1f"],
]
EDGE_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\r", b"\r\n", b"\n", b"\n\n", b",", b",,"]


@st.composite
def plain_cases(draw: st.DrawFn) -> Case:
    """Files of plain digit cells (the fast path's shape) with up to two edge edits."""
    kind = draw(st.sampled_from(["unlabelled", "labelled"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    columns = list(COLUMNS[kind])
    if kind == "labelled" or draw(st.booleans()):  # ID stays first: the fast path's layout
        lo = 0 if kind == "labelled" else 1
        for _ in range(draw(st.integers(0, 2))):
            i, j = draw(st.integers(lo, 1024)), draw(st.integers(lo, 1024))
            columns[i], columns[j] = columns[j], columns[i]
    table = []
    for r in range(draw(st.integers(1, 4))):
        values = {c: str(v) for c, v in zip(PIXELS, rng.integers(0, 256, 1024))}
        values["label"], values["ID"] = str(rng.integers(0, 10)), str(r * 7919)
        table.append([values[c] for c in columns])
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        r, c = draw(st.integers(0, len(table) - 1)), draw(st.integers(0, 1024))
        pool = EDGE_IDS if columns[c] == "ID" else EDGE_CELLS
        table[r][c] = draw(st.sampled_from(pool))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    data = (newline.join([",".join(columns)] + [",".join(row) for row in table])).encode()
    data += draw(st.sampled_from([newline.encode(), b""]))
    if draw(st.integers(0, 3)) == 0:  # a byte-level edit in the rows
        start = len(",".join(columns))
        at = draw(st.integers(start, len(data)))
        data = data[:at] + draw(st.sampled_from(EDGE_BYTES)) + data[at:]
    return Case(data, kind, 1 << 20, "no", 0, False)


@settings(max_examples=300, derandomize=True, **COMMON)
@given(case=st.one_of(cases(), plain_cases()))
def test_fast_path_matches_pyarrow_path(case: Case) -> None:
    check_fast_path(case)


@pytest.mark.fuzz
@pytest.mark.slow
@settings(max_examples=5000, **COMMON)
@given(case=st.one_of(cases(), plain_cases()))
def test_fast_path_matches_pyarrow_path_fuzz(case: Case) -> None:
    check_fast_path(case)


@settings(max_examples=150, derandomize=True, **COMMON)
@given(case=plain_cases())
def test_reader_matches_reference_on_plain_files(case: Case, workdir: Path) -> None:
    """The whole reader on the fast path's shapes and edges, against the reference."""
    check(case, workdir)


# ------------------------------------------- other geometries, header resolution and labels

NAMES = ("bag", "shirt", "shoe")
LABEL_CELLS = [
    *["bag", "shoe", " shirt\t", '"bag"', '"a,b"', '"say ""x"""', "é", "0x3", "-1", "2.0"],
    *["0", "2", "007", "9", "10", "000000000000000000000000001", "9" * 19, "", " ", '""'],
]


@st.composite
def geometry_cases(draw: st.DrawFn) -> Case:
    """Rows of 1 to 784 pixels: pixN or pixelN from 0 or 1, the columns in any order, ID or
    id, label anywhere and of any text; read with or without a model's count and classes;
    headers with a gap, a duplicate, mixed prefixes or a stranger; bad cells."""
    kind = draw(st.sampled_from(["unlabelled", "labelled"]))
    p = draw(st.sampled_from([1, 2, 5, 12, 784]))
    prefix, first = draw(st.sampled_from(["pix", "pixel"])), draw(st.sampled_from([0, 1]))
    names = [f"{prefix}{first + j}" for j in range(p)]
    key = draw(st.sampled_from(["ID", "id"])) if kind == "unlabelled" else "label"
    names.insert(draw(st.sampled_from([0, 0, len(names), draw(st.integers(0, len(names)))])), key)
    if draw(st.booleans()):  # any column order
        names = draw(st.permutations(names))
    header = list(names)
    fault = draw(st.sampled_from([None] * 12 + ["gap", "dup", "mix", "stranger", "cell"]))
    at = draw(st.integers(0, len(header) - 1))
    if fault == "gap" and header[at] != key:
        del header[at]
    elif fault == "dup":
        header.insert(draw(st.integers(0, len(header))), header[at])
    elif fault == "mix" and header[at] != key:
        header[at] = header[at].replace(prefix, "pix" if prefix == "pixel" else "pixel", 1)
    elif fault == "stranger":
        header.insert(at, draw(st.sampled_from(["pix07", "Label", "ID2", "x", "label", "id"])))
    classes = draw(st.sampled_from([None, None, NAMES, CLASSES]))
    pixels = draw(st.sampled_from([None, p, p, p, p, p + 1]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    integers = draw(st.booleans())  # labels 0..2 (the fast path's), or names
    rows = []
    for r in range(draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8]))):
        values = {n: str(v) for n, v in zip(names, rng.integers(0, 256, len(names)))}
        label = str(rng.integers(0, 3)) if integers else draw(st.sampled_from(LABEL_CELLS[:8]))
        values[key] = label if kind == "labelled" else f"r{r}"
        if kind == "labelled" and draw(st.integers(0, 5)) == 0:
            values[key] = draw(st.sampled_from(LABEL_CELLS))
        rows.append([values.get(n, "0") for n in header])
    if fault == "cell" and rows:
        row = draw(st.sampled_from(rows))
        row[draw(st.integers(0, len(row) - 1))] = draw(st.sampled_from(["256", " 7", '"8"', "x"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    data = newline.join(",".join(r) for r in [header, *rows]) + newline
    chunk_bytes = draw(st.sampled_from([64, 3000, 1 << 20]))
    return Case(data.encode(), kind, chunk_bytes, "no", 0, False, pixels, classes)


@settings(max_examples=200, derandomize=True, **COMMON)
@given(case=geometry_cases())
def test_reader_matches_reference_at_any_geometry(case: Case, workdir: Path) -> None:
    """Column resolution and labels (raw, or a model's classes) against the reference."""
    check(case, workdir)


@settings(max_examples=150, derandomize=True, **COMMON)
@given(case=geometry_cases())
def test_fast_path_matches_pyarrow_path_at_any_geometry(case: Case) -> None:
    check_fast_path(case)
