"""Which columns of a CSV header or an Arrow schema hold a row's pixels, its label and its ID:
the one place that reads column names, for every reader and for fcls-convert.

- Pixel columns are named `pixN` or `pixelN` (one prefix for all), numbered 1..P or 0..P-1
  without gaps, in any order in the file; they are read in pixel order (by number). A number
  is written without leading zeros (`pix07` is not a pixel column).
- `label` (labelled files) may stand anywhere: first (Kaggle's `label,pixel1..pixel784`),
  last (fcls's `pix1..pixN,label`) or between.
- `ID` or `id` (unlabelled files): one of them.
- The number of pixel columns P is the caller's `pixels` (a model's), or any P >= 1 when it
  is None (training discovers the geometry from the file).

A CSV file has no other columns; a Parquet or Arrow file may have others (ignored).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..common.errors import DataError
from ..common.spec import ImageSpec, Kind

PIXEL_NAME = re.compile(r"(pix|pixel)(0|[1-9][0-9]*)")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")  # a cell of a data row read as a name
ID_NAMES = ("ID", "id")
LABEL = "label"
Expected = int | ImageSpec | None  # pixels per row: a count, a model's spec, or any count
Fail = Callable[..., DataError]  # (message, column=None) -> the located error


@dataclass(frozen=True)
class Columns:
    """Where a file's rows are: positions in `names` (the header, in file order)."""

    names: tuple[str, ...]
    pixels: tuple[int, ...]  # the position of pixel 0, 1, ... P-1
    prefix: str = "pix"
    first: int = 1  # the number of pixel 0 (1 or 0)
    id: int | None = None  # the ID column (unlabelled files)
    label: int | None = None  # the label column (labelled files)
    packed: bool = False  # the pixels are one `pixels` column (Parquet, Arrow), not `pixels`

    @property
    def key(self) -> str:
        """The name of the ID column (unlabelled) or of the label column (labelled)."""
        at = self.id if self.id is not None else self.label
        assert at is not None
        return self.names[at]

    @property
    def n_pixels(self) -> int:
        return len(self.pixels)

    @property
    def pixel_names(self) -> tuple[str, ...]:
        """The pixel columns' names in pixel order."""
        return tuple(self.names[i] for i in self.pixels)

    @property
    def id_name(self) -> str:
        return "ID" if self.id is None else self.names[self.id]

    def span(self) -> str:
        """`pix1..pixN`: the pixel columns' names, first and last."""
        last = self.first + self.n_pixels - 1
        return f"{self.prefix}{self.first}..{self.prefix}{last}"


def expected_count(pixels: Expected) -> tuple[int | None, str]:
    """(pixels per row or None, how to say it in an error: `784 (28x28x1)`)."""
    if isinstance(pixels, ImageSpec):
        spec = pixels
        return spec.n_pixels, f"{spec.n_pixels} ({spec.height}x{spec.width}x{spec.channels})"
    return pixels, str(pixels)


def detect_kind(names: Sequence[str]) -> Kind:
    """unlabelled when the names have `ID` (or `id`), labelled when they have `label` and no ID."""
    has_id = any(n in ID_NAMES for n in names)
    return "labelled" if LABEL in names and not has_id else "unlabelled"


def is_pixel_name(name: str) -> bool:
    return PIXEL_NAME.fullmatch(name) is not None


def resolve(
    names: Sequence[str],
    kind: Kind,
    source: str,
    pixels: Expected = None,
    *,
    line: int | None = None,
    others: bool = False,
) -> Columns:
    """The columns of a header (`line` 1 for CSV) or a schema (`line` None) read as `kind`.

    `others` (Parquet, Arrow): columns that are none of fcls's are ignored rather than refused
    (CSV), and one `pixels` column may hold the pixels (`packed`: its values are the caller's
    to check). A DataError names the file, and says what does not fit in one line."""
    names = tuple(names)

    def fail(message: str, column: str | None = None) -> DataError:
        return DataError(source, message, line, column)

    if line is not None:  # a CSV: its first line may be a row, if the file has no header
        check_not_data(names, (kind,), source, pixels)
    _check_unique(names, fail, positional=line is not None)
    key = _key_column(names, kind, fail)
    numbered = [(i, PIXEL_NAME.fullmatch(n)) for i, n in enumerate(names)]
    found = [(i, m[1], int(m[2])) for i, m in numbered if m is not None]
    ids = (key, None) if kind == "unlabelled" else (None, key)
    if others and "pixels" in names:
        if found:
            shown = names[found[0][0]]
            raise fail(f"both a pixels column and pixel columns ({shown}, ...): keep one form")
        return Columns(names, (), id=ids[0], label=ids[1], packed=True)
    if not others:
        used = {i for i, _, _ in found} | {key}
        extra = [n for i, n in enumerate(names) if i not in used]
        if extra:
            raise fail(f"unexpected column {extra[0]!r} ({_shape(kind)})")
    if not found:
        raise fail(f"no pixel columns ({_shape(kind)}; columns: {_head(names)})")
    prefix, first = _numbering(found, fail)
    order = sorted(found, key=lambda f: f[2])
    columns = Columns(names, tuple(i for i, _, _ in order), prefix, first, *ids)
    want, said = expected_count(pixels)
    if want is not None and columns.n_pixels != want:
        raise fail(f"{columns.n_pixels} pixel columns ({columns.span()}), the model takes {said}")
    return columns


