"""The notebook's data pipeline: rows -> uint8 arrays -> 60/20/20 split -> x4 flip/zoom
augmentation, for images of any height, width and channels (rows are HWC)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fcls.infer.common.errors import ConfigError, DataError
from fcls.infer.common.labels import classes_of, label_indices
from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec, SpecError, geometry_for
from fcls.infer.formats.sources import read_train

# Transitional: the notebook's image side, for tests written before specs existed; fcls.train
# itself reads every size from an ImageSpec.
ZOOM_K = 2  # the notebook's zoom: crop 2 pixels from each border, scale back to full size
# Fashion-MNIST's classes, for --class-names in docs and tests: no longer a default
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
    "dataset_spec",
    "load_dataset",
    "load_digits_32",
    "split",
]


@dataclass(frozen=True)
class Split:
    """The notebook's train / validation / test partition."""

    x_train: np.ndarray  # (0.6N, P) uint8
    y_train: np.ndarray  # (0.6N,) int64
    x_val: np.ndarray  # (0.2N, P) uint8
    y_val: np.ndarray
    x_test: np.ndarray  # (0.2N, P) uint8
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Row counts per part."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def split(pixels: np.ndarray, labels: np.ndarray, seed: int = 42) -> Split:
    """Exactly the notebook's split: 20% test, then 25% of the rest as validation."""
    rest, test = shuffle_split(len(labels), 0.2, seed)
    train, val = shuffle_split(len(rest), 0.25, seed)
    train, val = rest[train], rest[val]
    return Split(pixels[train], labels[train], pixels[val], labels[val], pixels[test], labels[test])


