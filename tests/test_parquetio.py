"""fcls.infer.parquetio / sources: every schema form, located errors, bounded memory, Parquet in
and out of fcls-infer byte for byte against the CSV path, fcls-train and Ray on Parquet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import deadline, tiny_model, write_eval_csv, write_train_csv
from helpers import sparse_pixels as pixels

from fcls.infer.cli.infer import main
from fcls.infer.common.errors import ConfigError, DataError
from fcls.infer.common.spec import DEFAULT_SPEC, number_names, pixel_column_names
from fcls.infer.convert import convert
from fcls.infer.engine.pipeline import predict_csv, predict_files
from fcls.infer.formats.csvfile import CsvReader
from fcls.infer.formats.paths import expand_inputs, output_stem
from fcls.infer.formats.sources import input_kind, open_chunks, read_train
from fcls.infer.formats.tables import TableReader

PIXEL_COLUMNS = pixel_column_names(1024)
CLASSES = number_names(10)

N = 1000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return pixels(N, seed=3)  # (N, 1024) uint8


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory, rows) -> Path:
    """An eval CSV whose IDs need quoting now and then."""
    ids = [f"id{i}" if i % 9 else f'x,"{i}"' for i in range(N)]
    return write_eval_csv(tmp_path_factory.mktemp("csv") / "data.csv", rows, ids)


def _ids(n: int = N) -> pa.Array:
    return pa.array(np.arange(100, 100 + n, dtype=np.int64))


UINT8 = pa.uint8()


def columns_table(px: np.ndarray, type_: pa.DataType = UINT8, **extra: pa.Array) -> pa.Table:
    """ID + pix1..pix1024 of `type_` (numpy values cast, so out-of-range values survive)."""
    cols: dict[str, pa.Array] = {"ID": _ids(len(px))}
    wide = px.astype(np.int64)
    cols.update(
        {c: pa.array(wide[:, j]).cast(type_, safe=False) for j, c in enumerate(PIXEL_COLUMNS)}
    )
    cols.update(extra)
    return pa.table(cols)


def write(table: pa.Table, path: Path, row_group_size: int = 300) -> Path:
    """Parquet for .parquet, IPC file for .arrow/.feather, IPC stream for .ipc."""
    if path.suffix == ".parquet":
        pq.write_table(table, path, row_group_size=row_group_size)
    elif path.suffix == ".ipc":
        with ipc.new_stream(path, table.schema) as w:
            for b in table.to_batches(max_chunksize=row_group_size):
                w.write_batch(b)
    else:
        with ipc.new_file(path, table.schema) as w:
            for b in table.to_batches(max_chunksize=row_group_size):
                w.write_batch(b)
    return path


def _read(path: Path, kind: str = "unlabelled", **kw) -> tuple[np.ndarray, list, np.ndarray | None]:
    chunks = list(TableReader(path, kind, **kw))  # type: ignore[arg-type]
    px = np.concatenate([c.pixels for c in chunks])
    ids = [] if kind == "labelled" else pa.concat_arrays([c.ids for c in chunks]).to_pylist()
    labels = np.concatenate([c.labels for c in chunks]) if kind == "labelled" else None
    return px, ids, labels


FORMS: dict[str, Callable[[np.ndarray], pa.Table]] = {
    "uint8 columns": lambda px: columns_table(px),
    "int16 columns": lambda px: columns_table(px, pa.int16()),
    "int64 columns": lambda px: columns_table(px, pa.int64()),
    "uint32 columns": lambda px: columns_table(px, pa.uint32()),
    "fixed_size_binary": lambda px: pa.table(
        {"ID": _ids(len(px)), "pixels": pa.array([r.tobytes() for r in px], pa.binary(1024))}
    ),
    "binary": lambda px: pa.table(
        {"ID": _ids(len(px)), "pixels": pa.array([r.tobytes() for r in px], pa.binary())}
    ),
    "large_binary": lambda px: pa.table(
        {"ID": _ids(len(px)), "pixels": pa.array([r.tobytes() for r in px], pa.large_binary())}
    ),
    "fixed_size_list<uint8>": lambda px: pa.table(
        {
            "ID": _ids(len(px)),
            "pixels": pa.FixedSizeListArray.from_arrays(pa.array(px.ravel()), 1024),
        }
    ),
    "fixed_size_list<int32>": lambda px: pa.table(
        {
            "ID": _ids(len(px)),
            "pixels": pa.FixedSizeListArray.from_arrays(
                pa.array(px.ravel().astype(np.int32)), 1024
            ),
        }
    ),
    "list<int16>": lambda px: pa.table(
        {"ID": _ids(len(px)), "pixels": pa.array(list(px.astype(np.int16)), pa.list_(pa.int16()))}
    ),
    "large_list<int64>": lambda px: pa.table(
        {
            "ID": _ids(len(px)),
            "pixels": pa.array(list(px.astype(np.int64)), pa.large_list(pa.int64())),
        }
    ),
}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("ext", [".parquet", ".arrow", ".ipc"])
def test_every_schema_form_reads_the_same_pixels(tmp_path, rows, form, ext):
    px = rows[:700]
    path = write(FORMS[form](px), tmp_path / f"x{ext}")
    got, ids, _ = _read(path, batch_rows=256)
    assert np.array_equal(got, px)
    assert ids == list(range(100, 800))


@pytest.mark.parametrize(
    "ids",
    [
        pa.array(["a", "b,c", ""]),
        pa.array(["a", "b", "c"], pa.large_string()),
        pa.array(["a", "b", "a"]).dictionary_encode(),
        pa.array([-5, 0, 2**40], pa.int64()),
        pa.array([1, 2, 3], pa.uint16()),
    ],
)
def test_ids_keep_their_type_and_values(tmp_path, rows, ids):
    table = columns_table(rows[:3]).set_column(0, "ID", ids)
    chunks = list(TableReader(write(table, tmp_path / "x.parquet")))
    got = chunks[0].ids
    want = ids.dictionary_decode() if pa.types.is_dictionary(ids.type) else ids
    assert got.type == want.type and got.to_pylist() == want.to_pylist()


def test_train_form_and_fcls_train_data(tmp_path, rows):
    labels = np.arange(len(rows)) % 10
    table = pa.table(
        {
            "pixels": pa.array([r.tobytes() for r in rows], pa.binary(1024)),
            "label": pa.array(labels.astype(np.int8)),
            "note": pa.array(["ignored"] * len(rows)),  # extra columns are not read
        }
    )
    path = write(table, tmp_path / "train.parquet")
    assert input_kind(path) == "labelled"
    px, got = read_train(path, limit=777)
    assert np.array_equal(px, rows[:777]) and np.array_equal(got, labels[:777])
    assert got.dtype == np.int64
    # fcls-train's loader takes Parquet and CSV alike
    from fcls.train.data import load_dataset

    csv = write_train_csv(tmp_path / "train.csv", rows, labels)
    a = load_dataset(path)
    b = load_dataset(csv)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def _bad_cases() -> dict[str, tuple[Callable[[np.ndarray], pa.Table], str, str]]:
    """name -> (table from pixels, kind, expected message regex)."""

    def spoil(px: np.ndarray, row: int, col: int, value: int, type_: pa.DataType) -> pa.Table:
        wide = px.astype(np.int64)
        wide[row, col] = value
        return columns_table(wide, type_)

    def nulled(px: np.ndarray, column: str, row: int) -> pa.Table:
        table = columns_table(px)
        values = table.column(column).to_pylist()
        values[row] = None
        i = table.schema.get_field_index(column)
        return table.set_column(i, column, pa.array(values, table.schema.field(column).type))

    def lists(px: np.ndarray, short_row: int) -> pa.Table:
        values = [list(r) for r in px.astype(np.int16)]
        values[short_row] = values[short_row][:1000]
        return pa.table({"ID": _ids(len(px)), "pixels": pa.array(values, pa.list_(pa.int16()))})

    def blobs(px: np.ndarray, short_row: int) -> pa.Table:
        values = [r.tobytes() for r in px]
        values[short_row] = values[short_row][:-1]
        return pa.table({"ID": _ids(len(px)), "pixels": pa.array(values, pa.binary())})

    def train(px: np.ndarray, label_at: int, value: int | None) -> pa.Table:
        labels: list[int | None] = [1] * len(px)
        labels[label_at] = value
        return pa.table(
            {
                "pixels": pa.array([r.tobytes() for r in px], pa.binary(1024)),
                "label": pa.array(labels, pa.int16()),
            }
        )

    return {
        "float column": (
            lambda px: columns_table(px, pa.float64()),
            "unlabelled",
            r"x\.parquet column pix1: type double: pixels must be integers",
        ),
        "out of range": (
            lambda px: spoil(px, 612, 4, 300, pa.int16()),
            "unlabelled",
            r"x\.parquet row 613 column pix5: pixel 300 is out of range 0\.\.255",
        ),
        "negative": (
            lambda px: spoil(px, 5, 1023, -1, pa.int32()),
            "unlabelled",
            r"row 6 column pix1024: pixel -1 is out of range",
        ),
        "null pixel": (
            lambda px: nulled(px, "pix7", 450),
            "unlabelled",
            r"row 451 column pix7: null pixel value",
        ),
        "null ID": (
            lambda px: nulled(px, "ID", 333),
            "unlabelled",
            r"row 334 column ID: null ID value",
        ),
        "short list": (
            lambda px: lists(px, 401),
            "unlabelled",
            r"row 402 column pixels: list of 1000 values, expected 1024",
        ),
        "short binary": (
            lambda px: blobs(px, 20),
            "unlabelled",
            r"row 21 column pixels: 1023 bytes, expected 1024",
        ),
        "fixed_size_binary(1000)": (
            lambda px: pa.table(
                {
                    "ID": _ids(len(px)),
                    "pixels": pa.array([r[:1000].tobytes() for r in px], pa.binary(1000)),
                }
            ),
            "unlabelled",
            r"column pixels: fixed_size_binary\(1000\): expected 1024 bytes",
        ),
        "list of floats": (
            lambda px: pa.table(
                {"ID": _ids(len(px)), "pixels": pa.array(list(px.astype(np.float32)))}
            ),
            "unlabelled",
            r"column pixels: list of float: pixels must be integers",
        ),
        "string pixels": (
            lambda px: pa.table({"ID": _ids(len(px)), "pixels": pa.array(["x"] * len(px))}),
            "unlabelled",
            r"column pixels: type string: expected a list of 1024 integers",
        ),
        "missing column": (
            lambda px: columns_table(px).drop_columns(["pix1024"]),
            "unlabelled",
            r"x\.parquet: 1023 pixel columns \(pix1\.\.pix1023\), the model takes 1024$",
        ),
        "gap in the columns": (
            lambda px: columns_table(px).drop_columns(["pix7"]),
            "unlabelled",
            r"x\.parquet: 1023 of 1024 pixel columns pix1\.\.pix1024 \(missing pix7\)$",
        ),
        "missing ID": (
            lambda px: columns_table(px).drop_columns(["ID"]),
            "unlabelled",
            r"missing ID column",
        ),
        "float ID": (
            lambda px: columns_table(px).set_column(0, "ID", pa.array(np.zeros(len(px)))),
            "unlabelled",
            r"column ID: type double: IDs must be integers or strings",
        ),
        "both forms": (
            lambda px: columns_table(px, pixels=pa.array([b"x"] * len(px))),
            "unlabelled",
            r"both a pixels column and pixel columns \(pix1, \.\.\.\)",
        ),
        "label out of range": (
            lambda px: train(px, 777, 10),
            "labelled",
            r"row 778 column label: label '10' is not one of the model's 10 classes",
        ),
        "null label": (
            lambda px: train(px, 3, None),
            "labelled",
            r"row 4 column label: null label value",
        ),
        "missing label": (lambda px: columns_table(px), "labelled", r"missing label column"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_located_data_error(tmp_path, rows, case):
    build, kind, message = BAD[case]
    path = write(build(rows), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=message):
        list(TableReader(path, kind, batch_rows=128, pixels=1024, classes=CLASSES))  # type: ignore[arg-type]


def _with(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    """`table` with one cell of `column` replaced (None for a null), keeping the type."""
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, table.schema.field(column).type))


FIRST_ROW_CASES = {
    # columns are checked one after another: a later column's earlier row was named second
    "earlier row, later column": (
        lambda px: _with(_with(columns_table(px, pa.int16()), "pix5", 7, 300), "pix900", 2, None),
        r"row 3 column pix900: null pixel value",
    ),
    # within a column, nulls were checked before ranges
    "range before null in a column": (
        lambda px: _with(_with(columns_table(px, pa.int16()), "pix5", 6, None), "pix5", 1, 256),
        r"row 2 column pix5: pixel 256 is out of range",
    ),
    # ID is the file's first column: in one row it comes before a pixel
    "file order within a row": (
        lambda px: _with(_with(columns_table(px, pa.int16()), "pix1", 4, -1), "ID", 4, None),
        r"row 5 column ID: null ID value",
    ),
    "short list before a null list": (
        lambda px: pa.table(
            {
                "ID": _ids(len(px)),
                "pixels": pa.array(
                    [
                        None if i == 6 else list(r[: 1000 if i == 3 else 1024])
                        for i, r in enumerate(px)
                    ],
                    pa.list_(pa.int16()),
                ),
            }
        ),
        r"row 4 column pixels: list of 1000 values, expected 1024",
    ),
    "bad value before a short list": (
        lambda px: pa.table(
            {
                "ID": _ids(len(px)),
                "pixels": pa.array(
                    [
                        [*r[:9], 999, *r[10:]] if i == 2 else list(r[: 1000 if i == 5 else 1024])
                        for i, r in enumerate(px)
                    ],
                    pa.list_(pa.int16()),
                ),
            }
        ),
        r"row 3 column pixels: pixel 999 is out of range 0\.\.255 \(value 10 of the row\)",
    ),
    "short binary before a null": (
        lambda px: pa.table(
            {
                "ID": _ids(len(px)),
                "pixels": pa.array(
                    [
                        None if i == 6 else r.tobytes()[: 7 if i == 4 else 1024]
                        for i, r in enumerate(px)
                    ],
                    pa.binary(),
                ),
            }
        ),
        r"row 5 column pixels: 7 bytes, expected 1024",
    ),
}


@pytest.mark.parametrize("batch_rows", [1, 3, 4096])
@pytest.mark.parametrize("case", list(FIRST_ROW_CASES))
def test_error_names_the_first_bad_row_then_the_first_column(tmp_path, rows, case, batch_rows):
    """Several bad cells: the error names the first bad row and, in it, the first bad column in
    the file's order, whatever the batch size (found by tests/test_parquetio_fuzz.py)."""
    build, message = FIRST_ROW_CASES[case]
    path = write(build(rows[:10]), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=message):
        list(TableReader(path, batch_rows=batch_rows))


