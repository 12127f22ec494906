"""fcls.infer.engine.pipeline: no hang on any worker failure, output faults, output = input, --resume."""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import dead_pid, sparse_pixels, tiny_logits, tiny_model, wait_until, with_profile
from helpers import sparse_pixels as pixels
from test_files import ERRNOS, inject, oserror

from fcls.infer import Predictor, predict_csv
from fcls.infer.cli.infer import main
from fcls.infer.common.drift import Profile
from fcls.infer.common.errors import ConfigError, DataError, ModelError, OutputError
from fcls.infer.common.output import TEMP_SUFFIX
from fcls.infer.common.spec import DEFAULT_SPEC
from fcls.infer.engine import stages
from fcls.infer.engine.options import ScoringOptions
from fcls.infer.engine.pipeline import predict_files
from fcls.infer.engine.resume import Journal, Position, resume_paths
from fcls.infer.formats.csvfile import write_eval_csv

REPO = Path(__file__).resolve().parents[1]
HANG_TIMEOUT = 20.0  # seconds: a pipeline that has not stopped by then hangs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3,000 rows (~6 MB): ~90 blocks of 64 KiB."""
    return write_eval_csv(tmp_path_factory.mktemp("data") / "data.csv", pixels(3000))


def _in_thread(fn: Any) -> BaseException | None:
    """Run fn in a thread; fail the test if it has not returned within HANG_TIMEOUT."""
    box: dict[str, BaseException | None] = {"error": None}

    def target() -> None:
        try:
            fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(HANG_TIMEOUT)
    assert not t.is_alive(), f"predict_csv still running after {HANG_TIMEOUT}s: a hang"
    return box["error"]


def _nth_call_fails(
    monkeypatch, owner: Any, name: str, n: int, error: BaseException, delay: float = 0.0
) -> None:
    """The n-th call raises `error`; every call first sleeps `delay` (a slow peer). Calls may
    come from several threads at once: each takes its number under a lock."""
    real = getattr(owner, name)
    calls, lock = {"n": 0}, threading.Lock()

    def fake(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls["n"] += 1
            k = calls["n"]
        time.sleep(delay)
        if k == n:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, fake)


def _only(tmp_path: Path, *names: str) -> None:
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in names)
    assert left == [], f"left behind: {left}"


# -- item 0: every worker failure stops the pipeline --------------------------------------


def test_writer_failure_stops_the_pipeline(tmp_path, tiny, data, monkeypatch):
    # a slow writer: the scoring loop is waiting on a full queue when the writer dies
    _nth_call_fails(monkeypatch, stages, "format_rows", 3, oserror(errno.ENOSPC), delay=0.3)
    out = tmp_path / "r.csv"
    error = _in_thread(lambda: predict_csv(data, out, tiny, chunk_bytes=1 << 16, batch_size=16))
    assert isinstance(error, OutputError), error
    assert str(error) == f"{out}: cannot write (No space left on device)"
    _only(tmp_path)


def test_reader_failure_stops_the_pipeline(tmp_path, tiny, data):
    lines = data.read_bytes().split(b"\n")
    lines[2000] = lines[2000].replace(b",0,", b",x,", 1)  # a bad cell ~60 blocks in
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\n".join(lines))
    out = tmp_path / "r.csv"
    error = _in_thread(lambda: predict_csv(bad, out, tiny, chunk_bytes=1 << 16, batch_size=16))
    assert isinstance(error, DataError), error
    assert error.line == 2001 and "'x' is not an integer" in str(error)
    _only(tmp_path, "bad.csv")


