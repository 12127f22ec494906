"""Inputs and outputs of a multi-file run: files, directories and globs -> output paths."""

from __future__ import annotations

import glob
from pathlib import Path

from .errors import ConfigError, DataError


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, directories (their *.csv and *.csv.gz) and globs, in a stable order."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted([*path.glob("*.csv"), *path.glob("*.csv.gz")])
            if not found:
                raise DataError(item, "directory holds no *.csv or *.csv.gz files")
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
    """`a.csv` and `a.csv.gz` -> `a`."""
    name = path.name
    for suffix in (".gz", ".csv"):
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
    out.mkdir(parents=True, exist_ok=True)
    stems = [output_stem(p) for p in inputs]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ConfigError(
            f"inputs share the output name {dupes[0]}.results.csv; rename or split the run"
        )
    return [out / f"{s}.results.csv" for s in stems]
