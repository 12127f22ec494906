"""Inputs and outputs of a multi-file run: files, directories and globs -> output paths."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from .errors import ConfigError, DataError
from .files import output_errors
from .parquetio import TABLE_SUFFIXES

INPUT_PATTERNS = ("*.csv", "*.csv.gz", *(f"*{s}" for s in TABLE_SUFFIXES))


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, directories (their *.csv, *.csv.gz, *.parquet, *.pq, *.arrow, *.feather and
    *.ipc) and globs, in a stable order."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for pattern in INPUT_PATTERNS for p in path.glob(pattern))
            if not found:
                raise DataError(item, f"directory holds no {', '.join(INPUT_PATTERNS)} files")
            paths += found
        elif any(c in item for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(item))
            if not found:
                raise DataError(item, "no file matches this pattern")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(item, "no such file")
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    return unique


def output_stem(path: Path) -> str:
    """`a.csv`, `a.csv.gz`, `a.parquet`, `a.arrow` ... -> `a`."""
    name = path.name
    for suffix in (".gz", ".csv", *TABLE_SUFFIXES):
        name = name.removesuffix(suffix)
    return name


def output_paths(inputs: list[Path], out: Path | None) -> list[Path]:
    """One input: `out` is the file (default results.csv); several: `out` is a directory."""
    if len(inputs) == 1:
        return [out or Path("results.csv")]
    if out is None:
        raise ConfigError("several inputs: -o must name an output directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: several inputs need a directory, this is a file")
    with output_errors(out, "cannot create the output directory"):
        out.mkdir(parents=True, exist_ok=True)
    stems = [output_stem(p) for p in inputs]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ConfigError(
            f"inputs share the output name {dupes[0]}.results.csv; rename or split the run"
        )
    dests = [out / f"{s}.results.csv" for s in stems]
    check_outputs(inputs, dests)
    return dests


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: same device and inode when both exist (so symlinks
    and hard links count), else the same resolved path."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_outputs(inputs: list[Path], outputs: list[Path], model: Path | None = None) -> None:
    """Refuse an output that is one of the inputs (or the model): writing it would destroy it."""
    for dest in outputs:
        for src in inputs:
            if same_file(dest, src):
                raise ConfigError(
                    f"output {dest} is the input {src} (the same file): writing the results "
                    "would destroy the input; choose another output path"
                )
        if model is not None and same_file(dest, model):
            raise ConfigError(
                f"output {dest} is the model {model} (the same file): choose another output path"
            )
