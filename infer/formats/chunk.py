"""`Chunk`: consecutive parsed rows as every reader yields them (CSV, Parquet, Arrow IPC)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True, init=False)
class Chunk:
    """Consecutive parsed rows: pixels always, IDs for unlabelled files, labels for labelled ones."""

    pixels: np.ndarray  # (n, 1024) uint8
    ids: pa.Array | None  # (n,) string, verbatim from the file
    labels: np.ndarray | None  # (n,) int64 in 0..9
    start: int  # CSV: file line of the first row; Parquet/Arrow IPC: its data row, from 1

    def __init__(
        self,
        pixels: np.ndarray,
        ids: pa.Array | None,
        labels: np.ndarray | None,
        start: int | None = None,
        *,
        first_line: int | None = None,
    ) -> None:
        # `first_line`: the former name of `start`, still accepted
        where = start if start is not None else first_line
        if where is None:
            raise TypeError("Chunk() needs start")
        for name, value in (("pixels", pixels), ("ids", ids), ("labels", labels)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "start", where)

    @property
    def first_line(self) -> int:
        """The former name of `start` (read-only)."""
        return self.start

    def __len__(self) -> int:
        return int(self.pixels.shape[0])
