"""The ingest half of fcls-bench: CSV parsers side by side, and fcls-infer's ceiling.

The ceiling is `fcls-infer` end to end with a near-free model (an ONNX graph with fcls's
interface that does almost no work), so reading, parsing, batching, formatting and writing
all count and the model does not. Every parser's pixels are checked against fcls's (sha256
of the (n, P) uint8 matrix); the ceiling's labels against the same pixels.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcls.infer.formats.csvfile import CsvReader

from .rss import peak_rss_mb

NEAR_FREE_CLASSES = 10
PARSERS = ("fcls", "pyarrow", "pandas", "polars", "polars-uint8")


@dataclass(frozen=True)
class Parsed:
    """One parser's run over a file."""

    parser: str
    rows: int
    seconds: float
    digest: str  # sha256 of the (rows, P) uint8 pixels, C order
    near_free_digest: str  # sha256 of the near-free model's labels for these pixels
    peak_rss_mb: float

    @property
    def rows_per_s(self) -> float:
        """Rows per second, file to uint8 matrix."""
        return self.rows / self.seconds


def _digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).data).hexdigest()


def labels_digest(labels: np.ndarray) -> str:
    """sha256 of (n,) labels as int64, comparable with `Parsed.near_free_digest`."""
    return _digest(labels.astype(np.int64))


def pixel_columns(src: Path) -> list[str]:
    """The columns of a plain ID,pix1..pixN CSV but ID, from its header line, as a user's
    script finds them."""
    with open(src, encoding="utf-8") as f:
        return [c for c in f.readline().strip().split(",") if c != "ID"]


def parse_with(parser: str, src: Path) -> Parsed:
    """Read `src` (ID,pix1..pixN) into a (n, N) uint8 matrix with one parser."""
    t0 = time.perf_counter()
    if parser == "fcls":
        pixels = np.concatenate([c.pixels for c in CsvReader(src)])
    elif parser == "pyarrow":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        columns = pixel_columns(src)
        types = dict.fromkeys(columns, pa.uint8())
        table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(column_types=types))
        pixels = np.column_stack([table.column(c).to_numpy() for c in columns])
    elif parser == "pandas":
        import pandas as pd

        pixels = pd.read_csv(src).drop(columns="ID").to_numpy().astype(np.uint8)
    elif parser == "polars":
        import polars as pl

        pixels = pl.read_csv(src).drop("ID").to_numpy().astype(np.uint8)
    elif parser == "polars-uint8":
        import polars as pl

        schema = {"ID": pl.String, **dict.fromkeys(pixel_columns(src), pl.UInt8)}
        pixels = pl.read_csv(src, schema=schema).drop("ID").to_numpy()
    else:
        raise ValueError(f"unknown parser {parser!r} (known: {', '.join(PARSERS)})")
    seconds = time.perf_counter() - t0
    labels = _digest(near_free_labels(pixels))
    return Parsed(parser, len(pixels), seconds, _digest(pixels), labels, peak_rss_mb())


def parser_missing(parser: str) -> str | None:
    """Why a parser cannot run here (its library is not installed), or None."""
    module = {"pandas": "pandas", "polars": "polars", "polars-uint8": "polars"}.get(parser)
    if module is None:
        return None
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{parser}: {module} is not installed (pip install {module})"
    return None


def near_free_model(path: Path, n_pixels: int) -> Path:
    """An ONNX graph with fcls's interface (uint8 [batch, P] -> logits, label) that does
    almost nothing: its logits are the first ten pixels, its label their argmax."""
    import onnx
    from onnx import TensorProto, helper

    if path.is_file():
        return path
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [NEAR_FREE_CLASSES])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["pixels", "starts", "ends", "axes"], ["first"]),
            helper.make_node("Cast", ["first"], ["logits"], to=TensorProto.FLOAT),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "near_free",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", n_pixels])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=[starts, ends, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime fcls supports
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def near_free_labels(pixels: np.ndarray) -> np.ndarray:
    """What the near-free model answers for (n, P) uint8 rows."""
    return pixels[:, :NEAR_FREE_CLASSES].argmax(axis=1).astype(np.int64)
