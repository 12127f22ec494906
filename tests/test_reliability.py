"""Faults a scheduler or a shell brings: pipes that are not stdin, two runs on one destination,
a kill inside a commit, a huge line without a line break."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import deadline, tiny_model, wait_until, write_eval_csv
from helpers import sparse_pixels as pixels

from fcls.infer import predict_csv
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common.errors import ConfigError
from fcls.infer.common.output import BACKUP_SUFFIX, OutputSet, recover_backups
from fcls.infer.engine.pipeline import _progress
from fcls.infer.engine.resume import ResumeLock, lock_holder, resume_paths

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture
def data(tmp_path) -> Path:
    return write_eval_csv(tmp_path / "in.csv", pixels(300, 3))


def _feed(path: str | int, data: bytes) -> threading.Thread:
    """Write `data` into a FIFO path or a pipe's write end, from a daemon thread."""

    def write() -> None:
        if isinstance(path, int):
            with os.fdopen(path, "wb") as f:
                f.write(data)
            return
        with open(path, "wb") as f:
            f.write(data)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


# -- pipes that are not stdin ----------------------------------------------------------------


def test_a_named_fifo_streams(tmp_path, data, model):
    expected = tmp_path / "expected.csv"
    predict_csv(data, expected, model)
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    with deadline(60):
        writer = _feed(str(fifo), data.read_bytes())
        result = CliRunner().invoke(
            infer_main, [str(fifo), "-m", str(model), "-o", f"{tmp_path}/out/"]
        )
        writer.join(10)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "rows.fifo.results.csv").read_bytes() == expected.read_bytes()


def test_process_substitution_streams(tmp_path, data, model):
    """`fcls-infer <(cat in.csv)`: the shell passes /dev/fd/N."""
    expected = tmp_path / "expected.csv"
    predict_csv(data, expected, model)
    script = f'"{sys.executable}" -m fcls.infer.cli.infer <(cat "{data}") -m "{model}" -o out.csv'
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.csv").read_bytes() == expected.read_bytes()


def test_a_pipe_has_progress_without_a_total(tmp_path):
    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    bar = _progress(True, str(fifo), None)
    assert bar.total is None and bar.unit == " rows"
    bar.close()


def test_resume_refuses_a_pipe_with_a_reason(tmp_path, model):
    r, w = os.pipe()
    try:
        result = CliRunner().invoke(
            infer_main, [f"/dev/fd/{r}", "-m", str(model), "-o", "out.csv", "--resume"]
        )
    finally:
        os.close(r)
        os.close(w)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: --resume: /dev/fd/{r} is not a regular file (a pipe or device cannot be read "
        "again at an offset); give a file, or drop --resume"
    )


def test_ray_and_convert_refuse_a_pipe(tmp_path, model):
    from fcls.infer.convert import convert
    from fcls.infer.engine.ray import predict_csv_ray

    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        predict_csv_ray([str(fifo)], tmp_path / "out.csv", model)
    with pytest.raises(ConfigError, match="is not a regular file"):
        convert(fifo, tmp_path / "out.parquet")


# -- one resumable run per destination -------------------------------------------------------

SLOW_RESUME = """
import sys, time
from fcls.infer.engine.predictor import Predictor
run = Predictor._fetch  # one onnxruntime call
Predictor._fetch = lambda self, *a, **k: (time.sleep(0.01), run(self, *a, **k))[1]
from fcls.infer.cli.infer import main
main()
"""


@pytest.fixture
def live_resume(tmp_path, model):
    """A slow `fcls-infer --resume` run in progress on tmp_path/out.csv (killed afterwards)."""
    src = write_eval_csv(tmp_path / "big.csv", pixels(3000, 4))
    out = tmp_path / "out.csv"
    args = [str(src), "-m", str(model), "-o", str(out), "--resume", "--batch-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RESUME, *args], cwd=REPO, stderr=subprocess.PIPE
    )
    try:
        _, journal = resume_paths(out)
        wait_until(journal.exists, 60, "first checkpoint", proc)
        yield proc, src, out
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_second_resume_run_is_refused_with_the_holders_pid(live_resume, model):
    proc, src, out = live_resume
    assert lock_holder(out) == str(proc.pid)
    with deadline(60):
        result = CliRunner().invoke(
            infer_main, [str(src), "-m", str(model), "-o", str(out), "--resume"]
        )
    assert result.exit_code == 1
    assert f"another --resume run (pid {proc.pid}) is writing it" in result.output
    assert proc.poll() is None  # the live run goes on


@pytest.mark.slow
def test_a_run_without_resume_leaves_a_live_runs_files(live_resume, model):
    proc, src, out = live_resume
    temp, journal = resume_paths(out)
    with deadline(60):
        predict_csv(src, out, model)
    assert temp.exists() and journal.exists() and proc.poll() is None
    assert lock_holder(out) == str(proc.pid)


