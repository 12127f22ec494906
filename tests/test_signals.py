"""SIGTERM, SIGHUP and SIGINT at seeded random moments of every command: exit 128 + n, no temp
file left, the destination untouched (or, with --resume, resumable to the same bytes)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import handles, temps_under, tiny_model, wait_until, write_train_csv
from helpers import sparse_pixels as pixels
from helpers import write_eval_csv as write_csv

from fcls.infer import predict_csv
from fcls.infer.engine.resume import resume_paths

REPO = Path(__file__).resolve().parents[1]
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
# Slows the model (and the CSV parser, for fcls-convert) so that a signal lands mid-run
SLOW = """
import sys, time
from fcls.infer.engine.predictor import Predictor
from fcls.infer.formats.csvfile import BlockParser
run, parse = Predictor._fetch, BlockParser.parse  # one onnxruntime call, one block's parse
Predictor._fetch = lambda self, *a, **k: (time.sleep(0.004), run(self, *a, **k))[1]
BlockParser.parse = lambda self, *a, **k: (time.sleep(0.3), parse(self, *a, **k))[1]
module, args = sys.argv[1], sys.argv[2:]
sys.argv = [module, *args]
import importlib
importlib.import_module(module).main()
"""
# train and export have no `python -m` entry: run their click commands as the scripts do
LAUNCH = """
import importlib, sys
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
importlib.import_module(module).main()
"""
MODULES = {
    "infer": "fcls.infer.cli.infer",
    "eval": "fcls.infer.cli.eval",
    "convert": "fcls.infer.cli.convert",
    "train": "fcls.train.cli",
    "export": "fcls.export.cli",
}


def stop(command: list[str], signum: int, seed: int, window: float, cwd: Path) -> tuple[int, str]:
    """Run `command`, send `signum` a seeded random time (within `window` s) after its stop
    handlers are installed; returns the exit status and stderr."""
    proc = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: handles(proc.pid, signal.SIGTERM), 120, "stop handler", proc)
        time.sleep(random.Random(seed).uniform(0, window))
        sent = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - sent < 30, "the command took long to stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def slow(cli: str, *args: str) -> list[str]:
    return [sys.executable, "-c", SLOW, MODULES[cli], *args]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("signals")
    labels = pixels(1200, 5)[:, 0] % 10
    return {
        "model": tiny_model(d / "tiny.onnx"),
        "csv": write_csv(d / "in.csv", pixels(1200, 4)),
        "labelled": write_train_csv(d / "lab.csv", pixels(1200, 5), labels),
    }


def _check(rc: int, err: str, signum: int, work: Path, before: dict[Path, bytes]) -> None:
    assert rc == 128 + signum, err
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    assert what in err and "Traceback" not in err, err
    assert temps_under(work) == []
    after = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    assert after == before  # the destination untouched, nothing new


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("cli", ["infer", "eval", "convert"])
def test_torch_free_commands_stop_cleanly(tmp_path, files, cli, signum):
    work = tmp_path / "work"
    work.mkdir()
    (work / "out.csv").write_text("old results\n")
    args = {
        "infer": [
            str(files["csv"]),
            "-m",
            str(files["model"]),
            "-o",
            "out.csv",
            "--batch-size",
            "1",
        ],
        "eval": [str(files["labelled"]), "-m", str(files["model"]), "-o", "report/"],
        "convert": [str(files["csv"]), "out.parquet"],
    }[cli]
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    rc, err = stop(slow(cli, *args), signum, seed=signum, window=0.5, cwd=work)
    _check(rc, err, signum, work, before)


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_infer_resume_after_a_signal_gives_the_same_bytes(tmp_path, files, signum):
    expected = tmp_path / "expected.csv"
    predict_csv(files["csv"], expected, files["model"], proba=True)
    out = tmp_path / "out.csv"
    args = [str(files["csv"]), "-m", str(files["model"]), "-o", str(out), "--proba", "--resume"]
    temp, journal = resume_paths(out)
    proc = subprocess.Popen(slow("infer", *args, "--batch-size", "1"), stderr=subprocess.PIPE)
    try:  # past a first checkpoint (the run checkpoints within its first seconds)
        wait_until(journal.exists, 120, "checkpoint", proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    assert not out.exists() and temp.exists() and temps_under(tmp_path) == []
    command = [sys.executable, "-m", MODULES["infer"], *args]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert out.read_bytes() == expected.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("cli", ["train", "export"])
def test_torch_commands_stop_cleanly(tmp_path, trained, cli, signum):
    work = tmp_path / "work"
    work.mkdir()
    if cli == "train":
        args = ["-o", "run", "--max-epochs", "2", "--limit", "600", "--device", "cpu"]
    else:
        (work / "model.onnx").write_bytes(b"old model")
        args = [str(trained / "model.pt"), "-o", "model.onnx"]
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    command = [sys.executable, "-c", LAUNCH, MODULES[cli], *args]
    rc, err = stop(command, signum, seed=signum, window=2.0, cwd=work)
    assert rc == 128 + signum, err
    assert "Traceback" not in err and temps_under(work) == []
    if cli == "export":
        assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before
    else:  # a run directory may have been made; no model appears
        assert not (work / "run" / "model.pt").exists()