def header_for(kind: Kind, n_pixels: int) -> str:
    """The header a CSV of `kind` with `n_pixels` pixel columns needs, as the README spells it."""
    if kind == "unlabelled":
        return f"ID,pix1,...,pix{n_pixels}"
    return f"pix1,...,pix{n_pixels},label (or label,pixel1,...,pixel{n_pixels})"


def check_not_data(
    names: Sequence[str], kinds: Sequence[Kind], source: str, pixels: Expected = None
) -> None:
    """Refuse a CSV whose first line is a row of data, not a header (a file written without
    one), naming the header to add for each of `kinds`; a DataError at line 1.

    Read as names, a row's cells only give puzzling errors (`duplicate column '0'`). A line is
    data when all its cells but at most one at either end (an ID, a text label) are numbers,
    unless they count up by one: pandas writes column numbers `0,1,2,...` as a header."""
    cells = [n.strip(" \t") for n in names]
    numeric = [bool(_NUMBER.fullmatch(c)) for c in cells]
    numbers = [float(c) for c, is_number in zip(cells, numeric) if is_number]
    text = len(cells) - len(numbers)
    if len(numbers) < 2 or text > 1 or (text == 1 and numeric[0] and numeric[-1]):
        return
    if numbers == [numbers[0] + i for i in range(len(numbers))]:
        return
    want = expected_count(pixels)[0] or len(cells) - 1
    what = f"{len(cells)} numbers" if not text else f"{len(numbers)} numbers and a text cell"
    needed = " or ".join(header_for(k, want) for k in kinds)
    raise DataError(
        source,
        f"the first line is data, not a header ({what}); add the header fcls needs: {needed}",
        1,
    )


def _shape(kind: Kind) -> str:
    if kind == "unlabelled":
        return "expected ID or id and pixel columns pix1..pixN"
    return "expected label and pixel columns pix1..pixN"


def _head(names: tuple[str, ...]) -> str:
    return ",".join(names[:3]) + ("..." if len(names) > 3 else "")


def _check_unique(names: tuple[str, ...], fail: Fail, positional: bool) -> None:
    seen: set[str] = set()
    for i, col in enumerate(names, start=1):
        if col in seen:
            raise fail(f"duplicate column {col!r}", str(i) if positional else col)
        seen.add(col)


def _key_column(names: tuple[str, ...], kind: Kind, fail: Fail) -> int:
    """The position of the ID column (unlabelled) or of the label column (labelled)."""
    if kind == "labelled":
        if LABEL not in names:
            raise fail(f"missing label column (columns: {_head(names)})")
        return names.index(LABEL)
    ids = [i for i, n in enumerate(names) if n in ID_NAMES]
    if not ids:
        raise fail(f"missing ID column (columns: {_head(names)})")
    if len(ids) > 1:
        raise fail("both an ID and an id column: keep one")
    return ids[0]


def _numbering(found: list[tuple[int, str, int]], fail: Fail) -> tuple[str, int]:
    """(prefix, number of the first pixel) of the pixel columns: one prefix, no gap."""
    prefixes = sorted({p for _, p, _ in found})
    if len(prefixes) > 1:
        example = {p: f"{p}{n}" for _, p, n in reversed(found)}
        shown = ", ".join(example[p] for p in prefixes)
        raise fail(f"pixel columns mix the prefixes {' and '.join(prefixes)} ({shown}): use one")
    prefix = prefixes[0]
    numbers = {n for _, _, n in found}
    first = 0 if 0 in numbers else 1
    last = max(numbers)
    missing = sorted(set(range(first, last + 1)) - numbers)
    if missing:
        shown = ", ".join(f"{prefix}{n}" for n in missing[:5])
        more = " ..." if len(missing) > 5 else ""
        raise fail(
            f"{len(numbers)} of {last - first + 1} pixel columns {prefix}{first}..{prefix}{last} "
            f"(missing {shown}{more})"
        )
    return prefix, first