def test_parse_threads_give_the_same_bytes_and_the_first_error(tmp_path, tiny, data):
    """Two parse threads (the CUDA default) write what one writes; with two bad rows, the
    first in the file is the one reported, though its block may finish parsing last."""
    outs = [tmp_path / f"r{n}.csv" for n in (1, 2)]
    for n, out in zip((1, 2), outs):
        assert (
            _in_thread(
                lambda n=n, out=out: predict_csv(
                    data, out, tiny, chunk_bytes=1 << 16, parse_threads=n, proba=True
                )
            )
            is None
        )
    assert outs[0].read_bytes() == outs[1].read_bytes()
    lines = data.read_bytes().split(b"\n")
    lines[1500] = lines[1500].replace(b",0,", b",0x1,", 1)  # the pyarrow path: a slow block
    lines[1600] = lines[1600].replace(b",0,", b",,", 1)  # a later, quickly refused block
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\n".join(lines))
    error = _in_thread(
        lambda: predict_csv(bad, tmp_path / "x.csv", tiny, chunk_bytes=1 << 16, parse_threads=2)
    )
    assert isinstance(error, DataError) and error.line == 1501, error
    result = CliRunner().invoke(
        main,
        [
            str(data),
            "-m",
            str(tiny),
            "--engine",
            "ray",
            "--parse-threads",
            "2",
            "-o",
            str(tmp_path / "y.csv"),
        ],
    )
    assert result.exit_code != 0
    assert "--parse-threads works with --engine local only" in result.output


def test_model_failure_stops_the_pipeline(tmp_path, tiny, data, monkeypatch):
    _nth_call_fails(monkeypatch, Predictor, "_fetch", 5, RuntimeError("[ONNXRuntimeError] boom"))
    out = tmp_path / "r.csv"
    error = _in_thread(lambda: predict_csv(data, out, tiny, chunk_bytes=1 << 16, batch_size=16))
    assert isinstance(error, ModelError), error
    assert "inference failed" in str(error) and "boom" in str(error)
    _only(tmp_path)


def test_reader_failure_while_the_writer_is_blocked(tmp_path, tiny, data, monkeypatch):
    """Writer slow, queues full, then the reader fails: still a prompt DataError."""
    real = stages.format_rows
    monkeypatch.setattr(stages, "format_rows", lambda *a: (time.sleep(0.05), real(*a))[1])
    lines = data.read_bytes().split(b"\n")
    lines[1500] = b"ragged"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\n".join(lines))
    error = _in_thread(lambda: predict_csv(bad, tmp_path / "r.csv", tiny, chunk_bytes=1 << 16))
    assert isinstance(error, DataError) and error.line == 1501
    _only(tmp_path, "bad.csv")


# -- items 3, 4: output faults ------------------------------------------------------------


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("point", ["create", "open", "write", "fsync", "replace", "fsync_dir"])
def test_output_fault_is_an_output_error_and_leaves_nothing(
    tmp_path, tiny, data, monkeypatch, point, code
):
    out = tmp_path / "r.csv"
    out.write_bytes(b"previous results\n")
    calls = inject(monkeypatch, point, code, at=3)  # write: the second block of rows
    error = _in_thread(lambda: predict_csv(data, out, tiny, chunk_bytes=1 << 16))
    monkeypatch.undo()
    assert calls["n"] >= 1
    assert isinstance(error, OutputError), error
    assert str(error).startswith(f"{out}: ") and os.strerror(code) in str(error)
    assert TEMP_SUFFIX not in str(error)
    assert out.read_bytes() == b"previous results\n"
    _only(tmp_path, "r.csv")


def test_disk_full_in_the_cli_is_one_line(tmp_path, tiny, data, monkeypatch):
    _nth_call_fails(monkeypatch, stages, "format_rows", 2, oserror(errno.ENOSPC))
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(main, [str(data), "--model", str(tiny), "-o", str(out)])
    assert result.exit_code == 4  # clikit.OUTPUT
    assert result.output == f"Error: {out}: cannot write (No space left on device)\n"
    _only(tmp_path)


# -- item 5: missing output directory -----------------------------------------------------


def test_missing_output_directory_is_created_and_a_blocked_one_named(tmp_path, tiny, data):
    out = tmp_path / "nodir" / "r.csv"
    result = CliRunner().invoke(main, [str(data), "--model", str(tiny), "-o", str(out)])
    assert result.exit_code == 0 and out.is_file()  # one rule for one and several inputs
    blocker = tmp_path / "file"
    blocker.write_text("")
    second = tmp_path / "second.csv"
    second.write_bytes(data.read_bytes())
    for args in ([str(data)], [str(data), str(second)]):
        result = CliRunner().invoke(
            main, [*args, "--model", str(tiny), "-o", f"{blocker / 'outdir'}/"]
        )
        assert result.exit_code == 4 and "Traceback" not in result.output
        assert result.output.startswith(f"Error: {blocker / 'outdir'}: cannot create the output")
        assert len(result.output.splitlines()) == 1 and TEMP_SUFFIX not in result.output


