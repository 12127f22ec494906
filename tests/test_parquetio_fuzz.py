"""Property test of the Parquet / Arrow IPC reader (fcls.infer.formats.tables, through
`sources.open_chunks` too) against an independent reference.

Files are generated with random schemas: both kinds (ID + pixels, pixels + label), the three
pixel layouts (pix1..pix1024 columns, a list column, a binary column) with every integer type
and container (fixed-size, variable, large), ID and label types, extra and missing columns,
duplicate names, reordered columns, nulls, out-of-range values, lists and binaries of the
wrong length, non-integer columns; written as Parquet (row groups of any size, empty ones
included, several compressions, small pages) or as an Arrow IPC file or stream (record batches
of any size), and read in batches of any size.

The reference below reads the file back whole with pyarrow (`ParquetFile.read`, the IPC
readers) and checks it value by value in plain Python, never with fcls code. It defines the
verdict: a schema error names the column the docstring of tables.py says (no row), and a row
error names the first bad row (from 1) and, in it, the first bad column in the file's column
order. The property: either fcls yields the same pixels, IDs (values and Arrow type) and labels,
or it raises a DataError naming exactly that row and column; never any other exception.

The default suite runs `test_table_reader_matches_reference` (300 examples, derandomized);
`test_table_reader_matches_reference_fuzz` runs 5,000 fresh ones under the opt-in `fuzz`
marker: `pytest -m fuzz tests/test_parquetio_fuzz.py`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fcls.infer.common.errors import DataError
from fcls.infer.formats.sources import open_chunks
from fcls.infer.formats.tables import TableReader

PIXELS = [f"pix{i}" for i in range(1, 1025)]
PIXEL_SET = set(PIXELS)
CLASSES = tuple(str(i) for i in range(10))
INTS = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
INTS += [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
CODECS = [c for c in ("lz4", "zstd") if pa.Codec.is_available(c)]


def _bounds(t: pa.DataType) -> tuple[int, int]:
    info = np.iinfo(t.to_pandas_dtype())
    return int(info.min), int(info.max)


def _bad_values(t: pa.DataType, top: int) -> list[int]:
    """Values of integer type `t` outside 0..top (none for uint8 pixels)."""
    lo, hi = _bounds(t)
    candidates = [top + 1, 256, 1000, 70_000, 2**40, hi, -1, -128, lo]
    return [v for v in dict.fromkeys(candidates) if lo <= v <= hi and not 0 <= v <= top]


@dataclass
class Case:
    """A table to write, how to write it, and how fcls reads it."""

    kind: str
    columns: dict[str, pa.Array] = field(repr=False)
    order: list[str] = field(repr=False)  # column names in file order (duplicates allowed)
    notes: list[str]  # what was generated: layout, types, mutations (for the failure report)
    fmt: str  # parquet, ipc-file, ipc-stream
    suffix: str
    groups: list[int]  # rows per row group / record batch, in order (zeros allowed)
    batch_rows: int | None  # None: sources.open_chunks (its default batch size)
    options: dict[str, Any]

    def __repr__(self) -> str:  # the columns themselves are too long to show
        return (
            f"Case({', '.join(self.notes)}; order {self.order[:4]}...{self.order[-3:]}; "
            f"{self.fmt} {self.suffix} groups {self.groups} {self.options}; "
            f"batch_rows {self.batch_rows})"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # hypothesis's printer
        p.text(repr(self))

    def table(self) -> pa.Table:
        return pa.Table.from_arrays([self.columns[c] for c in self.order], names=self.order)

    def batch(self, start: int, size: int) -> pa.RecordBatch:
        arrays = [self.columns[c].slice(start, size) for c in self.order]
        return pa.RecordBatch.from_arrays(arrays, names=self.order)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["unlabelled", "labelled"]))
    layout = draw(st.sampled_from(["columns", "columns", "list", "binary"]))
    n = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9, 12, 17, 30]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cells: list[list[Any]] = rng.integers(0, 256, (n, 1024)).tolist()
    notes = [kind, layout, f"{n} rows"]
    # about a third of the files are valid, a fifth break a schema rule, the rest a row rule
    mutations = [
        draw(st.sampled_from(ROW_MUTATIONS))
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 2, 3, 4])))
    ]
    if draw(st.integers(0, 4)) == 0:
        mutations.append(draw(st.sampled_from(SCHEMA_MUTATIONS)))
    notes += mutations

    # faults cluster around one row, so that several meet in a row or a batch: the error must
    # name the first row, and in it the first column, whatever the reading order
    focus = draw(st.integers(0, n - 1)) if n else 0

    def row() -> int | None:
        if not n:
            return None
        return draw(
            st.sampled_from([focus, focus, min(focus + 1, n - 1), draw(st.integers(0, n - 1))])
        )

    key = "ID" if kind == "unlabelled" else "label"
    columns: dict[str, pa.Array] = {}
    order: list[str] = []

    # ---- pixels
    if layout == "columns":
        base = draw(st.sampled_from(INTS))
        types = [base] * 1024
        for _ in range(draw(st.integers(0, 3))):
            types[draw(st.integers(0, 1023))] = draw(st.sampled_from(INTS))
        notes.append(f"pixels {base}")
        for what in mutations:
            r, j = row(), draw(st.integers(0, 1023))
            if what == "null" and r is not None:
                cells[r][j] = None
            elif what == "range" and r is not None:
                bad = _bad_values(types[j], 255)
                if bad:
                    cells[r][j] = draw(st.sampled_from(bad))
            elif what == "type":  # a non-integer pixel column
                types[j] = draw(st.sampled_from([pa.float64(), pa.float32(), pa.bool_()]))
        for j, name in enumerate(PIXELS):
            values = [r[j] for r in cells]
            if types[j] == pa.int8():  # valid pixels it can hold
                values = [v & 127 if v is not None and 127 < v < 256 else v for v in values]
            if pa.types.is_floating(types[j]) or pa.types.is_boolean(types[j]):
                values = [
                    None if v is None else types[j].to_pandas_dtype()(v).item() for v in values
                ]
            columns[name] = pa.array(values, types[j])
        order += PIXELS
        if "missing" in mutations:
            for _ in range(draw(st.integers(1, 3))):
                gone = draw(st.sampled_from(PIXELS))
                if gone in order:
                    order.remove(gone)
        if "both" in mutations:  # a pixels column as well
            columns["pixels"] = pa.array([b"\0" * 1024] * n, pa.binary(1024))
            order.append("pixels")
    else:
        rows_: list[Any]
        if layout == "list":
            value_type = draw(st.sampled_from(INTS))
            container = draw(st.sampled_from(["fixed", "list", "large"]))
            rows_ = [list(r) for r in cells]
            for what in mutations:
                r, j = row(), draw(st.integers(0, 1023))
                if r is None or not rows_[r]:  # no row, a null list or an empty one
                    continue
                j %= len(rows_[r])  # an earlier mutation may have made the list shorter
                if what == "null":
                    if draw(st.booleans()):
                        rows_[r] = None
                    else:
                        rows_[r][j] = None
                elif what == "range":
                    bad = _bad_values(value_type, 255)
                    if bad:
                        rows_[r][j] = draw(st.sampled_from(bad))
                elif what == "length" and container != "fixed":
                    size = draw(st.sampled_from([0, 1, 1023, 1025, 2048]))
                    rows_[r] = (rows_[r] * 2)[:size]
            size = 1024
            if "type" in mutations:
                if draw(st.booleans()):
                    value_type = draw(st.sampled_from([pa.float32(), pa.float64()]))
                elif container == "fixed":
                    size = draw(st.sampled_from([1, 1023, 1025]))
                    rows_ = [None if v is None else (v * 2)[:size] for v in rows_]
            if value_type == pa.int8():
                rows_ = [
                    None
                    if v is None
                    else [x & 127 if x is not None and 127 < x < 256 else x for x in v]
                    for v in rows_
                ]
            if pa.types.is_floating(value_type):
                rows_ = [
                    None if v is None else [None if x is None else float(x) for x in v]
                    for v in rows_
                ]
            list_type = {
                "fixed": pa.list_(value_type, size),
                "list": pa.list_(value_type),
                "large": pa.large_list(value_type),
            }[container]
            notes.append(str(list_type))
            columns["pixels"] = pa.array(rows_, list_type)
        else:
            container = draw(st.sampled_from(["fixed", "binary", "large"]))
            rows_ = [bytes(r) for r in cells]
            for what in mutations:
                r = row()
                if r is None:
                    continue
                if what == "null":
                    rows_[r] = None
                elif what == "length" and container != "fixed":
                    size = draw(st.sampled_from([0, 1, 1023, 1025, 2048]))
                    rows_[r] = (bytes(cells[r]) * 2)[:size]
            binary_type = {
                "fixed": pa.binary(1024),
                "binary": pa.binary(),
                "large": pa.large_binary(),
            }[container]
            if "type" in mutations:
                other = draw(st.sampled_from(["narrow", "string", "int"]))
                if other == "narrow":
                    binary_type = pa.binary(1000)
                    rows_ = [None if v is None else v[:1000] for v in rows_]
                elif other == "string":
                    binary_type = pa.string()
                    rows_ = [None if v is None else v.hex() for v in rows_]
                else:
                    binary_type = pa.int64()
                    rows_ = [None if v is None else len(v) for v in rows_]
            notes.append(str(binary_type))
            columns["pixels"] = pa.array(rows_, binary_type)
        order.append("pixels")
        if "both" in mutations:  # a pix column as well
            name = draw(st.sampled_from(PIXELS))
            columns[name] = pa.array([0] * n, pa.uint8())
            order.append(name)

    # ---- the ID or label column
    if kind == "unlabelled":
        id_kind = draw(st.sampled_from(["int", "int", "string", "large_string", "dict"]))
        ids: list[Any]
        if id_kind == "int":
            id_type = draw(st.sampled_from(INTS))
            lo, hi = _bounds(id_type)
            dtype = np.dtype(id_type.to_pandas_dtype())
            ids = rng.integers(lo, hi, n, dtype, endpoint=True).tolist()
            if n:  # the type's edges
                ids[draw(st.integers(0, n - 1))] = draw(st.sampled_from([lo, hi, 0]))
        else:
            id_type = pa.large_string() if id_kind == "large_string" else pa.string()
            ids = [draw(st.text(max_size=4)) for _ in range(n)]
        if "null" in mutations and n and draw(st.booleans()):
            ids[draw(st.integers(0, n - 1))] = None
        if "type" in mutations and draw(st.booleans()):
            id_type, one = draw(
                st.sampled_from([(pa.float64(), 1.0), (pa.bool_(), True), (pa.binary(), b"x")])
            )
            ids = [None if v is None else one for v in ids]
            id_kind = "bad"
        array = pa.array(ids, id_type)
        if id_kind == "dict":
            array = array.dictionary_encode()
        notes.append(f"ID {array.type}")
        columns["ID"] = array
    else:
        label_type = draw(st.sampled_from(INTS))
        labels: list[Any] = [int(v) for v in rng.integers(0, 10, n)]
        if "null" in mutations and n and draw(st.booleans()):
            labels[draw(st.integers(0, n - 1))] = None
        if "range" in mutations and n:
            bad = _bad_values(label_type, 9)
            labels[draw(st.integers(0, n - 1))] = draw(st.sampled_from(bad))
        if "type" in mutations and draw(st.booleans()):
            label_type, convert = draw(st.sampled_from([(pa.float64(), float), (pa.string(), str)]))
            labels = [None if v is None else convert(v) for v in labels]
        notes.append(f"label {label_type}")
        columns["label"] = pa.array(labels, label_type)
    if "missing_key" not in mutations:
        at = draw(st.sampled_from([0, len(order)]))
        order.insert(at, key)

    # ---- extra columns (never read), duplicates, order
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        name = draw(st.sampled_from([*EXTRA_NAMES, "label" if kind == "unlabelled" else "ID"]))
        if name in columns:
            continue
        columns[name] = draw(st.sampled_from(EXTRA_TYPES))(n)
        order.insert(draw(st.integers(0, len(order))), name)
        notes.append(f"extra {name} {columns[name].type}")
    if "duplicate" in mutations and order:
        name = draw(st.sampled_from(order))
        order.insert(draw(st.integers(0, len(order))), name)
        notes.append(f"duplicate {name}")
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):
        i, j = draw(st.integers(0, len(order) - 1)), draw(st.integers(0, len(order) - 1))
        order[i], order[j] = order[j], order[i]

    # ---- the file and the reading
    fmt = draw(st.sampled_from(["parquet", "parquet", "ipc-file", "ipc-stream"]))
    suffix = draw(
        st.sampled_from(
            {"parquet": [".parquet", ".pq"], "ipc-file": [".arrow", ".feather"]}.get(
                fmt, [".ipc", ".arrow"]
            )
        )
    )
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    groups = [b - a for a, b in itertools.pairwise([0, *cuts, n])]
    if fmt == "parquet":
        options: dict[str, Any] = {
            "compression": draw(st.sampled_from(["none", "snappy", "zstd"])),
            "use_dictionary": draw(st.booleans()),
            "data_page_size": draw(st.sampled_from([None, 64, 4096])),
        }
    else:
        options = {"compression": draw(st.sampled_from([None, *CODECS]))}
    batch_rows = draw(st.sampled_from([None, 1, 2, 3, 5, 8, 4096]))
    return Case(kind, columns, order, notes, fmt, suffix, groups, batch_rows, options)


ROW_MUTATIONS = ["null", "range", "length"]
SCHEMA_MUTATIONS = ["type", "missing", "missing_key", "both", "duplicate"]
EXTRA_NAMES = ["note", "pix0", "pix1025", "Pix1", "pixel", "id", "Label", "pixels_"]
EXTRA_TYPES = [
    lambda n: pa.array([0.5 if i % 2 else None for i in range(n)], pa.float64()),
    lambda n: pa.array([f"s{i}" for i in range(n)]),
    lambda n: pa.array([999] * n, pa.int16()),
    lambda n: pa.nulls(n),
    lambda n: pa.array([{"a": i, "b": [1.5]} for i in range(n)]),
    lambda n: pa.array([[1.5] * (i % 3) for i in range(n)], pa.list_(pa.float32())),
]


def write(case: Case, path: Path) -> None:
    table = case.table()
    if case.fmt == "parquet":
        opts = {k: v for k, v in case.options.items() if v is not None}
        with pq.ParquetWriter(path, table.schema, **opts) as w:
            start = 0
            for size in case.groups:
                w.write_table(table.slice(start, size), row_group_size=max(size, 1))
                start += size
        return
    write_options = ipc.IpcWriteOptions(compression=case.options["compression"])
    new = ipc.new_file if case.fmt == "ipc-file" else ipc.new_stream
    with new(path, table.schema, options=write_options) as w:
        start = 0
        for size in case.groups:
            w.write_batch(case.batch(start, size))
            start += size


# ---------------------------------------------------------------- the reference


@dataclass(frozen=True)
class Bad:
    row: int | None  # None: a schema error
    column: str | None


@dataclass(frozen=True)
class Good:
    pixels: np.ndarray  # (n, 1024) uint8
    ids: pa.Array | None  # decoded: the type fcls must keep
    labels: list[int] | None


def read_back(path: Path, fmt: str) -> pa.Table:
    if fmt == "parquet":
        return pq.ParquetFile(path).read()
    with pa.OSFile(str(path)) as f:
        reader = ipc.open_file(f) if fmt == "ipc-file" else ipc.open_stream(f)
        return reader.read_all()


def _integer(t: pa.DataType) -> bool:
    return t in INTS


PIXEL_NAME = re.compile(r"(pix|pixel)(0|[1-9][0-9]*)")


def _pixel_names_ok(names: list[str], expected: int) -> bool:
    """Pixel columns: one prefix, numbered 1..P or 0..P-1, P == expected."""
    found = [m.groups() for m in map(PIXEL_NAME.fullmatch, names) if m]
    numbers = sorted(int(n) for _, n in found)
    return (
        len({p for p, _ in found}) == 1
        and len(numbers) == expected
        and numbers in (list(range(expected)), list(range(1, expected + 1)))
    )


def _key(names: list[str], kind: str) -> str | None:
    """The ID (ID or id, not both) or label column, or None."""
    if kind == "labelled":
        return "label" if "label" in names else None
    ids = [n for n in names if n in ("ID", "id")]
    return ids[0] if len(ids) == 1 else None


def _schema_verdict(schema: pa.Schema, kind: str) -> Bad | str:
    """The schema rules of tables.py's docstring, checked in its order; the pixel layout."""
    names = schema.names
    for i, name in enumerate(names):
        if name in names[:i]:
            return Bad(None, name)
    key = _key(names, kind)
    if key is None:
        return Bad(None, None)
    if "pixels" in names and any(PIXEL_NAME.fullmatch(n) for n in names):
        return Bad(None, None)
    if "pixels" in names:
        t = schema.field("pixels").type
        if t == pa.binary(1024) or t in (pa.binary(), pa.large_binary()):
            layout = "binary"
        elif isinstance(t, (pa.ListType, pa.LargeListType)) or (
            isinstance(t, pa.FixedSizeListType) and t.list_size == 1024
        ):
            if not _integer(t.value_type):
                return Bad(None, "pixels")
            layout = "list"
        else:
            return Bad(None, "pixels")
    else:
        if not _pixel_names_ok(names, 1024):
            return Bad(None, None)
        for name in PIXELS:
            if not _integer(schema.field(name).type):
                return Bad(None, name)
        layout = "columns"
    t = schema.field(key).type
    value = t.value_type if isinstance(t, pa.DictionaryType) else t
    if not (_integer(value) or value in (pa.string(), pa.large_string())):
        return Bad(None, key)
    if kind == "labelled" and isinstance(t, pa.DictionaryType) and _integer(value):
        return Bad(None, key)
    return layout


