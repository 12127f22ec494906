"""A folder of images (PNG, JPEG) as an fcls input: `ImageReader` yields `Chunk`s like the CSV
and Parquet readers, so every command that opens inputs through `sources` takes a folder.

Layout, as torchvision's `ImageFolder`:

- labelled (fcls-train, fcls-eval): `ROOT/<class>/.../<image>`; an image's label is the name
  of its top-level folder, read as a label cell (`labelcells`: folders `0`..`9` are integer
  classes, other names are names). Images directly in ROOT (outside every class folder) and a
  class folder without images are refused.
- unlabelled (fcls-infer): every image under ROOT, at any depth; its ID is its path relative
  to ROOT, `/`-separated (`cat/x.png`), so a labelled folder can be scored too.

Images are the files named `*.png`, `*.jpg` or `*.jpeg` (any case), decoded by Pillow as PNG or
JPEG only. Other files (notes, `Thumbs.db`) are skipped, as `ImageFolder` skips them; so are
hidden files and folders (names starting with `.`). Symlinked folders are followed, each real
folder once (a link cycle cannot loop the walk). A folder with no image is refused.

Order: sorted by path component (class folders sorted, then the paths inside), so chunks,
IDs and rows are the same on every run and every machine. A `limit` keeps the first images
of an unlabelled folder, and images spread evenly over a labelled one (every class its share).
Memory: the listing (one path per image) and a few batches of BATCH_IMAGES decoded images.

Conversion to the spec (a model's, `--image-size`, or the first image's): 16-bit images are
scaled to 8 bits (v / 257, rounded); the mode becomes `L` (1 channel), `RGB` (3) or `RGBA` (4),
so alpha is dropped for 1 or 3 channels and palettes are expanded; an image of another size is
resized with Pillow's bilinear filter, which widens its support when shrinking and so averages
like an area filter (no aliasing). EXIF orientation is not applied (nor by `ImageFolder`).
The first image sets a spec of its own size, and 1 channel when its mode is grayscale (`1`,
`L`, `LA`, `I`, `I;16`), else 3.

An image Pillow cannot read is one DataError naming the file: `pngs/cat/x.png: cannot decode
image (...)`. Pillow is the `images` extra, imported only when a folder is read.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..common.errors import DataError
from ..common.extras import require
from ..common.spec import ImageSpec, Kind
from ..common.system import available_cpus
from .chunk import Chunk
from .columns import Expected
from .labelcells import Classes, text_labels
from .tables import TABLE_SUFFIXES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")  # what Pillow may decode: no other format's decoder is reached
BATCH_IMAGES = 256  # images per chunk: 0.25 MiB of pixels at 32x32, 3 MiB at 64x64x3
MAX_THREADS = 4  # decoding scales to a few threads; more only hold more batches in memory
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
GRAY_MODES = ("1", "L", "LA", "I", "F")  # and I;16, I;16B, ...: one channel
Geometry = tuple[int, int, int]  # (height, width, channels)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _walk_error(root: Path) -> Any:
    def fail(e: OSError) -> None:
        where = e.filename or root
        raise DataError(str(where), f"cannot read the folder ({e.strerror or type(e).__name__})")

    return fail


def _walk(root: Path) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """(relative folder parts, image names) of every folder under `root`, hidden ones skipped;
    symlinked folders are followed, each real folder once (a link cycle ends the descent)."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, onerror=_walk_error(root), followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield Path(folder).relative_to(root).parts, [f for f in files if is_image_name(f)]


def list_images(root: Path) -> list[str]:
    """The images under `root`: relative `/`-separated paths, sorted by path component."""
    found = sorted((*base, name) for base, names in _walk(root) for name in names)
    return ["/".join(parts) for parts in found]


def has_images(root: Path) -> bool:
    """Whether any image lies under `root` (stops at the first)."""
    return any(names for _, names in _walk(root))


