"""The image spec: what one data row is (height, width, channels, pixel order, class names),
and the defaults every command shares (standard library only: --help stays cheap).

One `ImageSpec` value is built once from the training data, recorded in `model.pt` and in the
ONNX metadata, and read back from the model by every later command: nothing else in fcls
knows an image's size or its classes.

A row's pixels are the image row-major with channels interleaved (HWC, as numpy and PIL store
images): pixel k (from 0) is row k // (W*C), column (k // C) % W, channel k % C.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import FclsError

DEFAULT_BATCH_SIZE = 64  # rows per onnxruntime call: every command's and the library's default
SPEC_KEY = "image_spec"  # the ONNX metadata key that holds ImageSpec.to_json()
PIXEL_ORDER = "HWC"

# unlabelled: ID + pixel columns (what fcls-infer scores); labelled: pixel columns + label
Kind = Literal["unlabelled", "labelled"]


class SpecError(FclsError):
    """An image size, a class list or a recorded spec that cannot describe an image."""


def number_names(k: int) -> tuple[str, ...]:
    """The names of integer classes 0..k-1 when the user gave none: their numbers."""
    return tuple(str(i) for i in range(k))


@dataclass(frozen=True)
class ImageSpec:
    """The geometry and classes of a model's images; the defaults are the reference notebook's
    32x32 grayscale images of 10 classes."""

    height: int = 32
    width: int = 32
    channels: int = 1
    class_names: tuple[str, ...] = field(default_factory=lambda: number_names(10))

    def __post_init__(self) -> None:
        for name in ("height", "width", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"image {name} must be a whole number >= 1, got {value!r}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        check_class_names(self.class_names)

    @property
    def n_pixels(self) -> int:
        """Values per row: height x width x channels."""
        return self.height * self.width * self.channels

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def size(self) -> str:
        """`28x28` for grayscale, `32x32x3` otherwise: what --image-size takes."""
        hw = f"{self.height}x{self.width}"
        return hw if self.channels == 1 else f"{hw}x{self.channels}"

    def describe(self) -> str:
        """One line for users: `28x28 grayscale (784 values per row), 10 classes`."""
        colour = {1: "grayscale", 3: "RGB", 4: "RGBA"}.get(
            self.channels, f"{self.channels}-channel"
        )
        return (
            f"{self.height}x{self.width} {colour} ({self.n_pixels} values per row, "
            f"{PIXEL_ORDER} order), {self.n_classes} classes"
        )

    def with_classes(self, names: Iterable[str]) -> ImageSpec:
        return ImageSpec(self.height, self.width, self.channels, tuple(names))

    def to_dict(self) -> dict[str, Any]:
        """The recorded form (checkpoint and ONNX metadata): plain types only."""
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "pixel_order": PIXEL_ORDER,
            "class_names": list(self.class_names),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageSpec:
        """Rebuild a recorded spec; SpecError names what is missing or wrong."""
        if not isinstance(d, Mapping):
            raise SpecError(f"image spec is a {type(d).__name__}, not a mapping")
        order = d.get("pixel_order", PIXEL_ORDER)
        if order != PIXEL_ORDER:
            raise SpecError(f"pixel order {order!r} is unknown (fcls reads {PIXEL_ORDER})")
        missing = [k for k in ("height", "width", "channels", "class_names") if k not in d]
        if missing:
            raise SpecError(f"image spec lacks {', '.join(missing)}")
        names = d["class_names"]
        if not isinstance(names, list | tuple):
            raise SpecError(f"class_names is a {type(names).__name__}, not a list")
        return cls(d["height"], d["width"], d["channels"], tuple(names))

    @classmethod
    def from_json(cls, text: str) -> ImageSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"image spec is not JSON ({e.msg})") from None


def check_class_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """At least two distinct, non-empty names without line breaks (they become CSV headers)."""
    names = tuple(names)
    if len(names) < 2:
        raise SpecError(f"{len(names)} class(es): a classifier needs at least 2")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"class {i}: name {name!r} is empty or not text")
        if any(c in name for c in "\r\n\0"):
            raise SpecError(f"class {i}: name {name!r} holds a line break or NUL")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise SpecError(f"classes {seen[name]} and {i} share the name {name!r}")
        seen[name] = i
    return names


_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?")


def parse_image_size(text: str) -> tuple[int, int, int]:
    """`HxW` (one channel) or `HxWxC` -> (height, width, channels)."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise SpecError(f"image size {text!r}: expected HxW or HxWxC, e.g. 28x28 or 32x32x3")
    h, w, c = int(m[1]), int(m[2]), int(m[3] or 1)
    if min(h, w, c) < 1:
        raise SpecError(f"image size {text!r}: every dimension must be >= 1")
    return h, w, c


def geometry_for(n_pixels: int, image_size: str | None = None) -> tuple[int, int, int]:
    """(height, width, channels) of rows of `n_pixels` values: from `image_size` when given
    (it must multiply out to n_pixels), else a square grayscale image when n is a square."""
    if image_size is not None:
        h, w, c = parse_image_size(image_size)
        if h * w * c != n_pixels:
            raise SpecError(
                f"--image-size {image_size} is {h * w * c} values per row, "
                f"the data has {n_pixels} pixel columns"
            )
        return h, w, c
    side = math.isqrt(n_pixels)
    if n_pixels < 4 or side * side != n_pixels:
        raise SpecError(
            f"{n_pixels} pixel columns is not a square image: give its size with "
            "--image-size HxW or HxWxC (e.g. 32x32x3 for RGB)"
        )
    return side, side, 1


def pixel_column_names(n_pixels: int, prefix: str = "pix", first: int = 1) -> tuple[str, ...]:
    """The names fcls writes for a row's pixel columns: pix1..pixN."""
    return tuple(f"{prefix}{i}" for i in range(first, first + n_pixels))


def spec_of(n_pixels: int) -> ImageSpec:
    """A square grayscale spec of `n_pixels` values and 10 numbered classes (tests, tools)."""
    h, w, c = geometry_for(n_pixels)
    return ImageSpec(h, w, c)


DEFAULT_SPEC = ImageSpec()

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SPEC",
    "PIXEL_ORDER",
    "SPEC_KEY",
    "ImageSpec",
    "Kind",
    "SpecError",
    "check_class_names",
    "geometry_for",
    "number_names",
    "parse_image_size",
    "pixel_column_names",
]
