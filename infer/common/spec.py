"""What an fcls data row is: 1,024 pixels of a 32x32 grayscale image and a label 0..9,
and the defaults every command shares (standard library only: --help stays cheap)."""

from __future__ import annotations

from typing import Literal

N_PIXELS = 1024
PIXEL_COLUMNS: tuple[str, ...] = tuple(f"pix{i}" for i in range(1, N_PIXELS + 1))
N_CLASSES = 10
DEFAULT_BATCH_SIZE = 64  # rows per onnxruntime call: every command's and the library's default

# unlabelled: ID,pix1..pix1024 (what fcls-infer scores); labelled: pix1..pix1024,label
Kind = Literal["unlabelled", "labelled"]