# -- item 2: the output must not be an input ----------------------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative"])
def test_output_that_is_the_input_is_refused(tmp_path, tiny, data, how, monkeypatch):
    src = tmp_path / "in.csv"
    src.write_bytes(data.read_bytes())
    before = src.read_bytes()
    out = {
        "same path": src,
        "symlink": tmp_path / "link.csv",
        "hard link": tmp_path / "hard.csv",
        "relative": Path("in.csv"),
    }[how]
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hard link":
        os.link(src, out)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="would destroy the input"):
        predict_csv(src, out, tiny)
    result = CliRunner().invoke(main, [str(src), "--model", str(tiny), "-o", str(out)])
    assert result.exit_code == 1 and "is the input" in result.output
    assert src.read_bytes() == before


def test_output_directory_that_would_overwrite_an_input_is_refused(tmp_path, tiny, data):
    a = tmp_path / "a.csv"
    a.write_bytes(data.read_bytes())
    b = tmp_path / "a.results.csv"  # what a.csv's results would be called in tmp_path
    b.write_bytes(data.read_bytes())
    result = CliRunner().invoke(main, [str(a), str(b), "--model", str(tiny), "-o", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert f"output {b} is the input {b}" in result.output
    assert b.read_bytes() == data.read_bytes()


def test_output_that_is_the_model_is_refused(tmp_path, tiny, data):
    with pytest.raises(ConfigError, match="is the model"):
        predict_csv(data, tiny, tiny)


# -- durability ---------------------------------------------------------------------------


def test_success_fsyncs_the_output_and_its_directory(tmp_path, tiny, data, monkeypatch):
    import stat

    synced: list[bool] = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd))
    )
    predict_csv(data, tmp_path / "r.csv", tiny)
    assert synced == [False, True]
    synced.clear()
    predict_csv(data, tmp_path / "r2.csv", tiny, durable=False)
    assert synced == []