def test_a_lock_is_taken_again_after_its_release(tmp_path):
    dest = tmp_path / "out.csv"
    first = ResumeLock(dest)
    first.acquire()
    assert lock_holder(dest) == str(os.getpid())
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        ResumeLock(dest).acquire()
    first.release()
    assert lock_holder(dest) is None and not first.path.exists()
    second = ResumeLock(dest)
    second.acquire()
    second.release()


# -- a kill inside a commit ------------------------------------------------------------------

KILL_IN_COMMIT = """
import os, sys
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith(".fcls-bak"):
        os._exit(137)  # killed between moving the old file aside and publishing the new one
os.replace = replace
from fcls.infer import predict_csv
predict_csv(sys.argv[1], sys.argv[2], sys.argv[3])
"""


def test_a_backup_left_by_a_kill_in_commit_is_restored_and_said(tmp_path, data, model):
    out = tmp_path / "out.csv"
    out.write_bytes(b"previous results\n")
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_COMMIT, str(data), str(out), str(model)],
        cwd=REPO,
        timeout=120,
    )
    assert killed.returncode == 137
    assert not out.exists() and len(list(tmp_path.glob(f".out.csv.*{BACKUP_SUFFIX}"))) == 1
    bad = tmp_path / "bad.csv"
    bad.write_bytes(data.read_bytes() + b"x,1\n")
    command = [sys.executable, "-m", "fcls.infer.cli.infer", str(bad), "-m", str(model)]
    command += ["-o", str(out)]
    failed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1, failed.stderr  # a failed next run still puts it back
    assert f"fcls-infer: restored {out} from the backup a killed run left" in failed.stderr
    assert out.read_bytes() == b"previous results\n"
    assert not list(tmp_path.glob(f"*{BACKUP_SUFFIX}"))


def test_recover_backups_restores_over_a_half_published_file(tmp_path):
    from helpers import dead_pid

    dest = tmp_path / "r.csv"
    dest.write_text("new, unconfirmed\n")
    backup = tmp_path / f".r.csv.{dead_pid()}.abcd{BACKUP_SUFFIX}"
    backup.write_text("old\n")
    live = tmp_path / f".r.csv.{os.getpid()}.ef01{BACKUP_SUFFIX}"
    live.write_text("a live commit's\n")
    notes = recover_backups(dest)
    assert notes == [f"restored {dest} from the backup a killed run left ({backup.name})"]
    assert dest.read_text() == "old\n" and live.exists() and not backup.exists()


def test_staging_recovers_a_dead_runs_backup(tmp_path):
    from helpers import dead_pid

    dest = tmp_path / "r.csv"
    (tmp_path / f".r.csv.{dead_pid()}.abcd{BACKUP_SUFFIX}").write_text("old\n")
    notes: list[str] = []
    with OutputSet(log=notes.append) as outputs:
        outputs.stage(dest)
    assert dest.read_text() == "old\n" and len(notes) == 1


# -- the line cap bounds memory --------------------------------------------------------------

PEAK = """
import resource, sys
from fcls.infer.cli import {module} as cli
try:
    cli.main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _peak_mib(module: str, *args: str, cwd: Path) -> tuple[int, float, str]:
    done = subprocess.run(
        [sys.executable, "-c", PEAK.format(module=module), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    code, kib = done.stderr.split()[-2:]
    return int(code), int(kib) / 1024, done.stderr


@pytest.mark.slow
def test_a_60_mb_line_is_refused_in_the_memory_of_a_normal_run(tmp_path, data, model):
    import gzip

    header = data.read_bytes().split(b"\n", 1)[0] + b"\n"
    line = b"1" + b",0" * 30_000_000  # 60 MB, no line break
    huge = tmp_path / "huge.csv"
    huge.write_bytes(header + line)
    (tmp_path / "huge.csv.gz").write_bytes(gzip.compress(header + line, 1))
    (tmp_path / "headless.csv").write_bytes(line)
    normal = _peak_mib("infer", str(data), "-m", str(model), "-o", "n.csv", cwd=tmp_path)
    assert normal[0] == 0, normal[2]
    for name in ("huge.csv", "huge.csv.gz", "headless.csv"):
        for module, extra in [("infer", ["-m", str(model), "-o", "x.csv"]), ("convert", ["x.pq"])]:
            code, peak, err = _peak_mib(module, name, *extra, cwd=tmp_path)
            assert code == 1 and "longer than 1048576 bytes" in err, err
            assert peak < normal[1] + 40, (name, module, peak, normal[1])


# -- Ray on a healthy run --------------------------------------------------------------------


@pytest.mark.slow
def test_ray_prints_no_error_or_warning_on_a_healthy_run(tmp_path, data, model):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'fcls[ray]')")
    import re

    command = [sys.executable, "-m", "fcls.infer.cli.infer", str(data), "-m", str(model)]
    command += ["-o", "out.csv", "--engine", "ray"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    noisy = re.compile(r"\b(ERROR|WARNING|Error|Warning)\b|^\[[^]]* [EW] \d+ ")
    assert [line for line in done.stderr.splitlines() if noisy.search(line)] == []
    assert "300 rows in" in done.stderr
