"""bench/gpu_check.sh: the dry run (every step of the GPU check, tiny, on CPU) keeps it working."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest
from helpers import inject

from fcls.bench.gpu_check import REPORT, _history, _write, training_figures
from fcls.infer.common.errors import OutputError

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def _check(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_dry_run_writes_the_whole_report(tmp_path: Path):
    out = tmp_path / "out"
    proc = _check(out, "--dry-run", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["status"] == "passed"
    env = report["environment"]
    assert env["torch"] and "CPUExecutionProvider" in env["onnxruntime_providers"]
    training = report["training"]
    assert training["epochs_per_stage"] == {"adam": 1, "sgd_wd": 1, "sgd": 1}
    assert training["train_images_per_epoch"] == 4 * training["split"]["train"]
    # the figures are the history's (copied beside the report), recomputed here
    history = _history(out / "history.csv")
    assert len(history) == 3 and all(row["seconds"] > 0 for row in history)
    figures = training_figures(history, training["train_images_per_epoch"])
    assert {k: training[k] for k in figures} == figures
    run = tmp_path / "out-work" / "run"
    assert (
        training["test_accuracy"] == json.loads((run / "report.json").read_text())["test_accuracy"]
    )
    assert report["export"]["parity_fp32_cpu"]["passed"] is True
    assert report["scoring"]["rows"] == training["split"]["test"]
    assert report["scoring"]["provider"] == "cpu"
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "history.csv").read_bytes() == (run / "history.csv").read_bytes()
    assert "gpu_check: passed" in (out / "gpu_check.log").read_text()


def test_dry_run_of_the_fast_recipe(tmp_path: Path):
    out = tmp_path / "out"
    proc = _check(out, "--dry-run", "--recipe", "fast", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert (report["status"], report["recipe"]) == ("passed", "fast")
    assert report["train_config"]["recipe"]["name"] == "fast"
    training = report["training"]
    assert training["epochs_per_stage"] == {"onecycle": 1}
    assert training["train_images_per_epoch"] == training["split"]["train"]  # one copy per row
    history = _history(out / "history.csv")
    figures = training_figures(history, training["train_images_per_epoch"])
    assert {k: training[k] for k in figures} == figures


def test_unknown_recipe_is_refused(tmp_path: Path):
    proc = _check(tmp_path / "out", "--dry-run", "--recipe", "slow", timeout=60)
    assert proc.returncode == 2 and "--recipe must be notebook, fast or both" in proc.stderr


def test_real_check_without_data_says_how_to_get_it(tmp_path: Path):
    proc = _check(tmp_path / "out", "--data", str(tmp_path / "none"), timeout=120)
    assert proc.returncode == 2
    assert "lacks train.csv.gz, evaluate.csv.gz" in proc.stdout
    assert "cp ../shared/data/fashion/*.csv.gz" in proc.stdout


def test_budget_ends_the_check_with_a_partial_report(tmp_path: Path):
    out = tmp_path / "out"
    proc = _check(out, "--dry-run", "--budget", "6", timeout=120)
    assert proc.returncode == 124, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["status"].startswith("timed out: stopped by signal 15")


def test_training_figures():
    rows = [
        {"stage": "adam", "seconds": 2.0, "val_accuracy": 0.5},
        {"stage": "adam", "seconds": 1.0, "val_accuracy": 0.7},
        {"stage": "sgd", "seconds": 3.0, "val_accuracy": 0.6},
    ]
    figures = training_figures(rows, images_per_epoch=600)
    assert figures["epochs_per_stage"] == {"adam": 2, "sgd": 1}
    assert figures["seconds_per_epoch_mean"] == 2.0 and figures["seconds_per_epoch_min"] == 1.0
    assert figures["train_img_per_s"] == 300.0 and figures["best_val_accuracy"] == 0.7
    assert training_figures([], 0)["train_img_per_s"] is None


def test_report_is_written_atomically(tmp_path: Path, monkeypatch):
    """A failed write leaves the previous report whole and no temp file (fcls's atomic write)."""
    _write(tmp_path, {"status": "training"})
    assert json.loads((tmp_path / REPORT).read_text()) == {"status": "training"}
    calls = inject(monkeypatch, "replace", errno.ENOSPC)
    with pytest.raises(OutputError, match=REPORT):
        _write(tmp_path, {"status": "exporting"})
    assert calls["n"] == 1
    assert json.loads((tmp_path / REPORT).read_text()) == {"status": "training"}
    assert [p.name for p in tmp_path.iterdir()] == [REPORT]
