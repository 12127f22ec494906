"""fcls.train.augment: per-batch augmentation equals its documented transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcls.infer.common.spec import DEFAULT_SPEC
from fcls.train import augment
from fcls.train.data import augment as notebook_views

SIDE = DEFAULT_SPEC.height  # the notebook's 32x32 images


def _reference(pixels: np.ndarray, d: augment.Draws) -> np.ndarray:
    """The module docstring's three steps, one image at a time, with plain slicing."""
    views = notebook_views(pixels).reshape(len(pixels), 4, SIDE, SIDE)  # tested vs the notebook
    out = np.zeros((len(pixels), SIDE, SIDE), dtype=np.uint8)
    for n in range(len(pixels)):
        image = views[n, d.view[n]]
        dy, dx = int(d.dy[n]), int(d.dx[n])
        for r in range(SIDE):
            for c in range(SIDE):
                if 0 <= r - dy < SIDE and 0 <= c - dx < SIDE:
                    out[n, r, c] = image[r - dy, c - dx]
        top, left, height, width = (int(v) for v in d.erase[n])
        out[n, top : top + height, left : left + width] = 0
    return out.reshape(len(pixels), -1)


@pytest.mark.parametrize(("seed", "shift", "erase"), [(0, 2, 0.5), (1, 0, 0.0), (2, 5, 1.0)])
def test_apply_equals_the_documented_transform(seed: int, shift: int, erase: float):
    pixels = np.random.default_rng(seed).integers(0, 256, (40, SIDE * SIDE), dtype=np.uint8)
    d = augment.draw(np.random.default_rng([seed, 1]), len(pixels), shift, erase)
    got = augment.apply(torch.from_numpy(pixels), d)
    assert got.dtype == torch.uint8 and got.shape == (40, SIDE * SIDE)
    np.testing.assert_array_equal(got.numpy(), _reference(pixels, d))


def test_draws_are_reproducible_and_in_range():
    a = augment.draw(np.random.default_rng([42, 0, 3, 1]), 5000, 2, 0.25)
    b = augment.draw(np.random.default_rng([42, 0, 3, 1]), 5000, 2, 0.25)
    for field in ("view", "dy", "dx", "erase"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert set(np.unique(a.view)) == {0, 1, 2, 3}
    assert set(np.unique(a.dy)) == set(np.unique(a.dx)) == {-2, -1, 0, 1, 2}
    top, left, height, width = a.erase.T
    erased = height > 0
    assert abs(erased.mean() - 0.25) < 0.03  # 5,000 draws: 4 standard deviations is 0.024
    assert (height[erased] >= augment.ERASE_MIN).all() and (height <= augment.ERASE_MAX).all()
    assert (width >= augment.ERASE_MIN).all() and (width <= augment.ERASE_MAX).all()
    assert (top + height <= SIDE).all() and (left + width <= SIDE).all()
    assert (top >= 0).all() and (left >= 0).all()


def test_no_shift_no_erase_gives_the_notebook_views():
    pixels = np.random.default_rng(3).integers(0, 256, (8, SIDE * SIDE), dtype=np.uint8)
    d = augment.draw(np.random.default_rng(0), 8, 0, 0.0)
    got = augment.apply(torch.from_numpy(pixels), d).numpy()
    views = notebook_views(pixels).reshape(8, 4, -1)
    np.testing.assert_array_equal(got, views[np.arange(8), d.view])
