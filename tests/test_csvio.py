"""fcls.infer.csvio: the streaming, validated CSV reader shared by train and infer."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import deadline, write_eval_csv, write_train_csv

from fcls.infer.common.errors import DataError
from fcls.infer.common.spec import DEFAULT_SPEC, number_names
from fcls.infer.formats.csvfile import DEFAULT_CHUNK_BYTES, CsvReader, read_header
from fcls.infer.formats.csvgrammar import MAX_LINE_BYTES
from fcls.infer.formats.sources import read_train

PIX = ",".join(f"pix{i}" for i in range(1, 1025))


@pytest.fixture
def rng_pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(37, 1024), dtype=np.uint8)


def test_train_roundtrip_and_limit(tmp_path, rng_pixels):
    labels = np.arange(37) % 10
    path = write_train_csv(tmp_path / "t.csv", rng_pixels, labels)
    pixels, got = read_train(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (37, 1024)
    np.testing.assert_array_equal(pixels, rng_pixels)
    np.testing.assert_array_equal(got, labels)
    assert got.dtype == np.int64
    pixels, got = read_train(path, limit=5)
    assert pixels.shape == (5, 1024) and got.tolist() == labels[:5].tolist()


def test_chunks_preserve_order_ids_and_lines(tmp_path, rng_pixels):
    ids = [f"id-{i}" for i in range(37)]
    path = write_eval_csv(tmp_path / "e.csv", rng_pixels, ids)
    chunks = list(CsvReader(path, "unlabelled", chunk_bytes=5000))  # ~1-2 rows per chunk
    assert len(chunks) > 10
    np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), rng_pixels)
    assert [s for c in chunks for s in c.ids.to_pylist()] == ids
    # each chunk starts at the file line of its first row (header is line 1, no blank lines)
    starts = np.cumsum([0] + [len(c) for c in chunks[:-1]]) + 2
    assert [c.start for c in chunks] == starts.tolist()


def test_first_line_counts_blank_lines_and_crlf(tmp_path, rng_pixels):
    rows = write_eval_csv(tmp_path / "e.csv", rng_pixels).read_bytes().splitlines()
    out, line_of = [rows[0] + b"\n"], []  # line_of[i]: file line of data row i
    for i, row in enumerate(rows[1:]):
        out.append(b"\n" * (i % 3) + b"\r\n" * (i % 2))  # 0-3 empty lines, LF and CRLF
        line_of.append(sum(part.count(b"\n") for part in out) + 1)
        out.append(row + (b"\r\n" if i % 4 else b"\n"))
    chunks = list(CsvReader(io.BytesIO(b"".join(out)), "unlabelled", chunk_bytes=5000))
    assert len(chunks) > 5
    first_row = np.cumsum([0] + [len(c) for c in chunks[:-1]])
    assert [c.start for c in chunks] == [line_of[i] for i in first_row]
    np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), rng_pixels)


def test_error_in_third_chunk_names_its_line(tmp_path, rng_pixels):
    path = write_eval_csv(tmp_path / "e.csv", rng_pixels)
    starts = [c.start for c in CsvReader(path, "unlabelled", chunk_bytes=8000)]
    assert len(starts) > 4
    bad_line = starts[2] + 1  # the second row of the third chunk
    lines = path.read_bytes().split(b"\n")
    lines[bad_line - 1] = lines[bad_line - 1].replace(b",", b",0x1f,", 1).rsplit(b",", 1)[0]
    path.write_bytes(b"\n".join(lines))
    seen = []
    with pytest.raises(DataError) as info:
        for chunk in CsvReader(path, "unlabelled", chunk_bytes=8000):
            seen.append(chunk.start)
    assert seen == starts[:2]
    assert (info.value.line, info.value.column) == (bad_line, "pix1")
    assert "'0x1f' is not an integer" in str(info.value)


def test_bom_crlf_gzip_and_stream(tmp_path, rng_pixels):
    plain = write_eval_csv(tmp_path / "e.csv", rng_pixels).read_bytes()
    crlf = b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")
    gz = tmp_path / "e.csv.gz"
    gz.write_bytes(gzip.compress(crlf))
    for src in (gz, io.BytesIO(crlf)):
        chunks = list(CsvReader(src, "unlabelled"))
        np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), rng_pixels)
        assert chunks[0].ids.to_pylist()[:2] == ["0", "1"]


def test_header_only_yields_nothing(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("ID," + PIX + "\n")
    assert list(CsvReader(path, "unlabelled")) == []
    assert read_header(path)[0] == "ID"


def _bad(tmp_path: Path, text: str, name: str = "bad.csv", **options: Any) -> DataError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as info:
        for _ in CsvReader(path, "unlabelled" if text.startswith("ID") else "labelled", **options):
            pass
    return info.value


def _row(values: list[str], prefix: str = "") -> str:
    return prefix + ",".join(values) + "\n"


ZEROS = ["0"] * 1024


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("256", "pixel 256 is out of range 0..255"),
        ("-1", "is not an integer"),
        ("2.5", "is not an integer"),
        ("NaN", "is not an integer"),
        ("", "empty pixel value"),
    ],
)
def test_bad_pixel_names_line_and_column(tmp_path, cell, message):
    bad = list(ZEROS)
    bad[99] = cell
    text = "ID," + PIX + "\n" + _row(ZEROS, "a,") + _row(ZEROS, "b,") + _row(bad, "c,")
    err = _bad(tmp_path, text)
    assert (err.line, err.column) == (4, "pix100")
    assert message in str(err) and "bad.csv:4 column pix100" in str(err)


def test_label_not_a_model_class(tmp_path):
    text = PIX + ",label\n" + _row([*ZEROS, "3"]) + _row([*ZEROS, "10"])
    err = _bad(tmp_path, text, classes=number_names(10))
    assert (err.line, err.column) == (3, "label")
    assert "label '10' is not one of the model's 10 classes (0, 1, 2, 3, 4, ..., 9)" in str(err)
    # without a model's classes, 10 is a label like any other (training finds the classes)
    _, labels = read_train(tmp_path / "bad.csv")
    assert labels.tolist() == [3, 10] and labels.dtype == np.int64


def test_ragged_row(tmp_path):
    text = "ID," + PIX + "\n" + _row(ZEROS, "a,") + _row(ZEROS[:-3], "b,")
    err = _bad(tmp_path, text)
    assert err.line == 3 and "expected 1025 fields, got 1022" in str(err)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("pix1,pix2,label", "2 pixel columns (pix1..pix2), the model takes 1024 (32x32x1)"),
        (
            "ID," + PIX.replace("pix7,", ""),
            "1023 of 1024 pixel columns pix1..pix1024 (missing pix7)",
        ),
        ("ID," + PIX + ",extra", "unexpected column 'extra'"),
        ("Id," + PIX, "missing ID column"),
        ("ID,id," + PIX, "both an ID and an id column"),
        (PIX + ",label,label", "duplicate column 'label'"),
        ("label,pix1,pixel2", "pixel columns mix the prefixes pix and pixel (pix1, pixel2)"),
        ("label,pix0,pix2", "2 of 3 pixel columns pix0..pix2 (missing pix1)"),
        ("label,pix2,pix3", "2 of 3 pixel columns pix1..pix3 (missing pix1)"),
        ("label", "no pixel columns"),
        ("ID,label," + PIX, "unexpected column 'label'"),
    ],
)
def test_bad_header(tmp_path, header, message):
    kind = "unlabelled" if "ID" in header.upper().split(",")[0] else "labelled"
    path = tmp_path / "h.csv"
    path.write_text(header + "\n")
    with pytest.raises(DataError, match=re.escape(message)) as info:
        list(CsvReader(path, kind, pixels=DEFAULT_SPEC))
    assert info.value.line == 1 and "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}:1")


def test_empty_missing_and_truncated_gzip(tmp_path, rng_pixels):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        list(CsvReader(empty))
    with pytest.raises(DataError, match="no such file"):
        list(CsvReader(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="no data rows"):
        read_train(_header_only(tmp_path))
    data = gzip.compress(write_eval_csv(tmp_path / "e.csv", rng_pixels).read_bytes())
    gz = tmp_path / "cut.csv.gz"
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated gzip"):
        list(CsvReader(gz))


def _header_only(tmp_path: Path) -> Path:
    path = tmp_path / "ho.csv"
    path.write_text(PIX + ",label\n")
    return path


def _errors(src: io.BytesIO | Path, kind: str = "unlabelled", chunk_bytes: int = 5000) -> DataError:
    with deadline(20), pytest.raises(DataError) as info:
        for _ in CsvReader(src, kind, chunk_bytes=chunk_bytes):  # type: ignore[arg-type]
            pass
    return info.value


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".bin"])
def test_random_bytes_give_a_one_line_data_error(tmp_path, seed, suffix):
    rng = np.random.default_rng(seed)
    path = tmp_path / f"random{suffix}"
    path.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 200_000)), dtype=np.uint8))
    err = _errors(path, "unlabelled" if seed % 2 else "labelled")
    assert "\n" not in str(err) and str(err).startswith(str(path))


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (b"ID,pix1\rpix2", "carriage return"),
        (b"ID,pix1\x00", "NUL byte"),
        (b"ID,pix\xff1", "not UTF-8 text (byte 0xff at byte 7 of the line)"),
        (b'ID,"pix1,pix2', "quoted field not closed"),
        (b"ID,pix1\x0b", "unexpected column 'pix1\\x0b'"),
    ],
)
def test_binary_header_is_a_data_error(first, message):
    err = _errors(io.BytesIO(first + b"\n" + b"0," * 1024 + b"0\n"))
    assert err.line == 1 and message in str(err)


def _eval_text(rows: list[list[str]], ids: list[str] | None = None) -> bytes:
    ids = ids or [str(i) for i in range(len(rows))]
    body = "".join(_row(r, f"{i},") for i, r in zip(ids, rows))
    return ("ID," + PIX + "\n" + body).encode()


def _with(cell: str, col: int = 99) -> list[str]:
    row = list(ZEROS)
    row[col] = cell
    return row


@pytest.mark.parametrize(
    "cell", ["0xff", "0XFF", "0x1", "+5", "-0", "1e2", "5.0", "\x0b5", "5\x0c", "\xa05", "٥", "5 5"]
)
def test_grammar_rejects_what_pyarrow_would_take_or_python_would_strip(cell):
    err = _errors(io.BytesIO(_eval_text([ZEROS, ZEROS, _with(cell)])))
    assert (err.line, err.column) == (4, "pix100") and "is not an integer in 0..255" in str(err)


def test_grammar_accepts_spaces_tabs_leading_zeros_and_quotes():
    cells = [" 7", "7\t", "\t 007 ", '"8"', '" 9 "', "0000000000255", '"1"2']
    rows = [_with(c, col) for col, c in enumerate(cells)]
    ids = ['"q,""x"""', "0x1f", "a\x0bb", "\u2028", "\x1c", " sp ", "\ufeffbom"]
    chunks = list(CsvReader(io.BytesIO(_eval_text(rows, ids)), "unlabelled", chunk_bytes=3000))
    pixels = np.concatenate([c.pixels for c in chunks])
    assert [pixels[i, i] for i in range(len(cells))] == [7, 7, 7, 8, 9, 255, 12]
    assert [s for c in chunks for s in c.ids.to_pylist()] == [
        'q,"x"',
        "0x1f",
        "a\x0bb",
        "\u2028",
        "\x1c",
        " sp ",
        "\ufeffbom",
    ]