def _ok(column: str, layout: str, value: Any) -> bool:
    if value is None:
        return False
    if column == "ID":
        return True
    if column == "label":  # the model's classes "0".."9": a name, or its index
        if isinstance(value, str):
            value = value.strip(" \t")
            return value.isascii() and value.isdigit() and int(value) <= 9
        return 0 <= value <= 9
    if layout == "columns":
        return 0 <= value <= 255
    if layout == "binary":
        return len(value) == 1024
    return len(value) == 1024 and all(v is not None and 0 <= v <= 255 for v in value)


def reference(table: pa.Table, kind: str) -> Good | Bad:
    verdict = _schema_verdict(table.schema, kind)
    if isinstance(verdict, Bad):
        return verdict
    layout = verdict
    key = _key(table.schema.names, kind)
    wanted = PIXEL_SET if layout == "columns" else {"pixels"}
    used = [c for c in table.schema.names if c in wanted or c == key]  # in file order
    values = {c: table.column(c).to_pylist() for c in used}
    for r in range(table.num_rows):
        for c in used:
            if not _ok(c, layout, values[c][r]):
                return Bad(r + 1, c)
    if layout == "columns":
        pixels = np.array([values[c] for c in PIXELS], np.int64).T.reshape(-1, 1024)
    elif layout == "binary":
        pixels = np.array([list(v) for v in values["pixels"]], np.int64).reshape(-1, 1024)
    else:
        pixels = np.array(values["pixels"], np.int64).reshape(-1, 1024)
    if kind == "labelled":
        labels = [int(v) for v in values["label"]]  # "7" or " 07" is class 7
        return Good(pixels.astype(np.uint8), None, labels)
    chunks = table.column(key).chunks  # type: ignore[arg-type]  # decoded one by one: their dictionaries may differ
    decoded = [
        c.dictionary_decode() if isinstance(c.type, pa.DictionaryType) else c for c in chunks
    ]
    ids = pa.chunked_array(decoded).combine_chunks() if table.num_rows else None
    return Good(pixels.astype(np.uint8), ids, None)


