"""Inputs and outputs of a multi-file run: files, directories and globs -> output paths."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ..common.errors import ConfigError, DataError, OutputError
from ..common.output import output_errors
from .images import IMAGE_SUFFIXES, has_images
from .tables import TABLE_SUFFIXES

INPUT_PATTERNS = ("*.csv", "*.csv.gz", *(f"*{s}" for s in TABLE_SUFFIXES))


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, directories and globs, in a stable order. A directory is its *.csv, *.csv.gz,
    *.parquet, *.pq, *.arrow, *.feather and *.ipc files; one without such files but with
    images (PNG, JPEG, at any depth) is one input, a folder of images (`formats.images`). A
    directory holding both is its data files (its images are not read: name a folder that
    holds only images). Any other readable path that is not a directory (a named pipe,
    `<(zcat x.csv.gz)`'s /dev/fd/N) is an input too: it is read as a stream."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for pattern in INPUT_PATTERNS for p in path.glob(pattern))
            if not found and has_images(path):
                found = [path]
            if not found:
                raise DataError(
                    item,
                    f"directory holds no {', '.join(INPUT_PATTERNS)} files and no images "
                    f"({', '.join(IMAGE_SUFFIXES)})",
                )
            paths += found
        elif any(c in item for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(item))
            if not found:
                raise DataError(item, "no file matches this pattern")
            paths += found
        elif path.exists():  # a file, or a pipe or device read as a stream
            paths.append(path)
        else:
            raise DataError(item, "no such file")
    # a pipe's /dev/fd/N resolves to a name that cannot be opened: keep non-files as given
    unique = list(dict.fromkeys(p.resolve() if p.is_file() or p.is_dir() else p for p in paths))
    return unique


def is_regular(src: object) -> bool:
    """Whether `src` is a path to a regular file (not stdin, a pipe, a FIFO or a device):
    what can be read again at a byte offset."""
    return isinstance(src, (str, Path)) and not is_stdin(src) and Path(src).is_file()


def output_stem(path: Path) -> str:
    """`a.csv`, `a.csv.gz`, `a.parquet`, `a.arrow` ... -> `a`; `-` (stdin) -> `stdin`; a
    folder of images -> its name (`pngs/` -> `pngs`, `.` -> the current directory's)."""
    if not is_stdin(path) and Path(path).is_dir():
        return Path(path).resolve().name
    name = "stdin" if is_stdin(path) else path.name
    for suffix in (".gz", ".csv", *TABLE_SUFFIXES):
        name = name.removesuffix(suffix)
    return name


STDOUT = "-"  # -o -: the results go to standard output
STDIN = "-"  # an input '-': the rows come from standard input


def is_stdin(src: object) -> bool:
    """Whether an input names standard input ('-', as a str or a Path)."""
    return isinstance(src, (str, Path)) and str(src) == STDIN


def check_stdin(inputs: list[str]) -> None:
    """Refuse '-' (stdin) given together with other inputs: it must be the only one."""
    if STDIN in inputs and len(inputs) > 1:
        raise ConfigError(
            f"'-' (stdin) must be the only input, got {len(inputs)} inputs; "
            "score the files in another run, or concatenate them into stdin"
        )


def is_directory_output(out: str | Path) -> bool:
    """The -o rule: a path ending in '/' or naming an existing directory is a directory."""
    text = str(out)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def output_paths(inputs: list[Path], out: str | Path | None) -> list[Path]:
    """The output file of each input under the one -o rule, whatever the input count:
    `-o DIR/` or an existing directory -> `DIR/<stem>.results.csv` each (DIR created);
    `-o -` -> stdout (one input only; returned as Path('-'), the caller streams it);
    otherwise the file itself (one input only; its missing parent directories are created);
    no -o -> results.csv (one input only). A `Path` object (library callers) with several
    inputs is a directory: pathlib drops the trailing '/'."""
    n = len(inputs)
    if out is None:
        if n > 1:
            raise ConfigError(
                f"{n} inputs write one results file each: give an output directory, -o DIR/"
            )
        return [Path("results.csv")]
    if str(out) == STDOUT and isinstance(out, str):
        if n > 1:
            raise ConfigError(
                f"-o - (stdout) takes one input, got {n}; give an output directory, -o DIR/"
            )
        return [Path(STDOUT)]
    # a Path object cannot carry the trailing '/' (pathlib drops it): for library callers
    # (predict_csv_ray) a Path with several inputs can only mean a directory
    if not is_directory_output(out) and not (n > 1 and isinstance(out, Path)):
        dest = Path(out)
        if n > 1:
            what = "is a file" if dest.exists() else "names a file"
            raise ConfigError(
                f"-o {out}: {n} inputs need an output directory and this {what}; "
                f"write it as -o {out}/ to have it created"
            )
        _make_directory(dest.parent)
        check_outputs(inputs, [dest])
        return [dest]
    directory = Path(out)
    _make_directory(directory)
    stems = [output_stem(p) for p in inputs]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ConfigError(
            f"inputs share the output name {dupes[0]}.results.csv; rename or split the run"
        )
    dests = [directory / f"{s}.results.csv" for s in stems]
    check_outputs(inputs, dests)
    return dests


def _make_directory(directory: Path) -> None:
    if str(directory) in ("", "."):
        return
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory}: cannot create the output directory (a file is there)")
    with output_errors(directory, "cannot create the output directory"):
        directory.mkdir(parents=True, exist_ok=True)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: same device and inode when both exist (so symlinks
    and hard links count), else the same resolved path."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_outputs(inputs: list[Path], outputs: list[Path], model: Path | None = None) -> None:
    """Refuse an output that is one of the inputs (or the model): writing it would destroy
    it; and two outputs that are one file: one would overwrite the other."""
    for i, dest in enumerate(outputs):
        for other in outputs[:i]:
            if same_file(dest, other):
                raise ConfigError(
                    f"outputs {other} and {dest} are the same file: choose another path for one"
                )
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


def drift_report_path(outputs: list[Path], to_stdout: bool) -> Path | None:
    """Where fcls-infer writes the drift report by default: `<stem>.drift.json` beside one
    output (results.csv -> results.drift.json), `drift.json` in the directory of several,
    none when the results go to stdout."""
    if to_stdout or not outputs:
        return None
    if len(outputs) == 1:
        dest = Path(outputs[0])
        return dest.with_name(f"{dest.stem}.drift.json")
    return Path(outputs[0]).parent / "drift.json"