def test_hex_label_is_not_a_class(tmp_path):
    text = PIX + ",label\n" + _row([*ZEROS, "3"]) + _row([*ZEROS, "0x3"])
    err = _bad(tmp_path, text, classes=number_names(10))
    assert (err.line, err.column) == (3, "label") and "label '0x3' is not one of" in str(err)


def test_vertical_tab_and_line_separators_do_not_shift_line_numbers():
    # \x0b, \x1c and U+2028 are line breaks for str.splitlines(), not for the file
    ids = ["a\x0bb", "c\x1cd", "e\u2028f", "g\x85h", "bad"]
    rows = [ZEROS, ZEROS, ZEROS, ZEROS, _with("5\x0b", 3)]
    err = _errors(io.BytesIO(_eval_text(rows, ids)), chunk_bytes=1 << 20)
    assert (err.line, err.column) == (6, "pix4")


@pytest.mark.parametrize(
    ("tail", "line", "message"),
    [
        (b"\r\r\n", 3, "carriage return"),  # a stray \r before CRLF
        (b"\n\r", 4, "carriage return"),  # a lone \r at the end of the file
        (b"\n   \n", 4, "expected 1025 fields, got 1"),  # spaces are a row, not a blank line
        (b"\n\x00\n", 4, "NUL byte"),
        (b"\n1,\xc3(" + b",0" * 1023 + b"\n", 4, "not UTF-8 text"),
        (b'\n"open,' + b"0," * 1023 + b"0\n", 4, "quoted field not closed"),
    ],
)
def test_byte_level_rules(tail, line, message):
    data = _eval_text([ZEROS, ZEROS])[:-1] + tail
    err = _errors(io.BytesIO(data), chunk_bytes=1 << 20)
    assert (err.line, err.column) == (line, None) and message in str(err)


