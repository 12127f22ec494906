"""The results format: `ID,label[,p...]` CSV text and the Parquet / Arrow IPC schema and batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OOD_COLUMN = "ood"  # fcls-infer --flag-ood: whether the row is beyond the reference's OOD tail
RESULT_GROUP_ROWS = 1 << 16  # rows per row group of a Parquet results file (~1 MB of ID,label)


def csv_field(values: pa.Array) -> pa.Array:
    """Strings as CSV fields: quoted (quotes doubled) only where a comma, quote or newline needs it."""
    if values.type != pa.string():  # integer IDs of a Parquet input, large strings
        values = pc.cast(values, pa.string())
    needs = pc.match_substring_regex(values, '[",\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def format_rows(
    ids: pa.Array,
    labels: np.ndarray,
    proba: np.ndarray | None,
    names: list[str] | None,
    ood: np.ndarray | None = None,
) -> bytes:
    """CSV text of the rows, built column-wise by Arrow kernels (no Python loop over rows);
    `ood`: (n,) bool, written as a last column of 0/1."""
    ids = csv_field(ids)
    if names:
        label = csv_field(pa.array(np.asarray(names, dtype=object)[labels], pa.string()))
    else:
        label = pc.cast(pa.array(labels), pa.string())
    columns = [ids, label]
    if proba is not None:
        columns += [pc.cast(pa.array(proba[:, j]), pa.string()) for j in range(proba.shape[1])]
    if ood is not None:
        columns.append(pc.cast(pa.array(ood.astype(np.int8)), pa.string()))
    lines = pc.binary_join_element_wise(*columns, ",")
    text = pc.binary_join(
        pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n"
    )
    return text[0].as_py().encode() + b"\n"


def header_line(proba: bool, names: bool, classes: list[str], ood: bool = False) -> bytes:
    """The output header: ID,label and, with proba, one column per class; then ood."""
    cols = ["ID", "label"]
    if proba:
        cols += [f"p_{c}" if names else f"p{j}" for j, c in enumerate(classes)]
    if ood:
        cols.append(OOD_COLUMN)
    return (",".join(csv_field(pa.array(cols)).to_pylist()) + "\n").encode()


def results_schema(
    id_type: pa.DataType, proba: bool, names: bool, classes: list[str], ood: bool = False
) -> pa.Schema:
    """Columns of a Parquet / IPC results file: ID as in the input, label (int64, or the class
    name with `names`), with `proba` one float32 probability column per class, with `ood` a
    bool column."""
    fields = [pa.field("ID", id_type, nullable=False)]
    fields.append(pa.field("label", pa.string() if names else pa.int64(), nullable=False))
    if proba:
        fields += [
            pa.field(f"p_{c}" if names else f"p{j}", pa.float32(), nullable=False)
            for j, c in enumerate(classes)
        ]
    if ood:
        fields.append(pa.field(OOD_COLUMN, pa.bool_(), nullable=False))
    return pa.schema(fields)


def results_batch(
    schema: pa.Schema,
    ids: pa.Array,
    labels: np.ndarray,
    proba: np.ndarray | None,
    names: list[str] | None,
    ood: np.ndarray | None = None,
) -> pa.RecordBatch:
    """One block of results as a record batch of `schema` (see `results_schema`)."""
    label = (
        pa.array(np.asarray(names, dtype=object)[labels], pa.string())
        if names
        else pa.array(labels.astype(np.int64, copy=False))
    )
    columns = [ids.cast(schema.field("ID").type), label]
    if proba is not None:
        columns += [pa.array(proba[:, j].astype(np.float32)) for j in range(proba.shape[1])]
    if ood is not None:
        columns.append(pa.array(ood.astype(bool)))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
