"""Per-batch augmentation on the training device: the notebook's four views, drawn at random.

For each image of a batch, `draw` picks (from a seeded numpy generator, so a resumed run
draws the same) and `apply` computes:
1. one of the notebook's four views (`fcls.train.data.augment`): the original, its mirror,
   the centre crop zoomed back to full size, or the mirrored zoom;
2. a shift by (dy, dx) pixels, each uniform in -shift..shift, uncovered pixels set to 0;
3. with probability `erase`, a rectangle of uniform height and width in 4..12 pixels (at
   most the image's), placed uniformly inside the image, set to 0 (random erasing).

Every step is a gather of source indices, so a batch costs one pass over it on any device;
the uint8 rows stay uint8. Rows are HWC: a pixel moves, or is blanked, with all its channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec

from .data import ZOOM_K, pixel_view_index

ERASE_MIN, ERASE_MAX = 4, 12  # rectangle side range in pixels, inclusive


@dataclass(frozen=True)
class Draws:
    """The random choices for one batch, one entry per image (int64 arrays)."""

    view: np.ndarray  # 0 original, 1 mirror, 2 zoom, 3 mirrored zoom
    dy: np.ndarray
    dx: np.ndarray
    erase: np.ndarray  # (n, 4): top, left, height, width; height 0 means no rectangle


def draw(
    rng: np.random.Generator, n: int, shift: int, erase: float, spec: ImageSpec = DEFAULT_SPEC
) -> Draws:
    """Draw the choices for `n` images of `spec`'s size."""
    view = rng.integers(0, 4, n)
    dy, dx = rng.integers(-shift, shift + 1, (2, n))
    sides = np.array([[spec.height], [spec.width]])  # a rectangle never outgrows the image
    height, width = rng.integers(
        np.minimum(ERASE_MIN, sides), np.minimum(ERASE_MAX, sides) + 1, (2, n)
    )
    top = rng.integers(0, spec.height - height + 1)
    left = rng.integers(0, spec.width - width + 1)
    erased = rng.random(n) < erase
    box = np.stack([top, left, np.where(erased, height, 0), width], axis=1)
    return Draws(view, dy, dx, box)


@lru_cache(maxsize=4)
def _views(device: torch.device, k: int, height: int, width: int) -> torch.Tensor:
    """(4, H*W) flat source pixel of each view, on `device`."""
    return torch.from_numpy(pixel_view_index(k, height, width).copy()).to(device)


def apply(
    rows: torch.Tensor, d: Draws, k: int = ZOOM_K, spec: ImageSpec = DEFAULT_SPEC
) -> torch.Tensor:
    """(B, H*W*C) uint8 HWC rows -> the augmented (B, H*W*C) uint8 rows (module docstring)."""
    device = rows.device
    b, h, w, c = len(rows), spec.height, spec.width, spec.channels
    pos = torch.arange(h * w, device=device)
    r, col = (pos // w)[None], (pos % w)[None]  # (1, H*W) output pixel coordinates
    dy, dx = (torch.from_numpy(a).to(device)[:, None] for a in (d.dy, d.dx))
    sr, sc = r - dy, col - dx  # where each output pixel comes from in the shifted view
    inside = (sr >= 0) & (sr < h) & (sc >= 0) & (sc < w)
    in_view = sr.clamp(0, h - 1) * w + sc.clamp(0, w - 1)
    source = _views(device, k, h, w)[torch.from_numpy(d.view).to(device)].gather(1, in_view)
    box = torch.from_numpy(d.erase).to(device)
    top, left, height, width = (box[:, i : i + 1] for i in range(4))
    erased = (r >= top) & (r < top + height) & (col >= left) & (col < left + width)
    keep = inside & ~erased  # (B, H*W) per pixel
    if c > 1:  # every channel of a pixel: value index = pixel * C + channel
        channel = torch.arange(c, device=device)
        source = (source[..., None] * c + channel).reshape(b, -1)
        keep = keep[..., None].expand(b, h * w, c).reshape(b, -1)
    zero = torch.zeros((), dtype=rows.dtype, device=device)
    return torch.where(keep, rows.gather(1, source), zero).reshape(b, -1)
