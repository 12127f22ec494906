"""Resume state of `fcls-infer --resume`: a journal beside the partial output of a run.

A resumable run writes its output to a stable temp name beside the destination
(`.NAME.fcls-resume`) so that a restart finds it, and every few seconds records in
`.NAME.fcls-resume.json` how far the output is durably written: rows done, the input byte
offset (in the decompressed stream) and the output byte offset after the last complete block,
and the file line the next block starts on. The journal also records everything that makes
continuing safe: the input's identity (size, mtime, sha256 of its first and last MiB), the
model's sha256, the options that change output bytes and the fcls version. A restart with any
of them different is refused with a message naming the item.

One resumable run at a time per destination: a run holds an advisory lock (flock) on
`.NAME.fcls-resume.lock`, holding its pid, from before it reads the journal until it ends; a
second run is refused naming that pid, and a run without --resume leaves a live run's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..common.errors import ConfigError, OutputError
from ..common.output import atomic_write_text, leftover_temps
from ..common.system import fcls_version
from .options import refusal_words

RESUME_SUFFIX = ".fcls-resume"
JOURNAL_FORMAT = 1
HASH_BYTES = 1 << 20  # the input's first and last MiB identify it cheaply


def lock_path(dest: Path) -> Path:
    """The lock file of a destination's resume state."""
    temp, _ = resume_paths(dest)
    return temp.with_name(temp.name + ".lock")


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return "unknown"


class ResumeLock:
    """An exclusive flock on a destination's lock file, held by one resumable run."""

    def __init__(self, dest: Path) -> None:
        self.dest, self.path = Path(dest), lock_path(dest)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse the run with the holder's pid (a ConfigError)."""
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(
                    f"{self.dest}: cannot lock its resume state ({e.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _holder(fd)
                os.close(fd)
                raise ConfigError(
                    f"cannot resume {self.dest}: another --resume run (pid {pid}) is writing "
                    "it; wait for it to end, or stop it first"
                ) from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
            else:  # its holder removed it as we opened it: lock the file now there
                os.close(fd)

    def release(self) -> None:
        """Remove the lock file while holding it (so a waiting run locks a fresh one)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def lock_holder(dest: Path) -> str | None:
    """The pid of the live run holding `dest`'s resume lock ('unknown' if unreadable), or None."""
    try:
        fd = os.open(lock_path(dest), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)  # closing drops a lock taken here
    return None


def resume_paths(dest: Path) -> tuple[Path, Path]:
    """The stable partial-output name and the journal name beside `dest`."""
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    temp = parent / f".{dest.name}{RESUME_SUFFIX}"
    return temp, temp.with_name(temp.name + ".json")


def input_identity(path: Path) -> dict[str, Any]:
    """Size, mtime and sha256 of the first and last MiB of an input file."""
    with Path(path).open("rb") as f:
        st = os.fstat(f.fileno())
        head = hashlib.sha256(f.read(HASH_BYTES)).hexdigest()
        f.seek(max(0, st.st_size - HASH_BYTES))
        tail = hashlib.sha256(f.read(HASH_BYTES)).hexdigest()
    return {
        "path": str(Path(path).resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "head_sha256": head,
        "tail_sha256": tail,
    }


@dataclass(frozen=True)
class Position:
    """How far a resumable run has durably written its output."""

    rows: int  # data rows in the output so far
    input_offset: int  # bytes of the (decompressed) input consumed, header included
    output_offset: int  # bytes of the output written, header included
    line: int  # file line of the next input row
    # the drift counts of the rows so far (common.drift), so a resumed run's report covers all
    drift: tuple[int, ...] | None = None


# journal key -> the words a refusal uses for it (the options': from ScoringOptions' fields)
_ITEMS = {
    "format": "journal format",
    "fcls": "fcls version",
    "input.path": "input path",
    "input.size": "input size (bytes)",
    "input.mtime_ns": "input modification time (ns)",
    "input.head_sha256": "input content (sha256 of the first MiB)",
    "input.tail_sha256": "input content (sha256 of the last MiB)",
    "model_sha256": "model (sha256)",
    **refusal_words(),
}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(value: Any) -> str:
    text = str(value)
    return (
        text[:12] + "..."
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text)
        else text
    )


class Journal:
    """The journal of one resumable destination: what the run is, and how far it got."""

    def __init__(self, dest: Path, identity: dict[str, Any]) -> None:
        self.dest = Path(dest)
        self.temp, self.path = resume_paths(self.dest)
        self.identity = {"format": JOURNAL_FORMAT, "fcls": fcls_version(), **identity}
        self._lock = ResumeLock(self.dest)

    def lock(self) -> None:
        """Take the destination's resume lock (a ConfigError naming the holder if taken)."""
        self._lock.acquire()

    def unlock(self) -> None:
        """Let another run resume this destination."""
        self._lock.release()

    def load(self) -> Position | None:
        """The recorded position, None when there is nothing to resume; refuse any mismatch."""
        if not self.path.is_file() or not self.temp.is_file():
            return None
        try:
            data = json.loads(self.path.read_text())
            recorded = {k: data[k] for k in self.identity}
            position = Position(**data["position"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"cannot resume {self.dest}: its journal {self.path} is unreadable "
                f"({type(e).__name__}: {e}); run without --resume to start over"
            ) from None
        now, then = _flat(self.identity), _flat(recorded)
        for key in [*now, *(k for k in then if k not in now)]:
            if now.get(key) != then.get(key):
                raise ConfigError(
                    f"cannot resume {self.dest}: {_ITEMS.get(key, key)} differs from the "
                    f"interrupted run's ({_show(now.get(key))} now, {_show(then.get(key))} "
                    "recorded); run without --resume to start over"
                )
        size = self.temp.stat().st_size
        if size < position.output_offset:
            raise ConfigError(
                f"cannot resume {self.dest}: its partial output {self.temp} has {size} bytes, "
                f"fewer than the {position.output_offset} recorded; run without --resume to "
                "start over"
            )
        return position

    def save(self, position: Position) -> None:
        """Atomically record `position` (call only after the output is fsynced up to it)."""
        text = json.dumps({**self.identity, "position": asdict(position)}, indent=1)
        try:
            atomic_write_text(self.path, text)
        except OutputError as e:
            raise OutputError(f"{self.dest}: cannot record resume state ({e})") from None

    def remove(self) -> None:
        """Drop the journal (after the output was committed) and the lock."""
        self.path.unlink(missing_ok=True)
        self.unlock()


def leftovers(dest: Path, keep_resumable: bool) -> list[Path]:
    """The resume files killed runs left for `dest`, unless kept: the partial output, the
    journal and its temps, the lock (never those of a live --resume run, which holds the
    lock). The temps and backups of `dest` itself are `OutputSet.stage`'s to clear."""
    temp, journal = resume_paths(dest)
    if keep_resumable or lock_holder(dest) is not None:
        return leftover_temps(journal)  # a dead journal write's temp: never resumable
    return [*leftover_temps(journal), *(p for p in (temp, journal, lock_path(dest)) if p.exists())]