def test_bom_at_the_start_of_a_block_stays_in_its_cell():
    # pyarrow drops a BOM at the start of its input, and the first row after the header
    # always starts a block: the BOM must stay part of that row's first cell
    bom = "\ufeff"
    train = PIX + ",label\n" + _row([*ZEROS, "1"], bom) + _row([*ZEROS, "1"]) * 3
    for chunk_bytes in (1000, 1 << 20):
        err = _errors(io.BytesIO(train.encode()), "labelled", chunk_bytes)
        assert (err.line, err.column) == (2, "pix1")
    chunks = list(CsvReader(io.BytesIO(_eval_text([ZEROS, ZEROS], [bom + "a", "b"]))))
    assert chunks[0].ids.to_pylist() == [bom + "a", "b"]


def test_quoted_id_across_lines_is_refused():
    data = _eval_text([ZEROS, ZEROS], ['"a', 'b"'])
    err = _errors(io.BytesIO(data), chunk_bytes=1 << 20)
    assert (err.line, err.column) == (2, None) and "quoted field not closed" in str(err)


class Endless(io.RawIOBase):
    """An endless stream of `fill` bytes that counts what was read."""

    def __init__(self, prefix: bytes, fill: bytes = b"7") -> None:
        self.prefix, self.fill, self.served = prefix, fill, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = len(b)
        data = (self.prefix + self.fill * n)[:n]
        self.prefix = self.prefix[n:]
        b[:n] = data
        self.served += n
        return n


