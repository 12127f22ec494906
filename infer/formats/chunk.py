"""`Chunk`: consecutive parsed rows as every reader yields them (CSV, Parquet, Arrow IPC)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Chunk:
    """Consecutive parsed rows: pixels always, IDs for unlabelled files, labels for labelled ones."""

    pixels: np.ndarray  # (n, 1024) uint8
    ids: pa.Array | None  # (n,) string, verbatim from the file
    labels: np.ndarray | None  # (n,) int64 in 0..9
    start: int  # CSV: file line of the first row; Parquet/Arrow IPC: its data row, from 1

    def __len__(self) -> int:
        return int(self.pixels.shape[0])