@pytest.mark.parametrize(
    "case",
    ["out of range", "null ID", "short list", "gap in the columns", "missing ID", "float ID"],
)
def test_bad_input_in_the_cli_is_one_line_and_leaves_nothing(tmp_path, rows, tiny, case):
    build, _, message = BAD[case]
    path = write(build(rows), tmp_path / "x.parquet")
    out = tmp_path / "out" / "r.parquet"
    out.parent.mkdir()
    result = CliRunner().invoke(main, [str(path), "--model", str(tiny), "-o", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    import re

    assert re.search(message, lines[0]), lines[0]
    assert list(out.parent.iterdir()) == []  # neither the output nor a temp file


@pytest.mark.parametrize("ext", [".parquet", ".arrow"])
def test_not_a_table_file_truncated_and_empty(tmp_path, rows, ext):
    good = write(FORMS["fixed_size_binary"](rows), tmp_path / f"good{ext}")
    data = good.read_bytes()
    cases = {
        "text": b"ID,pix1\n1,2\n",
        "truncated": data[: len(data) * 2 // 3],
        "empty": b"",
    }
    for what, content in cases.items():
        path = tmp_path / f"{what}{ext}"
        path.write_bytes(content)
        with pytest.raises(DataError, match=rf"{what}{ext}.*: not (a Parquet file|an Arrow IPC)"):
            list(TableReader(path))
    with pytest.raises(DataError, match="no such file"):
        list(TableReader(tmp_path / f"missing{ext}"))


def test_corrupt_pages_are_a_located_error(tmp_path, rows):
    """The footer is intact but a data page is not: the error names the batch's first row."""
    path = write(FORMS["fixed_size_binary"](rows), tmp_path / "x.parquet", row_group_size=500)
    meta = pq.read_metadata(path)
    column = meta.row_group(1).column(1)  # pixels of the second row group
    data = bytearray(path.read_bytes())
    start = column.dictionary_page_offset or column.data_page_offset
    data[start + 40 : start + 4000] = bytes(3960)  # zero a page's body and header tail
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"x\.parquet row 501: unreadable data"):
        list(TableReader(path, batch_rows=500))


def test_chunks_are_bounded_by_batch_rows_and_memory_stays_flat(tmp_path):
    """One 60,000-row group (60 MiB of pixels) read in batches of 512: no chunk above 512 rows,
    and Arrow never holds more than a few MiB (it held the whole row group before)."""
    n = 60_000
    px = np.random.default_rng(1).integers(0, 256, (n, 1024), np.uint8)  # incompressible
    table = pa.table(
        {
            "ID": _ids(n),
            "pixels": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(1024), n, [None, pa.py_buffer(px)]
            ),
        }
    )
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=n, compression="none")
    del table
    before = pa.total_allocated_bytes()
    peak, rows = 0, 0
    for chunk in TableReader(path, batch_rows=512):
        assert len(chunk) <= 512
        assert np.array_equal(chunk.pixels, px[rows : rows + len(chunk)])
        rows += len(chunk)
        peak = max(peak, pa.total_allocated_bytes() - before)
    assert rows == n
    assert peak < 12 << 20, (
        f"Arrow held {peak / 2**20:.1f} MiB reading a {n * 1024 / 2**20:.0f} MiB file"
    )