# ---------------------------------------------------------------- the property


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tablefuzz")


_counter = itertools.count()


def _read(case: Case, path: Path) -> Good:
    model = {"pixels": 1024, "classes": CLASSES}  # a model's pixels per row and classes
    if case.batch_rows is None:
        chunks = list(open_chunks(path, case.kind, **model))  # type: ignore[arg-type]
    else:
        chunks = list(TableReader(path, case.kind, batch_rows=case.batch_rows, **model))  # type: ignore[arg-type]
    start = 1
    for chunk in chunks:  # consecutive, bounded, never empty
        assert chunk.start == start and 0 < len(chunk) <= (case.batch_rows or 4096)
        assert chunk.pixels.dtype == np.uint8 and chunk.pixels.shape == (len(chunk), 1024)
        start += len(chunk)
    pixels = np.concatenate([c.pixels for c in chunks]) if chunks else np.empty((0, 1024))
    if case.kind == "labelled":
        assert all(c.labels is not None and c.labels.dtype == np.int64 for c in chunks)
        return Good(pixels, None, [int(v) for c in chunks for v in c.labels])  # type: ignore[union-attr]
    id_arrays = [c.ids for c in chunks]
    ids = pa.concat_arrays(id_arrays) if id_arrays else None  # type: ignore[arg-type]
    return Good(pixels, ids, None)