def _other_files(root: Path) -> list[str]:
    """The visible files under `root` that are not images, relative, sorted (an error path:
    what a folder held instead of images)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder).relative_to(root)
        found += [(base / f).as_posix() for f in files if not f.startswith(".")]
    return sorted(found)


def no_images(root: Path, kind: Kind = "unlabelled") -> DataError:
    """A folder with no image: what it holds instead, and the layout `kind` reads."""
    layout = (
        f"one sub-folder per class holding PNG/JPEG images ({root.name}/<class>/<image>.png)"
        if kind == "labelled"
        else "PNG/JPEG images at any depth"
    )
    others = _other_files(root)
    held, hint = "", ""
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        held = f" (it holds {len(others)} other file(s): {others[0]}{more})"
        tables = [o for o in others if o.lower().endswith((".csv", ".gz", *TABLE_SUFFIXES))]
        if tables:  # a data file is an input of its own, not a folder's content
            hint = f"; for {root / tables[0]}, give that file itself"
    return DataError(
        str(root),
        f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder{held}; expected {layout}{hint}",
    )


def class_folders(root: Path, images: list[str]) -> list[str]:
    """The class of each image (its top-level folder), after refusing what `ImageFolder`
    refuses: images outside the class folders, and class folders without images."""
    loose = [rel for rel in images if "/" not in rel]
    if loose:
        raise DataError(
            str(root / loose[0]),
            f"an image outside the class folders ({len(loose)} such): labelled images lie in "
            "one sub-folder per class (ROOT/<class>/<image>), as torchvision's ImageFolder",
        )
    classes = [rel.split("/", 1)[0] for rel in images]
    try:
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name[0] != ".")
    except OSError as e:
        raise DataError(str(root), f"cannot read the folder ({e.strerror})") from None
    empty = sorted(set(folders) - set(classes))
    if empty:
        raise DataError(
            str(root / empty[0]),
            f"class folder without images ({', '.join(IMAGE_SUFFIXES)}): add its images or "
            "move the folder out",
        )
    return classes


def _pil() -> Any:
    require("reading a folder of images", "PIL")
    from PIL import Image

    return Image


def _channels(mode: str) -> int:
    return 1 if mode in GRAY_MODES or mode.startswith("I;16") else 3


def image_geometry(path: Path) -> Geometry:
    """(height, width, channels) of one image, from its header (`_channels` of its mode)."""
    image_cls = _pil()
    try:
        with image_cls.open(path, formats=FORMATS) as img:
            return img.height, img.width, _channels(img.mode)
    except Exception as e:
        raise _decode_error(path, e) from None


def _decode_error(path: Path, e: Exception) -> DataError:
    if isinstance(e, OSError) and e.strerror:  # the file itself: gone, no permission
        return DataError(str(path), f"cannot read ({e.strerror})")
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return DataError(str(path), f"cannot decode image ({detail})")


def decode_image(path: Path, geometry: Geometry) -> np.ndarray:
    """One image as H*W*C uint8 values (HWC) of `geometry`, converted as the module says."""
    image_cls = _pil()
    height, width, channels = geometry
    try:
        with image_cls.open(path, formats=FORMATS) as img:
            img.load()
            if img.mode == "I" or img.mode.startswith("I;16"):  # 16 bits: scale, not clip
                wide = np.asarray(img).astype(np.int64).clip(0, 65535)
                img = image_cls.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
            if img.mode != MODES[channels]:
                img = img.convert(MODES[channels])
            if img.size != (width, height):
                img = img.resize((width, height), image_cls.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).reshape(-1)
    except Exception as e:
        raise _decode_error(path, e) from None


@dataclass(frozen=True)
class Batch:
    """Consecutive images of the listing: their relative paths, and the first one's number."""

    paths: list[str]
    start: int  # 1-based image number of paths[0]


