"""Readers, writers and fcls-convert at any geometry: column resolution (`formats.columns`)
and label cells (`formats.labelcells`) on CSV, Parquet and Arrow files."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import write_rows_csv

from fcls.infer.cli.convert import main as convert_main
from fcls.infer.common.errors import DataError
from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec
from fcls.infer.formats import csvfile, sources
from fcls.infer.formats.columns import resolve
from fcls.infer.formats.csvfile import CsvReader, write_eval_csv
from fcls.infer.formats.sources import (
    check_header,
    id_type,
    input_kind,
    open_chunks,
    read_pixels,
    read_train,
)

CLOTHES = ("bag", "shirt", "shoe")


def kaggle(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 784) pixels and labels 0..9 of the Kaggle Fashion-MNIST layout."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n)


def _pixels_of(src: Path, **options: object) -> np.ndarray:
    return np.concatenate([c.pixels for c in open_chunks(src, **options)])  # type: ignore[arg-type]


def test_kaggle_label_first_pixel1_to_784(tmp_path):
    px, labels = kaggle()
    path = write_rows_csv(tmp_path / "k.csv", px, labels, prefix="pixel", label_at=0)
    assert path.read_text().startswith("label,pixel1,pixel2,")
    assert input_kind(path) == "labelled"
    got_px, got_labels = read_train(path)
    assert got_px.shape == (40, 784) and np.array_equal(got_px, px)
    assert got_labels.dtype == np.int64 and np.array_equal(got_labels, labels)
    spec = ImageSpec(28, 28, 1)
    chunks = list(open_chunks(path, "labelled", pixels=spec, classes=spec.class_names))
    assert np.array_equal(np.concatenate([c.labels for c in chunks]), labels)


@pytest.mark.parametrize(("prefix", "first"), [("pixel", 0), ("pix", 0), ("pixel", 1)])
@pytest.mark.parametrize("label_at", [0, 300, -1])
def test_numbering_and_label_position(tmp_path, prefix, first, label_at):
    px, labels = kaggle(25, 1)
    path = write_rows_csv(
        tmp_path / "k.csv", px, labels, prefix=prefix, first=first, label_at=label_at
    )
    got_px, got_labels = read_train(path)
    assert np.array_equal(got_px, px) and np.array_equal(got_labels, labels)


def test_columns_in_any_order_are_read_in_pixel_order(tmp_path):
    px, labels = kaggle(30, 2)
    path = write_rows_csv(tmp_path / "k.csv", px, labels, prefix="pixel", first=0, label_at=0)
    lines = [line.split(",") for line in path.read_text().splitlines()]
    order = [0, *np.random.default_rng(3).permutation(np.arange(1, 785)).tolist()]
    path.write_text("".join(",".join(row[i] for i in order) + "\n" for row in lines))
    got_px, got_labels = read_train(path)
    assert np.array_equal(got_px, px) and np.array_equal(got_labels, labels)


def test_lowercase_id_and_rgb_rows(tmp_path):
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (12, 3072), dtype=np.uint8)  # 32x32x3, HWC
    path = write_rows_csv(tmp_path / "rgb.csv", px, id_name="id", ids=[f"x{i}" for i in range(12)])
    assert input_kind(path) == "unlabelled"
    rgb = ImageSpec(32, 32, 3)
    chunks = list(open_chunks(path, pixels=rgb))
    assert np.array_equal(np.concatenate([c.pixels for c in chunks]), px)
    assert chunks[0].ids.to_pylist()[:2] == ["x0", "x1"]
    assert np.array_equal(read_pixels(path, pixels=3072), px)
    with pytest.raises(DataError) as info:
        check_header(path, "unlabelled", DEFAULT_SPEC)
    assert str(info.value) == (
        f"{path}:1: 3072 pixel columns (pix1..pix3072), the model takes 1024 (32x32x1)"
    )


def test_count_mismatch_is_one_line_naming_both_counts(tmp_path):
    px, labels = kaggle(3)
    path = write_rows_csv(tmp_path / "k.csv", px, labels, prefix="pixel", label_at=0)
    with pytest.raises(DataError) as info:
        list(CsvReader(path, "labelled", pixels=DEFAULT_SPEC))
    assert str(info.value) == (
        f"{path}:1: 784 pixel columns (pixel1..pixel784), the model takes 1024 (32x32x1)"
    )
    with pytest.raises(
        DataError, match=r"784 pixel columns \(pixel1\.\.pixel784\), the model takes 1000$"
    ):
        list(CsvReader(path, "labelled", pixels=1000))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["label", "pix1", "pix1"], "duplicate column 'pix1'"),
        (["label", "pix1", "pix3"], "2 of 3 pixel columns pix1..pix3 (missing pix2)"),
        (["label", "pixel1", "pix2"], "pixel columns mix the prefixes pix and pixel"),
        (["label", "pix01", "pix2"], "unexpected column 'pix01'"),
        (["pix1", "pix2"], "missing label column"),
    ],
)
def test_header_faults_are_one_line(names, message):
    with pytest.raises(DataError, match=re.escape(message)) as info:
        resolve(names, "labelled", "f.csv", line=1)
    assert str(info.value).startswith("f.csv:1") and "\n" not in str(info.value)


# -- a CSV written without a header: its first line is data ------------------------------------

P = DEFAULT_SPEC.n_pixels  # a row of the default 32x32 grayscale images
FIRST_LINE = f"the first line is data, not a header ({P + 1} numbers); add the header fcls needs: "
UNLABELLED = f"ID,pix1,...,pix{P}"
LABELLED = f"pix1,...,pix{P},label (or label,pixel1,...,pixel{P})"


def headerless(path: Path, key_first: bool) -> Path:
    """Five 32x32 rows with no header line: an ID first (`key_first`) or a label last."""
    rng = np.random.default_rng(0)
    pixels, keys = rng.integers(0, 256, (5, P)), np.arange(5)[:, None] % 3
    np.savetxt(path, np.hstack([keys, pixels] if key_first else [pixels, keys]), "%d", ",")
    return path


@pytest.mark.parametrize(
    ("first", "kind", "message"),
    [
        (["0"] * (P + 1), "unlabelled", f"{FIRST_LINE}{UNLABELLED}"),
        (["img-0", *["7"] * P], "unlabelled", f"({P} numbers and a text cell); add the"),
        ([*["7"] * 784, "shirt"], "labelled", "pix1,...,pix784,label (or label,pixel1"),
        (["shirt", *["7"] * 784], "labelled", "add the header fcls needs: pix1,...,pix784,"),
    ],
)
def test_a_first_line_of_numbers_is_data_not_a_header(first, kind, message):
    with pytest.raises(DataError, match=re.escape(message)) as info:
        resolve(first, kind, "f.csv", line=1)
    assert str(info.value).startswith("f.csv:1: the first line is data, not a header (")


@pytest.mark.parametrize(
    "names",
    [
        ["ID", *map(str, range(P))],  # pandas' column numbers: a header, if not fcls's
        ["0", "5", "x", "7"],  # a text cell between numbers: not a row of fcls data
        ["pix1", "7"],
    ],
)
def test_headers_with_numbers_are_not_taken_for_data(names):
    with pytest.raises(DataError) as info:
        resolve(names, "unlabelled", "f.csv", line=1)
    assert "the first line is data" not in str(info.value)


def test_fcls_infer_refuses_a_headerless_csv_in_one_line(tmp_path):
    from helpers import one_error_line, run_cli, tiny_model

    from fcls.infer.cli.infer import main as infer_main

    src, model = headerless(tmp_path / "data.csv", True), tiny_model(tmp_path / "m.onnx")
    result = run_cli(infer_main, src, "-m", model, "-o", tmp_path / "r.csv", code=1)
    assert one_error_line(result) == f"Error: {src}:1: {FIRST_LINE}{UNLABELLED}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "m.onnx"]


def test_fcls_eval_refuses_a_headerless_csv_in_one_line(tmp_path):
    from helpers import one_error_line, run_cli, tiny_model

    from fcls.infer.cli.eval import main as eval_main

    src, model = headerless(tmp_path / "data.csv", False), tiny_model(tmp_path / "m.onnx")
    result = run_cli(eval_main, src, "-m", model, "-o", tmp_path / "ev", code=1)
    assert one_error_line(result) == f"Error: {src}:1: {FIRST_LINE}{LABELLED}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "m.onnx"]


@pytest.mark.parametrize("key_first", [True, False], ids=["id-first", "label-last"])
def test_fcls_convert_refuses_a_headerless_csv_in_one_line(tmp_path, key_first):
    from helpers import one_error_line, run_cli

    src = headerless(tmp_path / "data.csv", key_first)
    result = run_cli(convert_main, src, tmp_path / "data.parquet", code=1)
    both = f"{UNLABELLED} or {LABELLED}"  # no header: unlabelled or labelled, either may be meant
    assert one_error_line(result) == f"Error: {src}:1: {FIRST_LINE}{both}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_fcls_train_refuses_a_headerless_csv_in_one_line(tmp_path):
    from helpers import one_error_line, run_cli

    from fcls.train.cli import main as train_main

    src = headerless(tmp_path / "data.csv", False)
    result = run_cli(train_main, "--data", src, "-o", tmp_path / "out", code=1)
    assert one_error_line(result) == f"Error: {src}:1: {FIRST_LINE}{LABELLED}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]  # no empty -o either


def test_string_labels_without_classes_are_raw_text(tmp_path, monkeypatch):
    px = np.random.default_rng(4).integers(0, 256, (6, 4), dtype=np.uint8)
    labels = ["shoe", " bag\t", '"shirt, long"', "7", "007", "shoe"]
    path = write_rows_csv(tmp_path / "s.csv", px, labels)
    got_px, got = read_train(path)
    assert np.array_equal(got_px, px)
    assert got.dtype == object and got.tolist() == ["shoe", "bag", "shirt, long", "7", "7", "shoe"]
    # integer chunks and text chunks of one file come back as one text array
    _, got = read_train_in_blocks(path, monkeypatch)
    assert got.tolist() == ["shoe", "bag", "shirt, long", "7", "7", "shoe"]


def read_train_in_blocks(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[np.ndarray, np.ndarray]:
    """read_train with blocks of about one line (each chunk decides its labels' type)."""
    monkeypatch.setattr(sources, "CsvReader", functools.partial(CsvReader, chunk_bytes=12))
    return read_train(path)


def test_string_labels_with_classes_are_indices_and_a_bad_one_names_its_line(tmp_path):
    px = np.zeros((5, 4), np.uint8)
    path = write_rows_csv(tmp_path / "f.csv", px, ["shoe", "bag", "2", "shirt", "shoe"])
    chunks = list(CsvReader(path, "labelled", pixels=4, classes=CLOTHES))
    assert np.concatenate([c.labels for c in chunks]).tolist() == [2, 0, 2, 1, 2]
    bad = write_rows_csv(tmp_path / "f.csv", px, ["shoe", "bag", "shoe", "sock", "3"])
    with pytest.raises(DataError) as info:
        list(CsvReader(bad, "labelled", classes=CLOTHES))
    assert str(info.value) == (
        f"{bad}:5 column label: label 'sock' is not one of the model's 3 classes (bag, shirt, shoe)"
    )
    empty = write_rows_csv(tmp_path / "e.csv", px, ["shoe", "bag", " ", "a", "b"])
    with pytest.raises(DataError, match=r"e\.csv:4 column label: empty label value$"):
        read_train(empty)


def test_integer_labels_keep_the_fast_path(tmp_path, monkeypatch):
    px, labels = kaggle(50, 5)
    path = write_rows_csv(tmp_path / "k.csv", px, labels + 20, prefix="pixel", label_at=0)

    def no_arrow(self, buf, line):
        raise AssertionError(f"pyarrow path used for the block at line {line}")

    monkeypatch.setattr(csvfile.BlockParser, "_parse_arrow", no_arrow)
    got_px, got = read_train(path)  # any non-negative integer without classes
    assert np.array_equal(got_px, px) and np.array_equal(got, labels + 20)
    with pytest.raises(AssertionError, match="pyarrow path"):  # 20..29: no class of ten
        list(CsvReader(path, "labelled", classes=DEFAULT_SPEC.class_names))


def _table(px: np.ndarray, labels: object, form: str) -> pa.Table:
    if form == "binary":
        pixels = {"pixels": pa.array([r.tobytes() for r in px], pa.binary())}
    elif form == "fixed":
        pixels = {"pixels": pa.array([r.tobytes() for r in px], pa.binary(px.shape[1]))}
    else:
        pixels = {f"pixel{j}": pa.array(px[:, j]) for j in range(px.shape[1])}
    return pa.table({"label": labels, **pixels})


@pytest.mark.parametrize("form", ["binary", "fixed", "columns"])
def test_parquet_pixels_forms_and_string_labels(tmp_path, form):
    px, labels = kaggle(30, 6)
    names = np.array(CLOTHES, dtype=object)[labels % 3]
    path = tmp_path / "k.parquet"
    pq.write_table(_table(px, pa.array(names.tolist()), form), path)
    got_px, got = read_train(path)
    assert np.array_equal(got_px, px) and got.tolist() == names.tolist()
    chunks = list(open_chunks(path, "labelled", pixels=784, classes=CLOTHES))
    assert np.concatenate([c.labels for c in chunks]).tolist() == (labels % 3).tolist()
    with pytest.raises(
        DataError, match=r"k\.parquet(:)? .*784.*1024|784 pixel columns|expected 1024"
    ):
        list(open_chunks(path, "labelled", pixels=1024))


def test_parquet_bad_label_names_its_row(tmp_path):
    px = np.zeros((4, 9), np.uint8)
    path = tmp_path / "x.parquet"
    pq.write_table(_table(px, pa.array(["bag", "shoe", "hat", "bag"]), "fixed"), path)
    with pytest.raises(DataError) as info:
        list(open_chunks(path, "labelled", classes=CLOTHES))
    assert str(info.value) == (
        f"{path} row 3 column label: label 'hat' is not one of the model's 3 classes "
        "(bag, shirt, shoe)"
    )
    pq.write_table(_table(px, pa.array([1, 2, -1, 0], pa.int8()), "fixed"), path)
    with pytest.raises(DataError, match=r"row 3 column label: label -1 is not an integer label"):
        read_train(path)


def test_variable_binary_takes_the_first_rows_size(tmp_path):
    rows = [bytes(range(9)), bytes(9), bytes(8)]
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({"id": pa.array([5, 6, 7]), "pixels": pa.array(rows)}), path)
    assert id_type(path) == pa.int64()
    with pytest.raises(DataError, match=r"v\.parquet row 3 column pixels: 8 bytes, expected 9$"):
        list(open_chunks(path))
    chunks = list(open_chunks(path, limit=2))
    assert chunks[0].pixels.shape == (2, 9) and chunks[0].ids.to_pylist() == [5, 6]


