"""What an fcls data row is: 1,024 pixels of a 32x32 grayscale image and a label 0..9,
and the defaults every command shares (torch-free, click-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

N_PIXELS = 1024


PIXEL_COLUMNS: tuple[str, ...] = tuple(f"pix{i}" for i in range(1, N_PIXELS + 1))


N_CLASSES = 10


Kind = Literal["eval", "train"]


@dataclass(frozen=True)
class Chunk:
    """A block of consecutive rows: pixels always, IDs for eval files, labels for train files."""

    pixels: np.ndarray  # (n, 1024) uint8
    ids: pa.Array | None  # (n,) string, verbatim from the file
    labels: np.ndarray | None  # (n,) int64 in 0..9
    first_line: int  # 1-based file line of the first row

    def __len__(self) -> int:
        return int(self.pixels.shape[0])
