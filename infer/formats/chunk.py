"""`Chunk`: consecutive rows as every reader yields them (CSV, Parquet, Arrow IPC)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Chunk:
    """A block of consecutive rows: pixels always, IDs for unlabelled files, labels for labelled ones."""

    pixels: np.ndarray  # (n, 1024) uint8
    ids: pa.Array | None  # (n,) string, verbatim from the file
    labels: np.ndarray | None  # (n,) int64 in 0..9
    first_line: int  # 1-based file line of the first row

    def __len__(self) -> int:
        return int(self.pixels.shape[0])
