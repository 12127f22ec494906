"""fcls.train.data / fcls.train.augment at other geometries: non-square, RGB (HWC rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import zoom

from fcls.infer.common.errors import ConfigError
from fcls.infer.common.spec import ImageSpec
from fcls.train import augment
from fcls.train.data import augment as views

GRAY = [ImageSpec(28, 28, 1), ImageSpec(24, 30, 1), ImageSpec(8, 8, 1)]


def _notebook_views(image: np.ndarray, k: int = 2) -> list[np.ndarray]:
    """The notebook's `augment`, one (H, W) image at a time, zoomed per axis to (H, W)."""
    h, w = image.shape
    crop = image[k : h - k, k : w - k]
    zoomed = zoom(crop, (h / (h - 2 * k), w / (w - 2 * k)), order=0)
    return [image, np.fliplr(image), zoomed, np.fliplr(zoomed)]


@pytest.mark.parametrize("spec", GRAY, ids=lambda s: s.size)
def test_x4_views_at_other_sizes_are_the_notebooks(spec: ImageSpec):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, spec.n_pixels), dtype=np.uint8)
    got = views(pixels, spec=spec).reshape(5, 4, spec.height, spec.width)
    for i in range(5):
        want = _notebook_views(pixels[i].reshape(spec.height, spec.width))
        for v in range(4):
            np.testing.assert_array_equal(got[i, v], want[v])


def _channels(rows: np.ndarray, spec: ImageSpec) -> list[np.ndarray]:
    """HWC rows -> one grayscale row array per channel."""
    hwc = rows.reshape(len(rows), spec.height, spec.width, spec.channels)
    return [hwc[..., c].reshape(len(rows), -1) for c in range(spec.channels)]


def test_x4_views_move_whole_rgb_pixels():
    spec, gray = ImageSpec(20, 26, 3, ("a", "b")), ImageSpec(20, 26, 1)
    pixels = np.random.default_rng(1).integers(0, 256, (4, spec.n_pixels), dtype=np.uint8)
    got = _channels(views(pixels, spec=spec), spec)
    for c, channel in enumerate(_channels(pixels, spec)):
        np.testing.assert_array_equal(got[c], views(channel, spec=gray))


def test_per_batch_augmentation_moves_whole_rgb_pixels():
    spec, gray = ImageSpec(20, 26, 3, ("a", "b")), ImageSpec(20, 26, 1)
    pixels = np.random.default_rng(2).integers(0, 256, (16, spec.n_pixels), dtype=np.uint8)
    d = augment.draw(np.random.default_rng(3), 16, 2, 1.0, spec)
    top, left, height, width = d.erase.T
    assert (top + height <= 20).all() and (left + width <= 26).all()
    got = augment.apply(torch.from_numpy(pixels), d, spec=spec).numpy()
    assert got.shape == pixels.shape
    for c, channel in enumerate(_channels(pixels, spec)):
        alone = augment.apply(torch.from_numpy(np.ascontiguousarray(channel)), d, spec=gray)
        np.testing.assert_array_equal(_channels(got, spec)[c], alone.numpy())


def test_erase_fits_small_images():
    spec = ImageSpec(6, 5, 1)
    d = augment.draw(np.random.default_rng(0), 500, 1, 1.0, spec)
    top, left, height, width = d.erase.T
    assert height.max() <= 6 and width.max() <= 5
    assert (top + height <= 6).all() and (left + width <= 5).all()


def test_a_zoom_that_leaves_nothing_is_refused():
    with pytest.raises(ConfigError, match="leaves nothing of a 4x4 image"):
        views(np.zeros((1, 16), np.uint8), spec=ImageSpec(4, 4, 1))
