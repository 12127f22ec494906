"""fcls.infer.common.output: atomic outputs under injected faults at every output step."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import ERRNOS, dead_pid, inject, is_temp, oserror

from fcls.infer.common import output as files
from fcls.infer.common.errors import OutputError
from fcls.infer.common.output import (
    BACKUP_SUFFIX,
    TEMP_SUFFIX,
    OutputSet,
    atomic_file,
    atomic_write_bytes,
    leftover_temps,
    output_errors,
    temp_name,
)

POINTS = ["create", "open", "write", "close", "fsync", "replace", "fsync_dir"]


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("existing", [True, False], ids=["replace-old", "new"])
def test_atomic_write_fault_leaves_destination_as_it_was(
    tmp_path, monkeypatch, point, code, existing
):
    dest = tmp_path / "out.csv"
    if existing:
        dest.write_bytes(b"old results\n")
    calls = inject(monkeypatch, point, code)
    with pytest.raises(OutputError) as info:
        atomic_write_bytes(dest, b"new results\n" * 1000)
    monkeypatch.undo()
    assert calls["n"] >= 1  # the fault was really hit
    message = str(info.value)
    assert message.startswith(f"{dest}: ") and os.strerror(code) in message
    assert TEMP_SUFFIX not in message and len(message.splitlines()) == 1
    if existing:
        assert dest.read_bytes() == b"old results\n"
    else:
        assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.csv"] if existing else [])


def test_atomic_file_success_is_durable(tmp_path, monkeypatch):
    synced: list[bool] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd))
    )
    dest = tmp_path / "r.csv"
    with atomic_file(dest) as f:
        f.write(b"x\n")
    assert dest.read_bytes() == b"x\n"
    assert synced == [False, True]  # the file before the rename, its directory after
    synced.clear()
    with atomic_file(dest, durable=False) as f:
        f.write(b"y\n")
    assert synced == [] and dest.read_bytes() == b"y\n"


def test_exception_inside_discards_the_temp(tmp_path):
    dest = tmp_path / "r.csv"
    dest.write_bytes(b"old")
    with pytest.raises(KeyError), atomic_file(dest) as f:
        f.write(b"partial")
        raise KeyError("boom")
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_missing_directory_names_the_users_path(tmp_path):
    dest = tmp_path / "nodir" / "r.csv"
    with pytest.raises(OutputError) as info:
        atomic_write_bytes(dest, b"x")
    assert str(info.value) == f"{dest}: directory {dest.parent} does not exist"
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is not a directory"):
        atomic_write_bytes(tmp_path / "file" / "r.csv", b"x")
    with pytest.raises(OutputError, match="is a directory, not a file"):
        atomic_write_bytes(tmp_path, b"x")


def _three(tmp_path: Path) -> tuple[OutputSet, list[Path]]:
    dests = [tmp_path / f"{c}.csv" for c in "abc"]
    dests[0].write_bytes(b"old a")
    dests[1].write_bytes(b"old b")  # c.csv does not exist yet
    outputs = OutputSet()
    for d in dests:
        outputs.stage(d).write_bytes(b"new " + d.name.encode())
    return outputs, dests


@pytest.mark.parametrize("failing", [1, 2])
@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
def test_commit_all_rolls_back_when_a_rename_fails(tmp_path, monkeypatch, failing, code):
    outputs, dests = _three(tmp_path)
    real_replace = os.replace
    renames = {"n": 0}

    def replace(src: Any, dst: Any) -> None:
        if is_temp(src):
            if renames["n"] == failing:  # 0-based: the second (1) or third (2) publish
                raise oserror(code)
            renames["n"] += 1
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with outputs, pytest.raises(OutputError, match=f"{dests[failing].name}: cannot write"):
        outputs.commit_all()
    monkeypatch.undo()
    assert dests[0].read_bytes() == b"old a" and dests[1].read_bytes() == b"old b"
    assert not dests[2].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_commit_all_rolls_back_when_the_directory_fsync_fails(tmp_path, monkeypatch):
    outputs, dests = _three(tmp_path)
    inject(monkeypatch, "fsync_dir", errno.EIO)
    with outputs, pytest.raises(OutputError, match="Input/output error"):
        outputs.commit_all()
    monkeypatch.undo()
    assert [d.exists() and d.read_bytes() for d in dests] == [b"old a", b"old b", False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_commit_all_publishes_all(tmp_path):
    outputs, dests = _three(tmp_path)
    with outputs:
        assert outputs.commit_all() == dests
    assert [d.read_bytes() for d in dests] == [b"new a.csv", b"new b.csv", b"new c.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "c.csv"]


def test_release_keeps_the_temp(tmp_path):
    dest = tmp_path / "r.csv"
    keep = tmp_path / ".r.csv.fcls-resume"
    with OutputSet() as outputs:
        outputs.stage(dest, keep)
        assert outputs.release(dest) == keep
        assert dest not in outputs.staged
    assert keep.exists() and not dest.exists()


def test_leftover_temps_are_those_of_dead_processes(tmp_path):
    dest = tmp_path / "r.csv"
    pid = dead_pid()
    ours = temp_name(dest)
    ours.write_text("")
    stale = tmp_path / f".r.csv.{pid}.abcd1234{TEMP_SUFFIX}"
    stale.write_text("")
    other = tmp_path / f".other.csv.{pid}.abcd1234{TEMP_SUFFIX}"
    other.write_text("")
    assert leftover_temps(dest) == [stale]
    assert BACKUP_SUFFIX != TEMP_SUFFIX


def test_staging_clears_a_dead_runs_temps_and_keeps_a_live_ones(tmp_path):
    """Every staged file (a drift report here) is cleared of a killed run's temps as it is
    staged, and said; a live run's temp (this process stands for it) is left alone."""
    dest = tmp_path / "r.drift.json"
    stale = tmp_path / f".r.drift.json.{dead_pid()}.abcd1234{TEMP_SUFFIX}"
    live = temp_name(dest)
    for path in (stale, live):
        path.write_text("{")
    notes: list[str] = []
    with OutputSet(log=notes.append) as outputs:
        outputs.stage(dest).write_text("{}")
        outputs.commit(dest)
    assert notes == [f"removed 1 leftover file(s) of killed runs beside {dest}"]
    assert not stale.exists() and live.exists() and dest.read_text() == "{}"


def test_a_destination_another_run_moves_aside_mid_commit_is_published(tmp_path, monkeypatch):
    """Two runs commit one destination: the other moves it aside between our look and our
    rename. Ours still publishes, with nothing to back up, and leaves no temp."""
    dest = tmp_path / "r.csv"
    dest.write_text("old\n")
    real = os.replace
    raced = []

    def racing(src: Any, dst: Any) -> None:
        if Path(src) == dest and not raced:  # the other run's backup rename comes first
            raced.append(True)
            real(dest, tmp_path / "theirs.bak")
        real(src, dst)

    with OutputSet() as outputs:
        outputs.stage(dest).write_text("new\n")
        monkeypatch.setattr(os, "replace", racing)
        outputs.commit_all()
    assert raced and dest.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "theirs.bak"]


def test_output_errors_names_the_destination(tmp_path):
    dest = tmp_path / "r.csv"
    with pytest.raises(OutputError) as info, output_errors(dest):
        raise oserror(errno.ENOSPC)
    assert str(info.value) == f"{dest}: cannot write (No space left on device)"
    assert files.fsync_dir(tmp_path / "missing") is None  # nothing to sync: not an error