def _where(e: DataError, path: Path) -> Bad:
    """(row, column) named by a table DataError: `PATH row N column C: ...` or `PATH: ...`."""
    match = re.fullmatch(re.escape(str(path)) + r"( row (\d+))?", e.source)
    assert match, f"error names {e.source!r}, not the file {path}"
    return Bad(int(match.group(2)) if match.group(2) else None, e.column)


def check(case: Case, workdir: Path) -> None:
    path = workdir / f"case{next(_counter)}{case.suffix}"  # a new inode: old maps stay valid
    write(case, path)
    expected = reference(read_back(path, case.fmt), case.kind)
    try:
        got: Good | Bad = _read(case, path)
    except DataError as e:
        assert "\n" not in str(e)
        got = _where(e, path)
    finally:
        path.unlink()
    if isinstance(got, Good):
        event(f"accepted ({'no rows' if len(got.pixels) == 0 else 'rows'})")
    else:
        event(f"refused: {'schema' if got.row is None else 'row'}")
    if isinstance(expected, Bad):
        assert got == expected, f"fcls: {got}, reference: {expected}"
        return
    assert isinstance(got, Good), f"fcls refused a valid file: {got}"
    np.testing.assert_array_equal(got.pixels.reshape(-1, 1024), expected.pixels)
    assert got.labels == expected.labels
    if expected.ids is not None and len(expected.ids):
        assert got.ids is not None
        assert got.ids.type == expected.ids.type, (got.ids.type, expected.ids.type)
        assert got.ids.to_pylist() == expected.ids.to_pylist()
    elif case.kind == "unlabelled":
        assert got.ids is None or len(got.ids) == 0


COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@pytest.mark.slow
@settings(max_examples=300, derandomize=True, **COMMON)
@given(case=cases())
def test_table_reader_matches_reference(case: Case, workdir: Path) -> None:
    check(case, workdir)


@pytest.mark.fuzz
@pytest.mark.slow
@settings(max_examples=5000, **COMMON)
@given(case=cases())
def test_table_reader_matches_reference_fuzz(case: Case, workdir: Path) -> None:
    check(case, workdir)


def test_reference_agrees_with_hand_checked_tables() -> None:
    """The reference itself: a few verdicts worked out by hand."""
    px = {c: pa.array([0, 7], pa.uint8()) for c in PIXELS}
    good = reference(pa.table({"ID": pa.array(["a", "b"]).dictionary_encode(), **px}), "unlabelled")
    assert isinstance(good, Good) and good.ids is not None and good.pixels[1, 0] == 7
    assert good.ids.type == pa.string() and good.ids.to_pylist() == ["a", "b"]
    bad = {**px, "pix3": pa.array([0, None], pa.uint8()), "pix9": pa.array([300, 0], pa.int16())}
    assert reference(pa.table({"ID": pa.array([1, None]), **bad}), "unlabelled") == Bad(1, "pix9")
    bad["pix9"] = pa.array([0, 300], pa.int16())  # row 2: ID, pix3 and pix9 are bad
    assert reference(pa.table({"ID": pa.array([1, None]), **bad}), "unlabelled") == Bad(2, "ID")
    assert reference(pa.table({**bad, "ID": pa.array([1, None])}), "unlabelled") == Bad(2, "pix3")
    assert reference(pa.table({**px, "label": pa.array([1, 10])}), "labelled") == Bad(2, "label")
    assert reference(pa.table({**px, "label": pa.array([1.0, 2.0])}), "labelled") == Bad(
        None, "label"
    )
    both = {"ID": pa.array([1, 2]), "pix1": px["pix1"], "pixels": pa.array([b"", b""])}
    assert reference(pa.table(both), "unlabelled") == Bad(None, None)
    lists = pa.array([[1] * 1024, [1] * 1023], pa.list_(pa.int16()))
    assert reference(pa.table({"ID": [1, 2], "pixels": lists}), "unlabelled") == Bad(2, "pixels")
    assert reference(pa.table({"ID": [1, 2], "note": [0.5, None], **px}), "labelled") == Bad(
        None, None
    )


