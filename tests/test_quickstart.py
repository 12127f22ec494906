"""fcls.bench.quickstart: the README's first command, after its set-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fcls.bench import quickstart


def test_a_step_reports_its_time_and_its_own_peak_memory():
    # from a small process, as the quickstart runs: a child's peak starts at its parent's
    # size (Linux keeps the high-water mark across exec), and this test process is large
    grow = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"
    code = (
        "import sys; from fcls.bench.quickstart import run_step\n"
        f"s = run_step('grow', [sys.executable, '-c', {grow!r}])\n"
        "print(s.name, s.seconds, s.peak_rss)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    name, seconds, peak = done.stdout.split()
    assert name == "grow" and float(seconds) > 0, done.stderr
    assert 200 << 20 < int(peak) < 300 << 20  # the child's 200 MB, not a larger parent's


def test_a_failing_step_ends_the_chain_with_its_exit_code(tmp_path: Path, monkeypatch):
    failing = [("train", [sys.executable, "-c", "import sys; sys.exit(3)"])]
    monkeypatch.setattr(quickstart, "commands", lambda out: failing)
    assert quickstart.main([str(tmp_path / "q")]) == 3


@pytest.mark.slow
def test_the_chain_runs_and_says_where_everything_is(tmp_path: Path, monkeypatch, capsys):
    # the chain as the README's first command runs it, on fewer rows and epochs
    monkeypatch.setattr(quickstart, "TRAIN_ARGS", (*quickstart.TRAIN_ARGS, "--limit", "300"))
    monkeypatch.setattr(quickstart, "TRAIN_ARGS", (*quickstart.TRAIN_ARGS, "--max-epochs", "2"))
    out = tmp_path / "q"
    assert quickstart.main([str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    table = printed[printed.index(next(x for x in printed if x.startswith("step "))) :]
    assert [line.split()[0] for line in table[1:6]] == ["train", "export", "infer", "eval", "total"]
    accuracy = json.loads((out / "eval.json").read_text())["models"][0]["accuracy"]
    assert f"held-out test images: {accuracy:.4f}" in printed[-3]
    assert (out / "results.csv").read_text().startswith("ID,label\n")
    assert str(out / "results.csv") in printed[-2]
