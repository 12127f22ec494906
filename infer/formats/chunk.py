"""`Chunk`: consecutive parsed rows as every reader yields them (CSV, Parquet, Arrow IPC)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Chunk:
    """Consecutive parsed rows: pixels always, IDs for unlabelled files, labels for labelled ones."""

    pixels: np.ndarray  # (n, P) uint8: P pixels per row, in pixel order (HWC)
    ids: pa.Array | None  # (n,) the ID column: CSV strings verbatim, a table's own type
    # (n,) with a model's classes: int64 class indices 0..K-1; without: the raw labels, int64
    # when every label of the chunk is an integer, else an object array of str
    labels: np.ndarray | None
    start: int  # CSV: file line of the first row; Parquet/Arrow IPC: its data row, from 1

    def __len__(self) -> int:
        return int(self.pixels.shape[0])
