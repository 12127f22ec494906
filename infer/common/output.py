"""One owner for writing output files, and the small torch-free helpers every command shares.

Every fcls output (results.csv, model.pt, ONNX files, reports) is written to a temp file beside
its destination and renamed into place only on success, so a reader never sees a half-written
file and a killed run leaves the destination untouched. The temp file is fsynced before the
rename and the directory after it, so a crash right after "success" cannot leave an empty or
short file behind. Every OSError on the output side (open, write, flush, fsync, rename) becomes
an `OutputError` that names the destination the user gave, never the temp name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import OutputError

TEMP_SUFFIX = ".fcls-tmp"
BACKUP_SUFFIX = ".fcls-bak"


def _parent(dest: Path) -> Path:
    return dest.parent if str(dest.parent) else Path(".")


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def temp_name(dest: Path, suffix: str = TEMP_SUFFIX) -> Path:
    """A fresh hidden name beside `dest`: `.NAME.PID.RANDOM.fcls-tmp`."""
    return _parent(dest) / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def leftover_temps(dest: Path, suffix: str = TEMP_SUFFIX) -> list[Path]:
    """Temp files (or backups) that killed runs left beside `dest` (their process is gone)."""
    parent = _parent(dest)
    found = []
    for path in parent.glob(f".{dest.name}.*{suffix}"):
        pid = path.name[len(dest.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(path)
    return sorted(found)


def recover_backups(dest: Path) -> list[str]:
    """Put back what a run killed inside a commit had moved aside; returns what was done.

    A backup outlives its commit only when the commit did not finish (it is removed once every
    rename of the group is durable), so the killed run never reported success: whatever it
    left at `dest` is undone and the previous file restored, as its own rollback would have.
    """
    dest = Path(dest)
    notes = []
    for i, backup in enumerate(reversed(leftover_temps(dest, BACKUP_SUFFIX))):
        with output_errors(dest, "cannot restore the backup a killed run left"):
            if i == 0:
                os.replace(backup, dest)
                notes.append(f"restored {dest} from the backup a killed run left ({backup.name})")
            else:
                backup.unlink(missing_ok=True)
                notes.append(f"removed an older backup of {dest} ({backup.name})")
    return notes


def clear_leftovers(dest: Path) -> list[str]:
    """Undo what killed runs left for `dest`: restore a backup of a commit cut short
    (`recover_backups`), remove their temp files; returns what was done, one line each.

    `OutputSet.stage` calls it for every file it stages, so results, reports, journals and
    checkpoints are all cleaned the same way; only dead processes' files are touched, never
    those of a run writing the same destination at the same time.
    """
    notes = recover_backups(dest)
    stale = leftover_temps(dest)
    for temp in stale:
        with output_errors(dest, f"cannot remove {temp.name}, left by a killed run"):
            temp.unlink(missing_ok=True)  # missing: another run cleared it first
    if stale:
        notes.append(f"removed {len(stale)} leftover file(s) of killed runs beside {dest}")
    return notes


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_errors(dest: Path, action: str = "cannot write") -> Iterator[None]:
    """Turn any OSError raised inside into an `OutputError` naming `dest`."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{dest}: {action} ({_reason(e)})") from None


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_aside(dest: Path) -> Path | None:
    """Rename `dest` to a backup beside it; None when there is nothing there. No exists()
    first: a run committing the same destination may move it between the look and the rename."""
    backup = temp_name(dest, BACKUP_SUFFIX)
    try:
        os.replace(dest, backup)
    except FileNotFoundError:
        return None
    return backup