def test_proba_bytes_do_not_depend_on_batch_or_block_size(tmp_path, exported, data):
    """Why --resume need not record the batch size: rows are scored independently."""
    small = tmp_path / "small.csv"
    write_eval_csv(small, pixels(300, seed=1))
    outs = []
    for i, (batch, chunk) in enumerate([(1, 30_000), (64, 1 << 21), (257, 70_000)]):
        out = tmp_path / f"{i}.csv"
        predict_csv(small, out, exported, batch_size=batch, chunk_bytes=chunk, proba=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


# -- item 6: --resume ---------------------------------------------------------------------

KILL_SCRIPT = """
import sys, time
from fcls.infer import Predictor, predict_csv
real = Predictor._fetch  # one onnxruntime call
def slow(self, pixels, want):
    time.sleep(0.01)  # so that the test can kill it mid-run
    return real(self, pixels, want)
Predictor._fetch = slow
src, dst, model = sys.argv[1:4]
predict_csv(src, dst, model, resume=True, proba=True, chunk_bytes=1 << 16, checkpoint_seconds=0)
"""


SLOW_CLI = """
import sys, time
from fcls.infer import Predictor
from fcls.infer.cli.infer import main
real = Predictor._fetch  # one onnxruntime call
def slow(self, pixels, want):
    time.sleep(0.0002)
    return real(self, pixels, want)
Predictor._fetch = slow
main(sys.argv[1:], prog_name="fcls-infer")
"""


def _kill_when(proc: subprocess.Popen, journal: Path, rows: int, timeout: float = 120) -> int:
    """SIGKILL `proc` once its journal records at least `rows` rows; returns those rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = json.loads(journal.read_text())["position"]["rows"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= rows:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return done
        assert proc.poll() is None, "the run ended before the test could kill it"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint with {rows} rows within {timeout}s")


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "gz"])
def test_killed_run_resumes_byte_identical(tmp_path, exported, gz):
    src = tmp_path / ("in.csv.gz" if gz else "in.csv")
    plain = write_eval_csv(tmp_path / "plain.csv", pixels(1500, seed=2))
    if gz:
        src.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    else:
        plain.rename(src)
    expected = tmp_path / "expected.csv"
    predict_csv(src, expected, exported, proba=True, batch_size=7)
    out = tmp_path / "out.csv"
    temp, journal = resume_paths(out)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(src), str(out), str(exported)], cwd=REPO
    )
    done = _kill_when(proc, journal, 400)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert temp.exists() and 400 <= done < 1500
    notes: list[str] = []
    summary = predict_csv(src, out, exported, proba=True, resume=True, log=notes.append)
    assert summary.resumed >= done and summary.rows == 1500
    # a kill while the journal was being replaced leaves its temp file: removed, and said so
    resuming = [n for n in notes if not n.startswith("removed ")]
    assert resuming[0].startswith(f"resuming {out} after row {summary.resumed} (line "), notes
    assert out.read_bytes() == expected.read_bytes()
    assert not temp.exists() and not journal.exists()


def _journal(tmp_path: Path, dest: Path, **change: Any) -> Journal:
    identity = {
        "input": {"path": "/x/in.csv", "size": 10, "mtime_ns": 5, "head_sha256": "a" * 64},
        "model_sha256": "b" * 64,
        "options": {"proba": False, "class_names": False, "provider": "cpu"},
    }
    for key, value in change.items():
        *parents, leaf = key.split("__")
        d = identity
        for p in parents:
            d = d[p]
        d[leaf] = value
    return Journal(dest, json.loads(json.dumps(identity)))


@pytest.mark.parametrize(
    ("change", "item"),
    [
        ({"input__path": "/y/in.csv"}, "input path"),
        ({"input__size": 11}, "input size (bytes)"),
        ({"input__mtime_ns": 6}, "input modification time (ns)"),
        ({"input__head_sha256": "c" * 64}, "input content (sha256 of the first MiB)"),
        ({"input__tail_sha256": "d" * 64}, "input content (sha256 of the last MiB)"),
        ({"model_sha256": "e" * 64}, "model (sha256)"),
        ({"options__proba": True}, "option --proba"),
        ({"options__class_names": True}, "option --class-names"),
        ({"options__provider": "cuda"}, "execution provider"),
    ],
)
def test_resume_mismatch_names_the_item(tmp_path, change, item):
    dest = tmp_path / "r.csv"
    original = _journal(tmp_path, dest)
    original.temp.write_bytes(b"ID,label\n0,1\n")
    original.save(Position(rows=1, input_offset=100, output_offset=13, line=3))
    assert _journal(tmp_path, dest).load() == Position(1, 100, 13, 3)
    with pytest.raises(ConfigError) as info:
        _journal(tmp_path, dest, **change).load()
    assert str(info.value).startswith(f"cannot resume {dest}: {item} differs")
    assert str(info.value).endswith("run without --resume to start over")


def test_resume_refuses_other_fcls_version_corrupt_journal_and_short_output(tmp_path, monkeypatch):
    dest = tmp_path / "r.csv"
    j = _journal(tmp_path, dest)
    j.temp.write_bytes(b"ID,label\n0,1\n")
    j.save(Position(1, 100, 13, 3))
    monkeypatch.setattr("fcls.infer.engine.resume.fcls_version", lambda: "0.0.0-other")
    with pytest.raises(ConfigError, match="fcls version differs"):
        _journal(tmp_path, dest).load()
    monkeypatch.undo()
    j.temp.write_bytes(b"ID,la")
    with pytest.raises(ConfigError, match="has 5 bytes, fewer than the 13 recorded"):
        j.load()
    j.path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"journal .* is unreadable"):
        j.load()


def test_resume_refuses_a_changed_input(tmp_path, tiny, data, monkeypatch):
    src = tmp_path / "in.csv"
    src.write_bytes(data.read_bytes())
    out = tmp_path / "r.csv"
    _nth_call_fails(monkeypatch, stages, "format_rows", 40, oserror(errno.ENOSPC))
    with pytest.raises(OutputError):
        predict_csv(src, out, tiny, resume=True, chunk_bytes=1 << 16, checkpoint_seconds=0)
    monkeypatch.undo()
    temp, journal = resume_paths(out)
    assert temp.exists() and journal.exists()  # kept for the next --resume
    os.utime(src, ns=(0, 0))
    with pytest.raises(ConfigError, match="input modification time"):
        predict_csv(src, out, tiny, resume=True)
    notes: list[str] = []
    predict_csv(src, out, tiny, log=notes.append)  # without --resume: starts over
    assert notes == [f"removed 2 leftover file(s) of killed runs beside {out}"]
    _only(tmp_path, "in.csv", "r.csv")


def test_resume_after_a_failure_continues(tmp_path, tiny, data, monkeypatch):
    out = tmp_path / "r.csv"
    expected = tmp_path / "e.csv"
    predict_csv(data, expected, tiny)
    _nth_call_fails(monkeypatch, stages, "format_rows", 40, oserror(errno.ENOSPC))
    with pytest.raises(OutputError):
        predict_csv(data, out, tiny, resume=True, chunk_bytes=1 << 16, checkpoint_seconds=0)
    monkeypatch.undo()
    summary = predict_csv(data, out, tiny, resume=True, chunk_bytes=1 << 16)
    assert summary.resumed > 500 and summary.rows == 3000
    assert out.read_bytes() == expected.read_bytes()


def test_resume_with_nothing_to_resume_starts_normally(tmp_path, tiny, data):
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(main, [str(data), "--model", str(tiny), "-o", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"fcls-infer: nothing to resume for {out}: starting from the first row" in result.output
    assert out.read_bytes().count(b"\n") == 3001
    _only(tmp_path, "r.csv")


def test_resume_refuses_stdin_and_ray(tiny, data, tmp_path):
    result = CliRunner().invoke(
        main, ["-", "--model", str(tiny), "-o", str(tmp_path / "r.csv"), "--resume"], input=b""
    )
    assert result.exit_code == 1 and "<stdin> cannot be resumed" in result.output
    result = CliRunner().invoke(main, [str(data), "--resume", "--engine", "ray"])
    assert result.exit_code == 1 and "--engine local only" in result.output


def test_leftovers_of_killed_runs_are_removed_and_said(tmp_path, tiny, data):
    out = tmp_path / "r.csv"
    stale = tmp_path / f".r.csv.{dead_pid()}.0a1b2c3d{TEMP_SUFFIX}"
    stale.write_text("partial")
    result = CliRunner().invoke(main, [str(data), "--model", str(tiny), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"fcls-infer: removed 1 leftover file(s) of killed runs beside {out}\n" in result.output
    _only(tmp_path, "r.csv")


def _stale_temps_of_a_killed_run(model: Path, out: Path) -> None:
    """Leave what a SIGKILLed run leaves: the staged temps of `out` and of its drift report
    (the run reads a FIFO no one writes, so it waits with both staged until it is killed)."""
    fifo = out.parent / "never-written.fifo"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "fcls.infer.cli.infer", str(fifo), "-m", str(model)]
    proc = subprocess.Popen([*command, "-o", str(out)], cwd=REPO, stderr=subprocess.DEVNULL)
    report = out.with_name(f"{out.stem}.drift.json")
    staged = [f".{out.name}.*{TEMP_SUFFIX}", f".{report.name}.*{TEMP_SUFFIX}"]
    try:
        wait_until(lambda: all(any(out.parent.glob(g)) for g in staged), 60, "staging", proc)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    fifo.unlink()


def test_two_runs_on_one_destination_leave_no_temp_file(tmp_path):
    """Two runs started together on one destination whose drift report is written too, after
    a killed run left its temps there: both succeed, the outputs are right, and no temp file of
    any output (results or report) is left."""
    reference = sparse_pixels(2000, seed=1)
    profile = Profile.build(reference, tiny_logits(reference), "reference rows")
    model = with_profile(tiny_model(tmp_path / "m.onnx"), profile)
    src = write_eval_csv(tmp_path / "in.csv", pixels(1000, seed=9))
    command = [sys.executable, "-m", "fcls.infer.cli.infer", str(src), "-m", str(model), "-o"]
    expected = tmp_path / "expected" / "r.csv"
    subprocess.run([*command, str(expected)], cwd=REPO, check=True, timeout=120)
    out = tmp_path / "out" / "r.csv"
    out.parent.mkdir()
    _stale_temps_of_a_killed_run(model, out)
    for _ in range(3):  # the two runs overlap differently each time
        runs = [
            subprocess.Popen([*command, str(out)], cwd=REPO, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for run in runs:
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
        assert sorted(p.name for p in out.parent.iterdir()) == ["r.csv", "r.drift.json"]
        assert out.read_bytes() == expected.read_bytes()
        report = out.with_name("r.drift.json").read_bytes()
        assert report == expected.with_name("r.drift.json").read_bytes()


def test_multi_file_resume(tmp_path, tiny, data, monkeypatch):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(data.read_bytes())
    write_eval_csv(b, pixels(500, seed=3))
    outdir = tmp_path / "out"
    expected = predict_files([a, b], [tmp_path / "ea.csv", tmp_path / "eb.csv"], tiny)
    _nth_call_fails(monkeypatch, stages, "format_rows", 125, oserror(errno.EIO))
    dests = [outdir / "a.results.csv", outdir / "b.results.csv"]
    outdir.mkdir()
    with pytest.raises(OutputError):
        predict_files([a, b], dests, tiny, resume=True, chunk_bytes=1 << 16, checkpoint_seconds=0)
    monkeypatch.undo()
    summaries = predict_files([a, b], dests, tiny, resume=True, chunk_bytes=1 << 16)
    assert [s.rows for s in summaries] == [e.rows for e in expected]
    assert summaries[0].resumed == 3000  # finished before the failure in b
    assert dests[0].read_bytes() == (tmp_path / "ea.csv").read_bytes()
    assert dests[1].read_bytes() == (tmp_path / "eb.csv").read_bytes()
    assert sorted(p.name for p in outdir.iterdir()) == ["a.results.csv", "b.results.csv"]


@pytest.fixture(scope="module")
def rows_200k(tmp_path_factory) -> Path:
    """A generated 200,000-row evaluate file (~500 MB), written in parts to bound memory."""
    path = tmp_path_factory.mktemp("big") / "eval200k.csv"
    with path.open("wb") as out:
        for part in range(4):
            piece = write_eval_csv(path.with_name(f"part{part}.csv"), pixels(50_000, seed=part))
            data = piece.read_bytes()
            out.write(data if part == 0 else data.split(b"\n", 1)[1])
            piece.unlink()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("gz", [False, True], ids=["csv", "gz"])
def test_cli_sigkill_and_resume_200k_rows(tmp_path, tiny, rows_200k, gz):
    """`fcls-infer --resume` killed with SIGKILL mid-run, started again: same bytes."""
    src = rows_200k
    if gz:
        src = tmp_path / "eval200k.csv.gz"
        with rows_200k.open("rb") as f, gzip.open(src, "wb", compresslevel=1) as g:
            while block := f.read(1 << 24):
                g.write(block)
    expected = tmp_path / "expected.csv"
    predict_csv(src, expected, tiny, proba=True)
    out = tmp_path / "out.csv"
    # the output does not depend on the batch size
    args = [str(src), "--model", str(tiny), "-o", str(out), "--proba", "--resume"]
    command = [sys.executable, "-m", "fcls.infer.cli.infer", *args, "--batch-size", "2"]
    temp, journal = resume_paths(out)
    # the killed run's model calls are slowed, so that it is still running after its first
    # checkpoint (2 s) however fast this CPU parses and scores; the resumed run is the CLI's own
    slowed = [sys.executable, "-c", SLOW_CLI, *command[3:]]
    proc = subprocess.Popen(slowed, cwd=REPO, stderr=subprocess.PIPE)
    done = _kill_when(proc, journal, 1)
    assert proc.returncode == -signal.SIGKILL and not out.exists() and 0 < done < 200_000
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"fcls-infer: resuming {out} after row " in resumed.stderr
    assert "200000 rows in" in resumed.stderr
    assert out.read_bytes() == expected.read_bytes()
    assert not temp.exists() and not journal.exists()


# -- the stages alone, and the one block splitter -----------------------------------------


def _drain(q: Any) -> list[Any]:
    items = []
    while (item := q.get(timeout=HANG_TIMEOUT)) is not stages.DONE:
        items.append(item)
        if isinstance(item, stages.Parsed) and item.future.exception() is not None:
            break
    return items


def test_reader_alone_queues_blocks_in_order_and_the_first_error(tmp_path, data):
    import queue
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        q: queue.Queue[Any] = queue.Queue()
        stages.Reader(data, False, 1 << 16, None, pool, DEFAULT_SPEC)(q, stages.Halt())
        items = _drain(q)
        chunks = [item.future.result() for item in items]
        assert len(items) > 10 and sum(len(c) for c in chunks) == 3000
        assert [c.start for c in chunks] == [2] + [i.end_line for i in items[:-1]]
        assert items[-1].end_offset == data.stat().st_size
        lines = data.read_bytes().split(b"\n")
        lines[1000] = lines[1000].replace(b",0,", b",x,", 1)
        bad = tmp_path / "bad.csv"
        bad.write_bytes(b"\n".join(lines))
        q = queue.Queue()
        stages.Reader(bad, False, 1 << 16, None, pool, DEFAULT_SPEC)(q, stages.Halt())
        error = _drain(q)[-1].future.exception()
        assert isinstance(error, DataError) and error.line == 1001


def test_scorer_alone_counts_rows_and_names_a_model_failure(tiny, monkeypatch):
    from fcls.infer.formats.chunk import Chunk

    chunk = Chunk(pixels(50), None, None, start=7)
    options = ScoringOptions(batch_size=16, proba=True)
    scorer = stages.Scorer(Predictor(tiny, "cpu", 1), options, "in.csv", rows=10)
    block = scorer(chunk, 123, 57)
    assert block.scores is not None and block.scores.labels.shape == (50,)
    assert block.scores.probs is not None and block.scores.probs.shape == (50, 10)
    assert block.end == Position(60, 123, 0, 57) and scorer.rows == 60
    monkeypatch.setattr(Predictor, "_fetch", lambda *a: 1 / 0)
    with pytest.raises(ModelError, match=r"block of in\.csv starting at line 7"):
        scorer(chunk, 0, 0)


def test_csv_writer_alone_writes_header_rows_and_checkpoints(tmp_path, tiny):
    import queue

    import pyarrow as pa

    from fcls.infer.formats.chunk import Chunk

    dest = tmp_path / "r.csv"
    journal = _journal(tmp_path, dest)
    chunk = Chunk(pixels(3), pa.array(["a", "b", "c"]), None, start=2)
    q: queue.Queue[Any] = queue.Queue()
    labels = np.array([1, 2, 3])
    scores = stages.Scores(labels, None, None, None)
    q.put(stages.Scored(chunk, scores, Position(3, 99, 0, 5)))
    q.put(stages.Scored(None, None, Position(3, 120, 0, 9)))  # blank lines
    q.put(stages.DONE)
    writer = stages.CsvResultWriter(journal.temp, dest, b"ID,label\n", None, journal, None, 0.0)
    writer(q, stages.Halt())
    assert journal.temp.read_bytes() == b"ID,label\na,1\nb,2\nc,3\n"
    assert journal.load() == Position(3, 120, len(b"ID,label\na,1\nb,2\nc,3\n"), 9)


def test_a_5mb_line_without_newline_fails_at_its_line_in_bounded_memory(tmp_path, tiny):
    import io

    from fcls.infer.formats.csvgrammar import MAX_LINE_BYTES

    head = b"ID," + b",".join(f"pix{i}".encode() for i in range(1, 1025)) + b"\n"
    row = b"1," + b",".join([b"0"] * 1024) + b"\n"
    body = head + row + b"x" * (5 << 20)

    class Counted(io.BytesIO):
        served = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            Counted.served += len(out)
            return out

    stream = Counted(body)
    error = _in_thread(lambda: predict_csv(stream, tmp_path / "r.csv", tiny, progress=False))
    assert isinstance(error, DataError), error
    assert error.line == 3 and f"line longer than {MAX_LINE_BYTES} bytes" in str(error)
    assert Counted.served <= len(head) + len(row) + MAX_LINE_BYTES + (2 << 20) + (1 << 16)
    assert Counted.served < len(body)
    _only(tmp_path)


@pytest.fixture(scope="module")
def tiny_replicas(tmp_path_factory, tiny) -> Path:
    """`tiny` marked as an int8 variant: on CPU with 2 threads, a Predictor runs it on one
    session per thread (`Predictor.asynchronous`), the path that scores a block ahead."""
    import onnx

    model = onnx.load(str(tiny))
    model.metadata_props.add(key="variant", value="int8")
    path = tmp_path_factory.mktemp("replicas") / "tiny.int8.onnx"
    onnx.save(model, str(path))
    return path


def test_scoring_ahead_writes_every_block_before_a_bad_one(tiny_replicas):
    """The scorer starts block k+1 before awaiting block k; a parse failure in a later block
    still lets every earlier block reach the writer, in order, before it is raised."""
    import queue
    from concurrent.futures import Future

    from fcls.infer.engine.pipeline import _score_all
    from fcls.infer.formats.chunk import Chunk

    predictor = Predictor(tiny_replicas, "cpu", 2)
    assert predictor.asynchronous
    parsed: queue.Queue[Any] = queue.Queue()
    for k in range(3):
        future: Future[Any] = Future()
        future.set_result(Chunk(pixels(300, seed=k), None, None, start=2 + 300 * k))
        parsed.put(stages.Parsed(future, 0, 302 + 300 * k))
    bad: Future[Any] = Future()
    bad.set_exception(DataError("data.csv", "pixel 300 is out of range 0..255", 902, "pix77"))
    parsed.put(stages.Parsed(bad, 0, 0))
    scored: queue.Queue[Any] = queue.Queue()
    scorer = stages.Scorer(predictor, ScoringOptions(batch_size=16), "data.csv")
    error = _in_thread(lambda: _score_all(scorer, parsed, scored, stages.Halt(), None))
    assert isinstance(error, DataError) and error.line == 902
    blocks = [scored.get_nowait() for _ in range(scored.qsize())]
    assert [b.end.rows for b in blocks] == [300, 600, 900]
    for k, block in enumerate(blocks):
        expected = Predictor(tiny_replicas, "cpu", 1).predict(pixels(300, seed=k))
        np.testing.assert_array_equal(block.scores.labels, expected)


def test_replicas_give_the_bytes_of_one_session(tmp_path, tiny_replicas, data):
    one = predict_csv(data, tmp_path / "one.csv", Predictor(tiny_replicas, "cpu", 1))
    two = predict_csv(data, tmp_path / "two.csv", tiny_replicas, threads=2, chunk_bytes=1 << 16)
    assert one.rows == two.rows == 3000
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()


def test_a_replica_failure_is_a_model_error_naming_the_block(
    tmp_path, tiny_replicas, data, monkeypatch
):
    """A session failing on a replica thread, while the scorer is a block ahead, still stops
    the run with one ModelError naming the block, and leaves nothing behind."""
    from fcls.infer.engine.predictor import Spread

    _nth_call_fails(monkeypatch, Spread, "work", 5, RuntimeError("[ONNXRuntimeError] boom"))
    out = tmp_path / "r.csv"
    run = lambda: predict_csv(  # noqa: E731
        data, out, tiny_replicas, threads=2, chunk_bytes=1 << 16, batch_size=16
    )
    error = _in_thread(run)
    assert isinstance(error, ModelError), error
    assert "inference failed on the block of" in str(error) and "boom" in str(error)
    _only(tmp_path)