@pytest.mark.parametrize("chunk_bytes", [1000, 1 << 20, DEFAULT_CHUNK_BYTES])
def test_endless_line_fails_fast_in_bounded_memory(chunk_bytes):
    stream = Endless(("ID," + PIX + "\n" + _row(ZEROS, "1,") + "x,").encode())
    err = _errors(io.BufferedReader(stream), chunk_bytes=chunk_bytes)  # type: ignore[arg-type]
    assert err.line == 3 and f"line longer than {MAX_LINE_BYTES} bytes" in str(err)
    assert stream.served <= MAX_LINE_BYTES + chunk_bytes + (1 << 20)


def test_endless_header_fails_fast():
    stream = Endless(b"ID,pix1", b"\x00")
    err = _errors(io.BufferedReader(stream))  # type: ignore[arg-type]
    assert err.line == 1 and "header: line longer than" in str(err)
    assert stream.served <= MAX_LINE_BYTES + (1 << 17)


def test_line_length_limit_is_exact():
    row = "," + ",".join(ZEROS) + "\n"
    room = MAX_LINE_BYTES - len(row) + 1  # an ID of `room` bytes makes the line exactly the limit
    head = ("ID," + PIX + "\n").encode()
    ok = head + ("a" * room + row).encode()
    assert [len(c) for c in CsvReader(io.BytesIO(ok), "unlabelled", chunk_bytes=1 << 16)] == [1]
    for chunk_bytes in (1 << 16, DEFAULT_CHUNK_BYTES):
        data = head + ("a" + row).encode() + ("a" * (room + 1) + row).encode()
        err = _errors(io.BytesIO(data), chunk_bytes=chunk_bytes)
        assert err.line == 3 and "line longer than" in str(err)