# ------------------------------------------- other geometries, column resolution and labels

NAMES = ("bag", "shirt", "shoe")
LABEL_VALUES = ["bag", " shoe", "shirt\t", "7", "007", "2", "", "hat", "10", "0x1"]


@dataclass
class GeoCase:
    kind: str
    table: pa.Table = field(repr=False)
    notes: list[str]
    pixels: int | None  # what the reader is told
    classes: tuple[str, ...] | None

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(f"GeoCase({self.kind}, {self.notes}, pixels={self.pixels}, {self.classes})")


@st.composite
def geometry_cases(draw: st.DrawFn) -> GeoCase:
    """P of 1 to 784: pixN/pixelN columns from 0 or 1 in any order, or a P-byte or P-value
    pixels column; ID or id; integer or text labels, null or not a class; the reader told the
    model's count (or not) and its classes (or not)."""
    kind = draw(st.sampled_from(["unlabelled", "labelled"]))
    p, n = draw(st.sampled_from([1, 5, 784])), draw(st.sampled_from([0, 1, 3, 6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    px = rng.integers(0, 256, (n, p), dtype=np.uint8)
    form = draw(st.sampled_from(["columns", "columns", "fixed", "binary", "list"]))
    notes = [kind, f"P={p}", f"{n} rows", form]
    columns: dict[str, pa.Array] = {}
    if form == "columns":
        prefix, first = draw(st.sampled_from(["pix", "pixel"])), draw(st.sampled_from([0, 1]))
        for j in range(p):
            columns[f"{prefix}{first + j}"] = pa.array(px[:, j])
        if draw(st.integers(0, 5)) == 0:  # a gap, or a stranger pixel column
            name = draw(st.sampled_from([*columns, "pix07", f"{prefix}{first + p + 1}"]))
            columns.pop(name, None) if name in columns else columns.update(
                {name: pa.array(px[:, 0])}
            )
            notes.append(f"changed {name}")
    else:
        rows: list[Any] = [bytes(r) for r in px] if form != "list" else [list(r) for r in px]
        if n and draw(st.integers(0, 3)) == 0:
            at = draw(st.integers(0, n - 1))
            rows[at] = None if draw(st.booleans()) else rows[at][: max(p - 1, 0)]
            notes.append(f"row {at + 1} short or null")
        t = {"fixed": pa.binary(p), "binary": pa.binary(), "list": pa.list_(pa.uint8())}[form]
        if form == "fixed":
            rows = [None if r is None or len(r) != p else r for r in rows]
        columns["pixels"] = pa.array(rows, t)
    key = draw(st.sampled_from(["ID", "id"])) if kind == "unlabelled" else "label"
    if kind == "unlabelled":
        columns[key] = pa.array([f"r{i}" for i in range(n)], pa.string())
    elif draw(st.booleans()):
        values = [int(v) for v in rng.integers(0, 3, n)]
        label_type = draw(st.sampled_from([pa.int8(), pa.uint16(), pa.int64()]))
        bad = [None, 3, 10] + ([-1] if label_type != pa.uint16() else [])
        if n and draw(st.integers(0, 2)) == 0:
            values[draw(st.integers(0, n - 1))] = draw(st.sampled_from(bad))
        columns[key] = pa.array(values, label_type)
    else:
        labels = [draw(st.sampled_from(LABEL_VALUES[:6])) for _ in range(n)]
        if n and draw(st.integers(0, 2)) == 0:
            labels[draw(st.integers(0, n - 1))] = draw(st.sampled_from([None, *LABEL_VALUES]))
        array = pa.array(labels, pa.string())
        columns[key] = array.dictionary_encode() if draw(st.booleans()) else array
    order = draw(st.permutations(list(columns)))
    table = pa.Table.from_arrays([columns[c] for c in order], names=order)
    pixels = draw(st.sampled_from([None, p, p, p + 1]))
    return GeoCase(kind, table, notes, pixels, draw(st.sampled_from([None, NAMES, CLASSES])))


def _geo_schema(table: pa.Table, case: GeoCase) -> tuple[str, list[str], int | None] | Bad:
    """(key, pixel columns in pixel order, P or None for the first row's) or a schema Bad."""
    names = table.schema.names
    key = _key(names, case.kind)
    if key is None:
        return Bad(None, None)
    if "pixels" in names:
        t = table.schema.field("pixels").type
        size = t.byte_width if isinstance(t, pa.FixedSizeBinaryType) else case.pixels
        if case.pixels is not None and size != case.pixels:
            return Bad(None, "pixels")
        return key, ["pixels"], size
    found = sorted((int(m.group(2)), m.group(0)) for m in map(PIXEL_NAME.fullmatch, names) if m)
    expected = case.pixels if case.pixels is not None else len(found)
    if not found or not _pixel_names_ok(names, expected):
        return Bad(None, None)
    return key, [name for _, name in found], expected


def _geo_label(value: Any, classes: tuple[str, ...] | None) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, int):
        if classes is None:
            return value if value >= 0 else None
        return value if 0 <= value < len(classes) else None
    text = value.strip(" \t")
    digits = text.isascii() and text.isdigit()
    if classes is not None:
        if text in classes:
            return classes.index(text)
        return int(text) if digits and int(text) < len(classes) else None
    return None if not text else int(text) if digits else text


def geo_reference(case: GeoCase) -> Good | Bad:
    verdict = _geo_schema(case.table, case)
    if isinstance(verdict, Bad):
        return verdict
    key, pixel_columns, size = verdict
    used = [c for c in case.table.schema.names if c in (key, *pixel_columns)]
    values = {c: case.table.column(c).to_pylist() for c in used}
    if pixel_columns == ["pixels"] and size is None and case.table.num_rows:
        first = values["pixels"][0]
        size = len(first) if first else 0  # the first row's size, which must be >= 1
    rows, labels = [], []
    for r in range(case.table.num_rows):
        for c in used:
            v = values[c][r]
            if c == key and case.kind == "labelled":
                ok = _geo_label(v, case.classes) is not None
            elif c == key:
                ok = v is not None
            else:
                ok = v is not None and (c != "pixels" or (len(v) == size and size > 0))
            if not ok:
                return Bad(r + 1, c)
        if pixel_columns == ["pixels"]:
            rows.append(list(values["pixels"][r]))
        else:
            rows.append([values[c][r] for c in pixel_columns])
        if case.kind == "labelled":
            labels.append(_geo_label(values[key][r], case.classes))
    pixels = np.array(rows, np.uint8).reshape(len(rows), -1) if rows else np.empty((0, 0))
    ids = case.table.column(key).combine_chunks() if case.kind == "unlabelled" else None
    return Good(pixels, ids, labels if case.kind == "labelled" else None)  # type: ignore[arg-type]


@settings(max_examples=150, derandomize=True, **COMMON)
@given(case=geometry_cases())
def test_table_reader_matches_reference_at_any_geometry(case: GeoCase, workdir: Path) -> None:
    path = workdir / f"geo{next(_counter)}.parquet"
    pq.write_table(case.table, path, row_group_size=2)
    expected = geo_reference(case)
    try:
        chunks = list(
            TableReader(path, case.kind, batch_rows=2, pixels=case.pixels, classes=case.classes)
        )  # type: ignore[arg-type]
        got: Good | Bad = Good(
            np.concatenate([c.pixels for c in chunks]) if chunks else np.empty((0, 0)),
            pa.concat_arrays([c.ids for c in chunks]) if chunks and chunks[0].ids else None,  # type: ignore[misc]
            [v if isinstance(v, str) else int(v) for c in chunks for v in c.labels]  # type: ignore[union-attr]
            if case.kind == "labelled"
            else None,
        )
    except DataError as e:
        assert "\n" not in str(e)
        got = _where(e, path)
    finally:
        path.unlink()
    event(f"{'accepted' if isinstance(got, Good) else 'refused'}")
    if isinstance(expected, Bad):
        assert got == expected, f"fcls: {got}, reference: {expected}"
        return
    assert isinstance(got, Good), f"fcls refused a valid file: {got}"
    if len(expected.pixels):
        np.testing.assert_array_equal(got.pixels, expected.pixels)
        assert [str(v) for v in got.labels or []] == [str(v) for v in expected.labels or []]
        if expected.ids is not None:
            assert got.ids is not None and got.ids.to_pylist() == expected.ids.to_pylist()
