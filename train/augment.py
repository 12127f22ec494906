"""Per-batch augmentation on the training device: the notebook's four views, drawn at random.

For each image of a batch, `draw` picks (from a seeded numpy generator, so a resumed run
draws the same) and `apply` computes:
1. one of the notebook's four views (`fcls.train.data.augment`): the original, its mirror,
   the centre crop zoomed back to 32x32, or the mirrored zoom;
2. a shift by (dy, dx) pixels, each uniform in -shift..shift, uncovered pixels set to 0;
3. with probability `erase`, a rectangle of uniform height and width in 4..12 pixels,
   placed uniformly inside the image, set to 0 (random erasing).

Every step is a gather of source pixel indices, so a batch costs one pass over it on any
device; the uint8 rows stay uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .data import SIDE, ZOOM_K, view_index

ERASE_MIN, ERASE_MAX = 4, 12  # rectangle side range in pixels, inclusive


@dataclass(frozen=True)
class Draws:
    """The random choices for one batch, one entry per image (int64 arrays)."""

    view: np.ndarray  # 0 original, 1 mirror, 2 zoom, 3 mirrored zoom
    dy: np.ndarray
    dx: np.ndarray
    erase: np.ndarray  # (n, 4): top, left, height, width; height 0 means no rectangle


def draw(rng: np.random.Generator, n: int, shift: int, erase: float) -> Draws:
    """Draw the choices for `n` images."""
    view = rng.integers(0, 4, n)
    dy, dx = rng.integers(-shift, shift + 1, (2, n))
    height, width = rng.integers(ERASE_MIN, ERASE_MAX + 1, (2, n))
    top = rng.integers(0, SIDE - height + 1)
    left = rng.integers(0, SIDE - width + 1)
    erased = rng.random(n) < erase
    box = np.stack([top, left, np.where(erased, height, 0), width], axis=1)
    return Draws(view, dy, dx, box)


@lru_cache(maxsize=4)
def _views(device: torch.device, k: int) -> torch.Tensor:
    """(4, 1024) flat source index of each view, on `device`."""
    return torch.from_numpy(view_index(k).copy()).to(device)


def apply(rows: torch.Tensor, d: Draws, k: int = ZOOM_K) -> torch.Tensor:
    """(B, 1024) uint8 rows -> the augmented (B, 1024) uint8 rows (module docstring)."""
    device = rows.device
    b = len(rows)
    pos = torch.arange(SIDE * SIDE, device=device)
    r, c = (pos // SIDE)[None], (pos % SIDE)[None]  # (1, 1024) output pixel coordinates
    dy, dx = (torch.from_numpy(a).to(device)[:, None] for a in (d.dy, d.dx))
    sr, sc = r - dy, c - dx  # where each output pixel comes from in the shifted view
    inside = (sr >= 0) & (sr < SIDE) & (sc >= 0) & (sc < SIDE)
    in_view = sr.clamp(0, SIDE - 1) * SIDE + sc.clamp(0, SIDE - 1)
    source = _views(device, k)[torch.from_numpy(d.view).to(device)].gather(1, in_view)
    box = torch.from_numpy(d.erase).to(device)
    top, left, height, width = (box[:, i : i + 1] for i in range(4))
    erased = (r >= top) & (r < top + height) & (c >= left) & (c < left + width)
    keep = inside & ~erased
    zero = torch.zeros((), dtype=rows.dtype, device=device)
    return torch.where(keep, rows.gather(1, source), zero).reshape(b, -1)