def test_huge_numeric_cells_are_judged_without_int_overflow():
    # int() refuses strings over 4300 digits; the grammar allows any number of leading zeros
    rows = [_with("0" * 5000 + "17"), _with("9" * 5000), _with("x" * 5000)]
    chunks = list(CsvReader(io.BytesIO(_eval_text(rows[:1]))))
    assert chunks[0].pixels[0, 99] == 17
    err = _errors(io.BytesIO(_eval_text(rows[:2])), chunk_bytes=1 << 20)
    assert (err.line, err.column) == (3, "pix100") and "(5000 digits) is out of range" in str(err)
    assert len(str(err)) < 200
    err = _errors(io.BytesIO(_eval_text([ZEROS, rows[2]])), chunk_bytes=1 << 20)
    assert (err.line, err.column) == (3, "pix100") and len(str(err)) < 200


@pytest.mark.parametrize(
    ("id_text", "message"), [("a\x00b", "NUL byte"), ("a\rb", "carriage return")]
)
def test_ids_pyarrow_would_take_are_refused(id_text, message):
    data = _eval_text([ZEROS, ZEROS], ["ok", id_text])
    err = _errors(io.BytesIO(data), chunk_bytes=1 << 20)
    assert (err.line, err.column) == (3, None) and message in str(err)


@pytest.mark.parametrize(
    ("body", "line"), [(b"\t\n", 2), (b" \r\n", 2), (b"\r\r\n", 2), (b"\n\n  ", 4)]
)
def test_a_block_of_whitespace_is_not_blank(body, line):
    err = _errors(io.BytesIO(("ID," + PIX + "\n").encode() + body))
    assert (err.line, err.column) == (line, None)


def test_fast_path_reads_plain_files_without_pyarrow(tmp_path, rng_pixels, monkeypatch):
    """The common shapes (LF or CRLF, IDs of any text, train with the label anywhere, pixel
    columns in another order) go through the numpy path; pyarrow is not called."""
    from fcls.infer.formats import csvfile

    def no_arrow(self, buf, line):
        raise AssertionError(f"pyarrow path used for the block at line {line}")

    ids = [f"img_{i:05d}-é" for i in range(37)]  # letters, 4+ digit runs, UTF-8
    path = write_eval_csv(tmp_path / "e.csv", rng_pixels, ids)
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n").rstrip(b"\r\n"))  # no final EOL
    labels = np.arange(37) % 10
    train = write_train_csv(tmp_path / "t.csv", rng_pixels, labels)
    head, _, body = train.read_bytes().partition(b"\n")
    cols = head.split(b",")
    order = [1024, *range(1023, -1, -1)]  # label first, pixels reversed
    rows = [r.split(b",") for r in body.splitlines()]
    moved = tmp_path / "moved.csv"
    moved.write_bytes(b"\n".join(b",".join(r[i] for i in order) for r in [cols, *rows]) + b"\n")
    monkeypatch.setattr(csvfile.BlockParser, "_parse_arrow", no_arrow)
    for src in (path, crlf):
        chunks = list(CsvReader(src, "unlabelled", chunk_bytes=20_000))
        np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), rng_pixels)
        assert [s for c in chunks for s in c.ids.to_pylist()] == ids
    for src in (train, moved):
        pixels, got = read_train(src)
        np.testing.assert_array_equal(pixels, rng_pixels)
        np.testing.assert_array_equal(got, labels)


@pytest.mark.slow
def test_fast_path_equals_pyarrow_path_on_the_real_files(shared_data, monkeypatch):
    """The real Fashion-MNIST files (evaluate whole, train's first 10,000 rows): the numpy
    path's arrays are the pyarrow path's."""
    from fcls.infer.formats import csvfile

    for name, kind, rows in (
        ("evaluate.csv.gz", "unlabelled", None),
        ("train.csv.gz", "labelled", 10_000),
    ):
        fast = list(CsvReader(shared_data / name, kind, limit=rows))
        with monkeypatch.context() as m:
            m.setattr(csvfile, "fast_layout", lambda columns, classes=None: None)
            slow = list(CsvReader(shared_data / name, kind, limit=rows))
        assert [len(c) for c in fast] == [len(c) for c in slow]
        for a, b in zip(fast, slow):
            np.testing.assert_array_equal(a.pixels, b.pixels)
            assert a.start == b.start
            if kind == "unlabelled":
                assert a.ids.equals(b.ids)
            else:
                np.testing.assert_array_equal(a.labels, b.labels)