def shuffle_split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices as scikit-learn's `train_test_split(test_size=test_size,
    random_state=seed)` picks them: one permutation from `RandomState(seed)`, its first
    ceil(test_size * n) rows the test part, the rest train (tests compare the two).

    Not scikit-learn's own: importing it adds over 100 MB to the training process's memory.
    """
    n_test = math.ceil(test_size * n)
    if n_test >= n:
        raise DataError("data", f"{n} rows cannot be split {1 - test_size:.0%}/{test_size:.0%}")
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_test:], perm[:n_test]


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


def _shape(spec: ImageSpec) -> tuple[int, int, int]:
    return spec.height, spec.width, spec.channels


@lru_cache(maxsize=8)
def _zoom_index(k: int, height: int, width: int) -> np.ndarray:
    """Flat source index, into the (H-2k) x (W-2k) crop, of each pixel of scipy's order-0
    zoom back to H x W."""
    from scipy.ndimage import zoom

    ch, cw = height - 2 * k, width - 2 * k
    if ch < 1 or cw < 1:
        raise ConfigError(
            f"zoom by {k} pixels a side leaves nothing of a {height}x{width} image: "
            f"the zoom needs images larger than {2 * k}x{2 * k}"
        )
    # Zooming an image of its own flat indices with nearest-neighbour interpolation yields the
    # exact gather map scipy would apply to any image, so one fancy-index replaces N zoom calls.
    index = np.arange(ch * cw, dtype=np.int64).reshape(ch, cw)
    mapped = zoom(index, (height / ch, width / cw), order=0)
    assert mapped.shape == (height, width), mapped.shape
    return mapped.reshape(-1)  # (H*W,) int64


@lru_cache(maxsize=8)
def pixel_view_index(k: int, height: int, width: int) -> np.ndarray:
    """(4, H*W) flat source pixel (row * W + column) of each of the notebook's views:
    original, mirror, zoom (the centre crop without a k-pixel border, scaled back to H x W)
    and mirrored zoom."""
    cw = width - 2 * k
    inner = _zoom_index(k, height, width)  # index into the crop
    zoom = ((k + inner // cw) * width + k + inner % cw).reshape(height, width)
    plain = np.arange(height * width, dtype=np.int64).reshape(height, width)
    views = np.stack([plain, plain[:, ::-1], zoom, zoom[:, ::-1]]).reshape(4, height * width)
    views.setflags(write=False)  # cached and shared
    return views


def with_channels(pixel_index: np.ndarray, channels: int) -> np.ndarray:
    """Pixel indices (..., H*W) -> value indices (..., H*W*C) into HWC rows: a pixel moves
    with all of its channels."""
    if channels == 1:
        return pixel_index
    values = pixel_index[..., None] * channels + np.arange(channels, dtype=np.int64)
    return values.reshape(*pixel_index.shape[:-1], -1)


@lru_cache(maxsize=8)
def _view_index(k: int, height: int, width: int, channels: int) -> np.ndarray:
    views = with_channels(pixel_view_index(k, height, width), channels)
    views.setflags(write=False)  # cached and shared
    return views


def view_index(k: int = ZOOM_K, spec: ImageSpec = DEFAULT_SPEC) -> np.ndarray:
    """(4, H*W*C) flat source value of each of the notebook's views (`pixel_view_index`)
    for HWC rows of `spec`."""
    return _view_index(k, *_shape(spec))


def augment(pixels: np.ndarray, k: int = ZOOM_K, spec: ImageSpec = DEFAULT_SPEC) -> np.ndarray:
    """The notebook's `data_augment`, vectorized: per image original, flip, zoomed crop,
    flipped crop, for HWC rows of any geometry."""
    out = pixels[:, view_index(k, spec)]  # (N, 4, P)
    return np.ascontiguousarray(out.reshape(-1, spec.n_pixels), dtype=np.uint8)


def augment_labels(labels: np.ndarray) -> np.ndarray:
    """Labels matching `augment`'s interleaving (each repeated 4 times)."""
    return np.repeat(labels, 4)


def load_digits_32() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as (1797, 32*32) uint8 32x32 images and int64 labels.

    Read from the file scikit-learn ships (64 values 0..16 and the digit per line), as its
    `load_digits` reads it, without importing scikit-learn (see `shuffle_split`).
    """
    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:
        raise ImportError("scikit-learn is not installed")
    path = Path(found.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # (1797, 65)
    small = table[:, :-1].reshape(-1, 8, 8)  # float in 0..16
    big = np.kron(small, np.ones((4, 4)))  # nearest-neighbour upscale to (1797, 32, 32)
    pixels = np.rint(big * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return pixels.reshape(len(pixels), -1), table[:, -1].astype(np.int64)


def load_dataset(
    data: Path | None,
    limit: int | None = None,
    class_names: tuple[str, ...] | None = None,
    image_size: str | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    """(pixels (N, P) uint8, labels (N,) int64 class indices, class names, source name) of a
    train file (CSV, .csv.gz, Parquet, Arrow IPC), a folder of images in class folders, or
    the embedded digits. A folder's images are converted to `image_size` (else to its first
    image's size: `image_size_of`).

    Integer labels 0..K-1 are classes named by number, or by `class_names` (K of them);
    any other labels name their classes (sorted). DataError or ConfigError say what is wrong.
    """
    if data is None:
        pixels, raw = load_digits_32()
        if limit is not None:
            pixels, raw = pixels[:limit], raw[:limit]
        source = DIGITS_SOURCE
    else:  # a folder's images are converted to image_size; file rows keep their own count
        pixels, raw = read_train(data, limit=limit, image_size=image_size)
        source = str(data)
    try:
        names, integer = classes_of(raw)
        labels, bad = label_indices(raw, names)
    except SpecError as e:
        raise DataError(source, str(e)) from None
    if bad < len(labels):  # classes_of saw every label: only a reader bug gets here
        raise DataError(source, f"row {bad + 1}: label {raw[bad]!r} is not a class")
    return pixels, labels, _named(names, integer, class_names, source), source


def _named(
    names: tuple[str, ...], integer: bool, given: tuple[str, ...] | None, source: str
) -> tuple[str, ...]:
    """The data's class names, or `given` (--class-names) for its integer classes."""
    if given is None:
        return names
    if not integer:
        raise ConfigError(
            f"--class-names names integer classes, but the labels of {source} are names "
            f"already ({len(names)} classes: {', '.join(names[:5])}"
            f"{' ...' if len(names) > 5 else ''}): leave --class-names out"
        )
    if len(given) != len(names):
        raise ConfigError(
            f"--class-names: {len(given)} names given, the data has {len(names)} classes "
            f"(labels 0..{len(names) - 1}): give exactly {len(names)}"
        )
    return tuple(given)


def dataset_spec(
    pixels: np.ndarray, class_names: tuple[str, ...], image_size: str | None, source: str
) -> ImageSpec:
    """The ImageSpec of rows of `pixels`: --image-size, else a square grayscale image."""
    try:
        height, width, channels = geometry_for(pixels.shape[1], image_size)
        return ImageSpec(height, width, channels, class_names)
    except SpecError as e:
        raise DataError(source, str(e)) from None