def test_parquet_and_ipc_give_the_csv_results_byte_for_byte(tmp_path, tiny, csv_file):
    want = predict_csv(csv_file, tmp_path / "want.csv", tiny, progress=False, durable=False)
    want_proba = tmp_path / "want_proba.csv"
    predict_csv(csv_file, want_proba, tiny, proba=True, progress=False, durable=False)
    for layout in ("binary", "columns", "list"):
        converted = convert(csv_file, tmp_path / f"{layout}.parquet", layout=layout, durable=False)
        assert converted.rows == N
        for proba, ref in ((False, tmp_path / "want.csv"), (True, want_proba)):
            out = tmp_path / f"{layout}{proba}.csv"
            got = predict_csv(
                tmp_path / f"{layout}.parquet", out, tiny, proba=proba, progress=False
            )
            assert got.rows == want.rows and out.read_bytes() == ref.read_bytes(), layout
    convert(csv_file, tmp_path / "x.arrow", durable=False)
    predict_csv(tmp_path / "x.arrow", tmp_path / "ipc.csv", tiny, proba=True, progress=False)
    assert (tmp_path / "ipc.csv").read_bytes() == want_proba.read_bytes()


def test_parquet_results(tmp_path, tiny, csv_file):
    """-o x.parquet: ID as in the input, label int64, float32 probabilities equal to the CSV's."""
    ref = tmp_path / "ref.csv"
    predict_csv(csv_file, ref, tiny, proba=True, progress=False, durable=False)
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(
        main, [str(csv_file), "--model", str(tiny), "-o", str(out), "--proba", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.names == ["ID", "label", *(f"p{j}" for j in range(10))]
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("p0").type == pa.float32()
    ref_rows = [line.split(",") for line in ref.read_text().splitlines()[1:]]
    ids = pa.concat_arrays([c.ids for c in CsvReader(csv_file)]).to_pylist()
    assert table.column("ID").to_pylist() == ids
    labels = table.column("label").to_numpy()
    proba = np.stack([table.column(f"p{j}").to_numpy() for j in range(10)], axis=1)
    # ID fields may hold commas: read label and probabilities from the right
    assert labels.tolist() == [int(r[-11]) for r in ref_rows]
    assert np.array_equal(proba, np.array([[np.float32(v) for v in r[-10:]] for r in ref_rows]))


def test_parquet_results_keep_integer_ids_and_names(tmp_path, tiny, rows):
    src = write(FORMS["fixed_size_binary"](rows), tmp_path / "in.parquet")
    out = tmp_path / "r.arrow"
    predict_csv(src, out, tiny, proba=True, class_names=True, progress=False)
    table = ipc.open_file(out).read_all()
    assert table.schema.field("ID").type == pa.int64()
    assert table.column("ID").to_pylist() == list(range(100, 100 + N))
    assert table.schema.field("label").type == pa.string()
    assert table.schema.names[2].startswith("p_")
    csv = tmp_path / "r.csv"
    predict_csv(src, csv, tiny, class_names=True, progress=False)
    lines = csv.read_text().splitlines()
    assert lines[1] == f"100,{table.column('label')[0].as_py()}"


def test_empty_table_gives_an_empty_results_file(tmp_path, tiny, rows):
    src = write(FORMS["fixed_size_binary"](rows[:0]), tmp_path / "none.parquet")
    out = tmp_path / "r.parquet"
    assert predict_csv(src, out, tiny, progress=False).rows == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.schema.field("ID").type == pa.int64()
    predict_csv(src, tmp_path / "r.csv", tiny, progress=False)
    assert (tmp_path / "r.csv").read_text() == "ID,label\n"


def test_resume_refuses_parquet_input_and_output(tmp_path, tiny, csv_file, rows):
    src = write(FORMS["fixed_size_binary"](rows), tmp_path / "in.parquet")
    with pytest.raises(ConfigError, match=r"--resume: .*in\.parquet is a Parquet/Arrow file"):
        predict_files([src], [tmp_path / "r.csv"], tiny, resume=True)
    with pytest.raises(ConfigError, match=r"--resume: .*r\.parquet is a Parquet/Arrow file"):
        predict_files([csv_file], [tmp_path / "r.parquet"], tiny, resume=True)
    result = CliRunner().invoke(
        main, [str(src), "--model", str(tiny), "-o", str(tmp_path / "x.csv"), "--resume"]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert not (tmp_path / "x.csv").exists()


def test_directories_list_tables_and_stems(tmp_path, rows):
    write(FORMS["fixed_size_binary"](rows[:5]), tmp_path / "b.parquet")
    write(FORMS["fixed_size_binary"](rows[:5]), tmp_path / "c.arrow")
    write_eval_csv(tmp_path / "a.csv", rows[:5])
    (tmp_path / "notes.txt").write_text("not data")
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["a.csv", "b.parquet", "c.arrow"]
    assert [output_stem(Path(n)) for n in ("a.parquet", "b.arrow", "c.csv.gz", "d.pq")] == list(
        "abcd"
    )


def test_dispatcher_chooses_by_extension(tmp_path, rows, csv_file):
    pq_path = write(FORMS["uint8 columns"](rows[:10]), tmp_path / "x.parquet")
    assert isinstance(open_chunks(pq_path), TableReader)
    assert isinstance(open_chunks(csv_file), CsvReader)
    assert isinstance(open_chunks("-"), CsvReader)
    assert input_kind(csv_file) == "unlabelled" and input_kind(pq_path) == "unlabelled"


@pytest.mark.slow
def test_ray_on_parquet_equals_single_process(tmp_path, tiny, csv_file, ray_local):
    from fcls.infer.engine.ray import plan_shards, predict_csv_ray

    src = tmp_path / "in.parquet"
    convert(csv_file, src, durable=False)
    # several row groups so that the run really splits
    pq.write_table(pq.read_table(src), src, row_group_size=150)
    _, blocks = plan_shards(0, src, DEFAULT_SPEC)
    assert len(blocks) == 7 and [b.first_row_at for b in blocks[:3]] == [1, 151, 301]
    want = tmp_path / "want.csv"
    predict_csv(src, want, tiny, proba=True, progress=False)
    out = tmp_path / "ray.csv"
    with deadline(180):
        predict_csv_ray([str(src)], out, tiny, workers=1, proba=True)
    assert out.read_bytes() == want.read_bytes()
    # a bad row in a later row group: the same located error as one process
    bad = pq.read_table(src)
    values = bad.column("pixels").to_pylist()
    values[700] = values[700][:-1]
    bad = bad.set_column(1, "pixels", pa.array(values, pa.binary()))
    bad_path = tmp_path / "bad.parquet"
    pq.write_table(bad, bad_path, row_group_size=150)
    with (
        deadline(180),
        pytest.raises(DataError, match=r"bad\.parquet row 701 column pixels: 1023 bytes"),
    ):
        predict_csv_ray([str(bad_path)], tmp_path / "bad.csv", tiny, workers=1)
    assert not (tmp_path / "bad.csv").exists()
    with pytest.raises(ConfigError, match="--engine ray writes CSV results only"):
        predict_csv_ray([str(src)], tmp_path / "r.parquet", tiny)
