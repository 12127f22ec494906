"""The notebook's data pipeline: CSV -> uint8 arrays -> 60/20/20 split -> x4 flip/zoom augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fcls.infer.common.errors import DataError
from fcls.infer.common.spec import N_PIXELS
from fcls.infer.formats.sources import read_train

SIDE = 32
ZOOM_K = 2  # the notebook's zoom: crop 2 pixels from each border, scale back to 32x32
FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
DIGITS_SOURCE = "sklearn-digits"

__all__ = [
    "DIGITS_SOURCE",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "Split",
    "augment",
    "load_dataset",
    "load_digits_32",
    "split",
]


@dataclass(frozen=True)
class Split:
    """The notebook's train / validation / test partition."""

    x_train: np.ndarray  # (0.6N, 1024) uint8
    y_train: np.ndarray  # (0.6N,) int64
    x_val: np.ndarray  # (0.2N, 1024) uint8
    y_val: np.ndarray
    x_test: np.ndarray  # (0.2N, 1024) uint8
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Row counts per part."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def split(pixels: np.ndarray, labels: np.ndarray, seed: int = 42) -> Split:
    """Exactly the notebook's split: 20% test, then 25% of the rest as validation."""
    from sklearn.model_selection import train_test_split

    x_tv, x_test, y_tv, y_test = train_test_split(pixels, labels, test_size=0.2, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_tv, y_tv, test_size=0.25, random_state=seed)
    return Split(x_train, y_train, x_val, y_val, x_test, y_test)


MIN_TEST_ROWS_PER_CLASS = 10  # fewer and a class's test accuracy is mostly noise


def check_split(parts: Split, source: str) -> list[str]:
    """Refuse a split where a part lacks a class the data has; return warnings for thin classes."""
    classes, totals = np.unique(
        np.concatenate([parts.y_train, parts.y_val, parts.y_test]), return_counts=True
    )
    for part, labels in (("train", parts.y_train), ("val", parts.y_val), ("test", parts.y_test)):
        have = set(np.unique(labels).tolist())
        lacking = [(int(c), int(n)) for c, n in zip(classes, totals) if int(c) not in have]
        if lacking:
            shown = ", ".join(f"class {c} ({n} rows)" for c, n in lacking[:5])
            raise DataError(
                source,
                f"too few rows: the 60/20/20 split leaves the {part} part without {shown} "
                f"(of {len(labels)} {part} rows); every class needs rows in every part, "
                f"so give each class at least {5 * MIN_TEST_ROWS_PER_CLASS} rows",
            )
    test_counts = dict(zip(*np.unique(parts.y_test, return_counts=True)))
    thin = [
        (int(c), int(test_counts[c])) for c in classes if test_counts[c] < MIN_TEST_ROWS_PER_CLASS
    ]
    if not thin:
        return []
    shown = ", ".join(f"{c}: {n}" for c, n in thin[:10])
    return [
        f"warning: {len(thin)} classes have fewer than {MIN_TEST_ROWS_PER_CLASS} test rows "
        f"({shown}): their test accuracy is mostly noise"
    ]


@lru_cache(maxsize=8)
def _zoom_index(k: int) -> np.ndarray:
    """Flat source index, into the (32-2k)^2 crop, of each pixel of scipy's order-0 zoom to 32x32."""
    from scipy.ndimage import zoom

    crop = SIDE - 2 * k
    # Zooming an image of its own flat indices with nearest-neighbour interpolation yields the
    # exact gather map scipy would apply to any image, so one fancy-index replaces N zoom calls.
    index = np.arange(crop * crop, dtype=np.int64).reshape(crop, crop)
    mapped = zoom(index, SIDE / crop, order=0)
    assert mapped.shape == (SIDE, SIDE), mapped.shape
    return mapped.reshape(-1)  # (1024,) int64


@lru_cache(maxsize=8)
def view_index(k: int = 2) -> np.ndarray:
    """(4, 1024) flat source pixel of each of the notebook's views: original, mirror, zoom
    (the centre crop without a k-pixel border, scaled back to 32x32) and mirrored zoom."""
    crop = SIDE - 2 * k
    inner = _zoom_index(k)  # index into the crop
    zoom = ((k + inner // crop) * SIDE + k + inner % crop).reshape(SIDE, SIDE)
    plain = np.arange(N_PIXELS, dtype=np.int64).reshape(SIDE, SIDE)
    views = np.stack([plain, plain[:, ::-1], zoom, zoom[:, ::-1]])
    views = views.reshape(4, N_PIXELS)
    views.setflags(write=False)  # cached and shared
    return views


def augment(pixels: np.ndarray, k: int = ZOOM_K) -> np.ndarray:
    """The notebook's `data_augment`, vectorized: per image original, flip, zoomed crop, flipped crop."""
    out = pixels[:, view_index(k)]  # (N, 4, 1024)
    return np.ascontiguousarray(out.reshape(-1, N_PIXELS), dtype=np.uint8)


def augment_labels(labels: np.ndarray) -> np.ndarray:
    """Labels matching `augment`'s interleaving (each repeated 4 times)."""
    return np.repeat(labels, 4)


def load_digits_32() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as (1797, 1024) uint8 32x32 images and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = digits.images  # (1797, 8, 8) float in 0..16
    big = np.kron(small, np.ones((4, 4)))  # nearest-neighbour upscale to (1797, 32, 32)
    pixels = np.rint(big * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return pixels.reshape(len(pixels), N_PIXELS), digits.target.astype(np.int64)


def load_dataset(
    data: Path | None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    """Pixels, labels, class names and a source name: a train file (CSV, .csv.gz, Parquet,
    Arrow IPC), or the embedded digits."""
    if data is None:
        pixels, labels = load_digits_32()
        if limit is not None:
            pixels, labels = pixels[:limit], labels[:limit]
        return pixels, labels, DIGIT_CLASSES, DIGITS_SOURCE
    pixels, labels = read_train(data, limit=limit)
    return pixels, labels, FASHION_CLASSES, str(data)