@pytest.mark.parametrize("out", ["k.parquet", "k.arrow", "k.csv.gz"])
@pytest.mark.parametrize("layout", ["binary", "columns", "list"])
def test_convert_round_trip_at_28x28(tmp_path, out, layout):
    px, labels = kaggle(60, 7)
    src = write_rows_csv(tmp_path / "k.csv", px, labels, prefix="pixel", label_at=0)
    mid, back = tmp_path / out, tmp_path / "back.csv"
    result = CliRunner().invoke(convert_main, [str(src), str(mid), "--layout", layout])
    assert result.exit_code == 0, result.output
    assert "60 rows (labelled)" in result.output
    assert CliRunner().invoke(convert_main, [str(mid), str(back), "-q"]).exit_code == 0
    # back in fcls's own form: pix1..pix784 then label
    canonical = write_rows_csv(tmp_path / "want.csv", px, labels)
    assert back.read_bytes() == canonical.read_bytes()


def test_convert_keeps_string_labels_and_unlabelled_geometry(tmp_path):
    px = np.random.default_rng(8).integers(0, 256, (7, 12), dtype=np.uint8)
    labels = ["a,b", "c", 'say "hi"', "c", "d", "e", "f"]
    src = write_rows_csv(tmp_path / "s.csv", px, ['"a,b"', "c", '"say ""hi"""', "c", "d", "e", "f"])
    mid, back = tmp_path / "s.parquet", tmp_path / "back.csv"
    CliRunner().invoke(convert_main, [str(src), str(mid)])
    assert pq.read_schema(mid).field("label").type == pa.string()
    assert pq.read_schema(mid).field("pixels").type == pa.binary(12)
    CliRunner().invoke(convert_main, [str(mid), str(back)])
    assert back.read_bytes() == src.read_bytes()
    got_px, got = read_train(back)
    assert np.array_equal(got_px, px) and got.tolist() == labels
    eval_csv = write_eval_csv(tmp_path / "e.csv", px)
    assert eval_csv.read_text().startswith("ID,pix1,") and ",pix12\n" in eval_csv.read_text()
    assert np.array_equal(read_pixels(eval_csv), px)
