"""fcls-convert: CSV/CSV.gz <-> Parquet / Arrow IPC, byte-exact back to CSV, atomic, validated."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import sparse_pixels as _pixels
from helpers import write_eval_csv, write_train_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcls.infer.cli.convert import main
from fcls.infer.common.errors import ConfigError, DataError
from fcls.infer.convert import ROW_GROUP_ROWS, convert, csv_header, csv_rows
from fcls.infer.formats.chunk import Chunk
from fcls.infer.formats.csvfile import CsvReader
from fcls.infer.formats.sources import read_train

N = 1200


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory) -> Path:
    ids = [f"r{i}" if i % 11 else f' "q{i}", x ' for i in range(N)]
    return write_eval_csv(tmp_path_factory.mktemp("e") / "eval.csv", _pixels(N), ids)


@pytest.fixture(scope="module")
def eval_gz(tmp_path_factory, eval_csv) -> Path:
    path = tmp_path_factory.mktemp("g") / "eval.csv.gz"
    path.write_bytes(gzip.compress(eval_csv.read_bytes()))
    return path


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("layout", ["binary", "columns", "list"])
def test_cli_round_trip_is_byte_exact(tmp_path, eval_csv, eval_gz, layout):
    pq_path = tmp_path / "x.parquet"
    result = _cli(str(eval_gz), str(pq_path), "--layout", layout)
    assert result.exit_code == 0, result.output
    assert f"{N} rows (unlabelled)" in result.output and "bytes) ->" in result.output
    schema = pq.read_schema(pq_path)
    assert schema.names[0] == "ID" and len(schema.names) == (1025 if layout == "columns" else 2)
    back = tmp_path / "back.csv"
    assert _cli(str(pq_path), str(back), "--quiet").exit_code == 0
    assert back.read_bytes() == eval_csv.read_bytes()
    back_gz = tmp_path / "back.csv.gz"
    assert _cli(str(pq_path), str(back_gz), "--quiet").exit_code == 0
    assert gzip.decompress(back_gz.read_bytes()) == eval_csv.read_bytes()


def test_row_groups_are_bounded_and_arrow_ipc_out(tmp_path, eval_csv):
    n = ROW_GROUP_ROWS + 300
    src = write_eval_csv(tmp_path / "big.csv", _pixels(n, 1))
    dest = tmp_path / "big.parquet"
    summary = convert(src, dest, compression="none", durable=False)
    assert summary.rows == n
    meta = pq.read_metadata(dest)
    assert meta.num_row_groups >= 2
    assert (
        max(meta.row_group(g).num_rows for g in range(meta.num_row_groups)) <= ROW_GROUP_ROWS + 800
    )
    ipc_path = tmp_path / "x.arrow"
    convert(eval_csv, ipc_path, durable=False)
    back = tmp_path / "back.csv"
    convert(ipc_path, back, durable=False)
    assert back.read_bytes() == eval_csv.read_bytes()


def test_train_kind_is_detected_and_kept(tmp_path):
    px, labels = _pixels(300, 2), np.arange(300) % 10
    src = write_train_csv(tmp_path / "train.csv", px, labels)
    dest = tmp_path / "train.parquet"
    assert convert(src, dest, durable=False).kind == "labelled"
    assert pq.read_schema(dest).names == ["pixels", "label"]
    got_px, got_labels = read_train(dest)
    assert np.array_equal(got_px, px) and np.array_equal(got_labels, labels)
    back = tmp_path / "back.csv"
    convert(dest, back, durable=False)
    # the conftest writer and fcls agree on the train format byte for byte
    assert back.read_bytes() == src.read_bytes()


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, eval_csv):
    bad = tmp_path / "bad.csv"
    lines = eval_csv.read_bytes().splitlines(keepends=True)
    lines[1001] = lines[1001].replace(b",0,", b",256,", 1)
    bad.write_bytes(b"".join(lines))
    out = tmp_path / "out"
    out.mkdir()
    result = _cli(str(bad), str(out / "x.parquet"))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "bad.csv:1002 column pix" in result.output and "out of range 0..255" in result.output
    assert list(out.iterdir()) == []  # atomic: no output, no temp file


def test_bad_parquet_to_csv_leaves_nothing(tmp_path, eval_csv):
    src = tmp_path / "x.parquet"
    convert(eval_csv, src, durable=False)
    table = pq.read_table(src)
    ids = table.column("ID").to_pylist()
    ids[1100] = None
    pq.write_table(table.set_column(0, "ID", pa.array(ids, pa.string())), src)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=r"x\.parquet row 1101 column ID: null ID value"):
        convert(src, out / "x.csv.gz")
    assert list(out.iterdir()) == []


def test_refusals(tmp_path, eval_csv):
    with pytest.raises(ConfigError, match="unknown output format"):
        convert(eval_csv, tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="is the input"):
        convert(eval_csv, eval_csv)
    with pytest.raises(ConfigError, match="pixel layout"):
        convert(eval_csv, tmp_path / "x.parquet", layout="rows")  # type: ignore[arg-type]
    result = _cli(str(tmp_path / "missing.csv"), str(tmp_path / "x.parquet"))
    assert result.exit_code == 1 and "missing.csv: no such file" in result.output
    assert not (tmp_path / "x.parquet").exists()


# IDs the CSV grammar can hold: any text without line breaks or NUL
ID_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=12
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ids=st.lists(ID_TEXT, min_size=1, max_size=6))
def test_csv_rows_read_back_to_the_same_ids(tmp_path, ids):
    """csv_rows (fast and quoting paths) against the fcls reader as the reference."""
    px = _pixels(len(ids), 5)
    chunk = Chunk(pixels=px, ids=pa.array(ids, pa.string()), labels=None, start=2)
    path = tmp_path / "h.csv"
    path.write_bytes(csv_header("unlabelled", chunk.pixels.shape[1]) + csv_rows(chunk))
    parsed = list(CsvReader(path))
    got = pa.concat_arrays([c.ids for c in parsed]).to_pylist()
    assert got == ids
    assert np.array_equal(np.concatenate([c.pixels for c in parsed]), px)
