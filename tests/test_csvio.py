"""fcls.infer.csvio: the streaming, validated CSV reader shared by train and infer."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import write_eval_csv, write_train_csv

from fcls.infer.csvio import CsvReader, read_header, read_train_csv
from fcls.infer.errors import DataError

PIX = ",".join(f"pix{i}" for i in range(1, 1025))


@pytest.fixture
def rng_pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(37, 1024), dtype=np.uint8)


def test_train_roundtrip_and_limit(tmp_path, rng_pixels):
    labels = np.arange(37) % 10
    path = write_train_csv(tmp_path / "t.csv", rng_pixels, labels)
    pixels, got = read_train_csv(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (37, 1024)
    np.testing.assert_array_equal(pixels, rng_pixels)
    np.testing.assert_array_equal(got, labels)
    assert got.dtype == np.int64
    pixels, got = read_train_csv(path, limit=5)
    assert pixels.shape == (5, 1024) and got.tolist() == labels[:5].tolist()


def test_chunks_preserve_order_ids_and_lines(tmp_path, rng_pixels):
    ids = [f"id-{i}" for i in range(37)]
    path = write_eval_csv(tmp_path / "e.csv", rng_pixels, ids)
    chunks = list(CsvReader(path, "eval", chunk_bytes=5000))  # ~1-2 rows per chunk
    assert len(chunks) > 10
    np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), rng_pixels)
    assert [s for c in chunks for s in c.ids.to_pylist()] == ids
    lines = [c.first_line for c in chunks]
    assert lines[0] == 2 and lines == sorted(lines)


def test_bom_crlf_gzip_and_stream(tmp_path, rng_pixels):
    plain = write_eval_csv(tmp_path / "e.csv", rng_pixels).read_bytes()
    crlf = b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")
    gz = tmp_path / "e.csv.gz"
    gz.write_bytes(gzip.compress(crlf))
    for src in (gz, io.BytesIO(crlf)):
        chunks = list(CsvReader(src, "eval"))
        np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), rng_pixels)
        assert chunks[0].ids.to_pylist()[:2] == ["0", "1"]


def test_header_only_yields_nothing(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("ID," + PIX + "\n")
    assert list(CsvReader(path, "eval")) == []
    assert read_header(path)[0] == "ID"


def _bad(tmp_path: Path, text: str, name: str = "bad.csv") -> DataError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as info:
        for _ in CsvReader(path, "eval" if text.startswith("ID") else "train"):
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


def test_label_out_of_range(tmp_path):
    text = PIX + ",label\n" + _row([*ZEROS, "3"]) + _row([*ZEROS, "10"])
    err = _bad(tmp_path, text)
    assert (err.line, err.column) == (3, "label") and "label 10 is out of range 0..9" in str(err)


def test_ragged_row(tmp_path):
    text = "ID," + PIX + "\n" + _row(ZEROS, "a,") + _row(ZEROS[:-3], "b,")
    err = _bad(tmp_path, text)
    assert err.line == 3 and "expected 1025 fields, got 1022" in str(err)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("pix1,pix2,label", "missing pix3"),
        ("ID," + PIX.replace("pix7,", ""), "1023 of 1024 pixel columns"),
        ("ID," + PIX + ",extra", "unexpected extra"),
        ("id," + PIX, "missing ID column"),
        (PIX + ",label,label", "duplicate column 'label'"),
    ],
)
def test_bad_header(tmp_path, header, message):
    kind = "eval" if "ID" in header.upper().split(",")[0] else "train"
    path = tmp_path / "h.csv"
    path.write_text(header + "\n")
    with pytest.raises(DataError, match=message) as info:
        list(CsvReader(path, kind))
    assert info.value.line == 1


def test_empty_missing_and_truncated_gzip(tmp_path, rng_pixels):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        list(CsvReader(empty))
    with pytest.raises(DataError, match="no such file"):
        list(CsvReader(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="no data rows"):
        read_train_csv(_header_only(tmp_path))
    data = gzip.compress(write_eval_csv(tmp_path / "e.csv", rng_pixels).read_bytes())
    gz = tmp_path / "cut.csv.gz"
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated gzip"):
        list(CsvReader(gz))


def _header_only(tmp_path: Path) -> Path:
    path = tmp_path / "ho.csv"
    path.write_text(PIX + ",label\n")
    return path