@dataclass
class OutputSet:
    """Outputs that appear only on success: temp files beside their destinations.

    `stage` makes a temp file for a destination; `commit` renames one into place, `commit_all`
    renames all of them and, if one rename fails, puts back what the earlier ones replaced, so a
    group appears whole or not at all. Leaving the `with` block unlinks every temp not committed.
    """

    durable: bool = True
    staged: dict[Path, Path] = field(default_factory=dict)  # destination -> temp
    log: Callable[[str], None] | None = None  # says what `stage` recovered from killed runs

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard_all()

    def stage(self, dest: Path, temp: Path | None = None) -> Path:
        """An empty temp file beside `dest` (proving its directory is writable); returns its path.
        What killed runs left for `dest` is cleared first (`clear_leftovers`), and said."""
        dest = Path(dest)
        parent = _parent(dest)
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise OutputError(f"{dest}: directory {parent} {what}")
        for note in clear_leftovers(dest):
            if self.log is not None:
                self.log(note)
        if dest.is_dir():
            raise OutputError(f"{dest}: is a directory, not a file")
        tmp = temp or temp_name(dest)
        with output_errors(dest, f"cannot write to {parent}"):
            if temp is None:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            elif not tmp.exists():
                tmp.touch()
        self.staged[dest] = tmp
        return tmp

    def temp(self, dest: Path) -> Path:
        """The temp path staged for `dest`."""
        return self.staged[Path(dest)]

    def commit(self, dest: Path) -> Path:
        """fsync the temp of `dest` and rename it into place (the old file back on failure)."""
        dest = Path(dest)
        self._publish([dest])
        return dest

    def commit_all(self) -> list[Path]:
        """Rename every staged temp into place: all of them, or none (earlier ones rolled back)."""
        dests = list(self.staged)
        self._publish(dests)
        return dests

    def _publish(self, dests: list[Path]) -> None:
        """Rename temps onto `dests`, then fsync their directories; on any failure put back
        what was there before (kept as backups until the end), so nothing half-published stays."""
        done: list[tuple[Path, Path | None]] = []  # (destination, backup of what it replaced)
        try:
            for dest in dests:
                tmp = self.staged[dest]
                with output_errors(dest):
                    if self.durable:
                        fsync_file(tmp)
                    backup = _move_aside(dest)
                    done.append((dest, backup))
                    os.replace(tmp, dest)
                    del self.staged[dest]
            if self.durable:
                for parent, dest in {_parent(d): d for d in reversed(dests)}.items():
                    with output_errors(dest):
                        fsync_dir(parent)
        except BaseException:
            for dest, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, dest)
                    elif dest not in self.staged:
                        dest.unlink(missing_ok=True)
            raise
        for _, backup in done:
            if backup is not None:
                backup.unlink(missing_ok=True)

    def discard(self, dest: Path, keep_as: Path | None = None) -> Path | None:
        """Drop the temp of `dest`; with `keep_as`, move it there instead and return that path."""
        tmp = self.staged.pop(Path(dest))
        if keep_as is not None and tmp.exists():
            with output_errors(keep_as):
                os.replace(tmp, keep_as)
            return keep_as
        tmp.unlink(missing_ok=True)
        return None

    def release(self, dest: Path) -> Path:
        """Stop owning the temp of `dest`: it stays on disk (a resumable partial output)."""
        return self.staged.pop(Path(dest))

    def discard_all(self) -> None:
        """Unlink every temp not committed."""
        for tmp in self.staged.values():
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self.staged.clear()


@contextlib.contextmanager
def atomic_path(dest: Path, *, durable: bool = True, temp: Path | None = None) -> Iterator[Path]:
    """Yield a temp path beside `dest`; renamed onto `dest` on success, unlinked on any exception.

    OSErrors raised inside that concern the temp file itself become `OutputError`s naming `dest`.
    """
    dest = Path(dest)
    with OutputSet(durable) as outputs:
        tmp = outputs.stage(dest, temp)
        try:
            yield tmp
        except OSError as e:
            if e.filename is not None and Path(e.filename) == tmp:
                raise OutputError(f"{dest}: cannot write ({_reason(e)})") from None
            raise
        outputs.commit(dest)


class OutputFile:
    """A binary or text file whose write/flush OSErrors become `OutputError`s naming `dest`."""

    def __init__(self, f: IO[Any], dest: Path) -> None:
        self._f, self.dest = f, dest

    def write(self, data: Any) -> int:
        """Write `data`; an OSError (disk full, I/O error) becomes an OutputError."""
        with output_errors(self.dest):
            return self._f.write(data)

    def flush(self) -> None:
        """Flush Python's buffer to the OS."""
        with output_errors(self.dest):
            self._f.flush()

    @property
    def raw(self) -> IO[Any]:
        """The underlying file object (for libraries that write to it themselves)."""
        return self._f


@contextlib.contextmanager
def atomic_file(dest: Path, mode: str = "wb", *, durable: bool = True) -> Iterator[OutputFile]:
    """Open a temp file beside `dest` for writing; it replaces `dest` only if the block succeeds."""
    with atomic_path(dest, durable=durable) as tmp:
        with output_errors(dest):
            f = open(tmp, mode)  # noqa: SIM115 - closed below, errors mapped on close too
        try:
            yield OutputFile(f, Path(dest))
        finally:
            with output_errors(dest):
                f.close()


def atomic_write_bytes(dest: Path, data: bytes) -> Path:
    """Write `data` to `dest` atomically and durably."""
    with atomic_file(dest, "wb") as f:
        f.write(data)
    return Path(dest)


def atomic_write_text(dest: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `dest` atomically and durably."""
    return atomic_write_bytes(dest, text.encode())