class ImageReader:
    """Iterate over `Chunk`s of a folder of images, BATCH_IMAGES a chunk, in sorted order.

    `limit`: at most this many images: the first ones (unlabelled), or spread evenly over the
    listing (labelled: every class keeps its share);
    `pixels`: a model's spec (images converted to its size and channels), a count (the first
    image's geometry, which must have that many values), or None (the first image's);
    `image_size`: the geometry when `pixels` is None (`--image-size`); `classes`: a model's
    class names, so that labels are class indices, None for the folders' raw names. Batches
    are decoded on `threads` threads (default: the usable CPUs, at most MAX_THREADS), at most
    that many ahead of the consumer, in constant memory."""

    def __init__(
        self,
        root: str | Path,
        kind: Kind = "unlabelled",
        limit: int | None = None,
        *,
        pixels: Expected = None,
        classes: Classes = None,
        geometry: Geometry | None = None,
        batch_images: int = BATCH_IMAGES,
        threads: int | None = None,
    ) -> None:
        self.root, self.kind, self.limit = Path(root), kind, limit
        self.pixels, self.classes, self.given = pixels, classes, geometry
        self.batch_images = batch_images
        self.threads = threads or min(MAX_THREADS, available_cpus())
        self.images: list[str] = []
        self.labels: list[str] | None = None  # the class folder of each image (labelled)
        self.geometry: Geometry | None = None  # once `open` has run

    def open(self) -> Geometry:
        """List the folder and settle the geometry (idempotent); DataError if it cannot."""
        if self.geometry is not None:
            return self.geometry
        _pil()  # a missing Pillow is said before the folder is walked
        images = list_images(self.root)
        if not images:
            raise no_images(self.root, self.kind)
        if self.kind == "labelled":
            self.labels = class_folders(self.root, images)
        geometry = self._geometry(self.root / images[0])
        if self.limit is not None and self.limit < len(images):
            keep = _kept(len(images), self.limit, spread=self.kind == "labelled")
            images = [images[i] for i in keep]
            self.labels = None if self.labels is None else [self.labels[i] for i in keep]
        self.images, self.geometry = images, geometry
        return geometry

    def _geometry(self, first: Path) -> Geometry:
        if isinstance(self.pixels, ImageSpec):
            spec = self.pixels
            if spec.channels not in MODES:
                raise DataError(
                    str(self.root),
                    f"the model takes {spec.channels}-channel images; images convert to 1 (L), "
                    "3 (RGB) or 4 (RGBA) channels",
                )
            return spec.height, spec.width, spec.channels
        if self.given is not None:
            return self.given
        h, w, c = image_geometry(first)
        if isinstance(self.pixels, int) and h * w * c != self.pixels:
            raise DataError(
                str(first), f"a {h}x{w}x{c} image ({h * w * c} values), expected {self.pixels}"
            )
        return h, w, c

    def batches(self) -> Iterator[Batch]:
        """The listing in batches of `batch_images` (after `open`)."""
        self.open()
        for i in range(0, len(self.images), self.batch_images):
            yield Batch(self.images[i : i + self.batch_images], i + 1)

    def decode(self, batch: Batch) -> Chunk:
        """One batch's images as a Chunk (thread-safe: the pipeline calls it on its pool)."""
        assert self.geometry is not None
        rows = [decode_image(self.root / rel, self.geometry) for rel in batch.paths]
        pixels = np.stack(rows) if rows else np.empty((0, _values(self.geometry)), np.uint8)
        if self.kind == "unlabelled":
            return Chunk(pixels, pa.array(batch.paths, pa.string()), None, batch.start)
        assert self.labels is not None
        at = batch.start - 1
        names = self.labels[at : at + len(batch.paths)]
        labels, bad, why = text_labels(pa.array(names, pa.string()), self.classes)
        if bad is not None:
            raise DataError(str(self.root / batch.paths[bad]), why)
        return Chunk(pixels, None, labels, batch.start)

    def __iter__(self) -> Iterator[Chunk]:
        batches = self.batches()
        pending: deque[Future[Chunk]] = deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="fcls-decode") as pool:
            try:
                for batch in batches:
                    pending.append(pool.submit(self.decode, batch))
                    if len(pending) > self.threads:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:  # a consumer that stops early: no decoding after it
                    future.cancel()


def _kept(n: int, limit: int, spread: bool) -> list[int]:
    """The images `limit` keeps of `n`: the first ones, or (labelled) ones spread evenly over
    the sorted listing, so that every class keeps its share (the first `limit` of a listing
    sorted by class would be the first classes only)."""
    if not spread:
        return list(range(max(limit, 0)))
    return [i * n // limit for i in range(max(limit, 0))]


def _values(geometry: Geometry) -> int:
    h, w, c = geometry
    return h * w * c


def folder_digest(root: Path) -> tuple[str, int]:
    """(sha256 of the sorted listing of relative path, size and mtime of every image, their
    total bytes): a folder's identity for a resumed training run, without reading the images."""
    h = hashlib.sha256()
    total = 0
    images = list_images(root)
    if not images:  # a folder is digested as training data (fcls-convert's was read first)
        raise no_images(root, "labelled")
    for rel in images:
        try:
            st = os.stat(root / rel)
        except OSError as e:
            raise DataError(str(root / rel), f"cannot read ({e.strerror})") from None
        total += st.st_size
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest(), total
