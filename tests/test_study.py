"""fcls-study: the notebook's comparison of networks as one resumable command."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import deadline, wait_until

from fcls.infer.common.errors import ConfigError, OutputError
from fcls.train.study import (
    RESULT_FILE,
    SERIES,
    StudyConfig,
    StudyRun,
    plan_runs,
    run_study,
)
from fcls.train.study_cli import main as study_main

PNG = b"\x89PNG\r\n\x1a\n"
FAST = ["--limit", "400", "--max-epochs", "1", "-q"]


def study(*args: str):
    return CliRunner().invoke(study_main, list(args))


def test_plan_default_is_the_notebooks_two_series():
    runs = plan_runs()
    assert len(runs) == 14
    assert [r.label for r in runs[:7]] == [
        "BaseNetwork",
        "WideNetwork",
        "DeepNetwork",
        "BaseNetwork + SGD",
        "BaseNetwork + L2 (1e-2)",
        "BatchNormNetwork",
        "DropoutNetwork",
    ]
    assert [r.series for r in runs] == ["dense"] * 7 + ["cnn"] * 7
    assert len({r.slug for r in runs}) == 14


def test_plan_of_networks_and_optimizers():
    runs = plan_runs(archs=["cnn", "basenetwork"], optimizers=["adam", "sgd"])
    assert [(r.arch, r.optimizer) for r in runs] == [
        ("CNN", "adam"),
        ("CNN", "sgd"),
        ("BaseNetwork", "adam"),
        ("BaseNetwork", "sgd"),
    ]
    assert [r.slug for r in runs] == ["cnn", "cnn-sgd", "basenetwork", "basenetwork-sgd"]
    # a run the series already holds is trained once, where the series has it
    both = plan_runs(series=["cnn"], archs=["CNN"], optimizers=["sgd"])
    assert len(both) == len(SERIES["cnn"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizers": ["rmsprop"]}, "--optimizers: unknown optimizer 'rmsprop'"),
        ({"series": ["resnets"]}, "--series: unknown series 'resnets'"),
        ({"archs": ["NoSuchNet"]}, "unknown network 'NoSuchNet'"),
    ],
)
def test_plan_refuses_unknown_names(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan_runs(**kwargs)


@pytest.mark.parametrize(
    "args",
    [
        ["--optimizers", "adam,rmsprop"],
        ["--series", "resnets"],
        ["--arch", "NoSuchNet"],
        ["--arch", "CNN", "--image-size", "32by32"],
        ["--arch", "CNN", "--max-epochs", "0"],
    ],
)
def test_bad_options_are_one_usage_line(tmp_path, args):
    result = study(*args, "-o", str(tmp_path / "s"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_missing_data_file_is_one_line(tmp_path):
    out = tmp_path / "s"
    result = study("--arch", "CNN", "--data", str(tmp_path / "nope.csv"), "-o", str(out), "-q")
    assert result.exit_code == 1
    assert "nope.csv: no such file" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_a_study_without_runs_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least one run"):
        run_study(StudyConfig(runs=(), out=tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_an_unreadable_run_record_is_one_line(tmp_path):
    config = StudyConfig(
        runs=(StudyRun("BaseNetwork", "adam"),), out=tmp_path, limit=300, max_epochs=1
    )
    run_study(config, log=lambda _: None)
    record = tmp_path / "runs" / "basenetwork" / RESULT_FILE
    record.write_text('{"identity": ')  # cut short, as a full disk would leave it
    with pytest.raises(OutputError, match=r"result\.json: unreadable run record .*--restart"):
        run_study(config, log=lambda _: None)
    again = run_study(StudyConfig(**{**vars(config), "restart": True}), log=lambda _: None)
    assert again.trained == 1 and json.loads(record.read_text())["history"]


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "study.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_two_networks_one_epoch_write_table_and_pictures(tmp_path):
    out = tmp_path / "study"
    result = study("--arch", "BaseNetwork,CNN", *FAST, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["trained"] == 2 and [r["run"] for r in summary["runs"]] == ["BaseNetwork", "CNN"]
    rows = _rows(out)
    assert [r["network"] for r in rows] == ["BaseNetwork", "CNN"]
    for row, report in zip(rows, ("basenetwork", "cnn")):
        saved = json.loads((out / "runs" / report / "report.json").read_text())
        assert float(row["test_accuracy"]) == pytest.approx(saved["test_accuracy"], abs=1e-4)
        assert row["epochs"] == "1" and row["optimizer"] == "Adam"
        assert float(row["seconds"]) > 0 and float(row["images_per_second"]) > 0
        assert (out / "runs" / report / "model.pt").is_file()  # an fcls-train run to export
    assert rows[0]["parameters"] == "624778" and rows[1]["multiply_adds"] == "3522304"
    md = (out / "study.md").read_text()
    assert "| BaseNetwork | Adam | 624,778 | 0.62 | 1 | epoch limit |" in md
    assert "Hardware: cpu" in md
    for png in ("val_loss.png", "best_val_accuracy.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


def test_interrupted_study_keeps_finished_runs(tmp_path):
    config = StudyConfig(
        runs=(StudyRun("BaseNetwork", "adam"), StudyRun("BaseNetwork", "sgd")),
        out=tmp_path,
        limit=300,
        max_epochs=1,
        progress=False,
    )

    def stop_at_second_run(line: str) -> None:
        if line.startswith("run 2/2") and "training" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(config, log=stop_at_second_run)
    first = tmp_path / "runs" / "basenetwork" / RESULT_FILE
    assert first.is_file() and not (tmp_path / "runs" / "basenetwork-sgd").exists()
    assert [r["run"] for r in _rows(tmp_path)] == ["BaseNetwork"]  # progress so far
    kept = first.stat().st_mtime_ns
    lines: list[str] = []
    again = run_study(config, log=lines.append)
    assert again.trained == 1 and [r.run for r in again.results] == [
        "BaseNetwork",
        "BaseNetwork + SGD",
    ]
    assert "run 1/2 BaseNetwork: done before, kept" in lines
    assert first.stat().st_mtime_ns == kept
    # other settings in the same folder are refused, not mixed into one table
    with pytest.raises(ConfigError, match="holds a run of other settings"):
        run_study(StudyConfig(**{**vars(config), "max_epochs": 2}), log=lines.append)


@pytest.mark.slow
def test_killed_study_resumes_where_it_stopped(tmp_path):
    """SIGKILL in the second run's training: a new study keeps the first run, resumes the
    second from its last saved epoch and ends with both in the table."""
    out = tmp_path / "s"
    args = [sys.executable, "-m", "fcls.train.study_cli", "--arch", "BaseNetwork,DeepCNN"]
    args += ["--limit", "600", "--max-epochs", "4", "--patience", "9", "-o", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    second = out / "runs" / "deepcnn" / "state.pt"  # saved after each epoch
    with deadline(240):
        proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        try:
            wait_until(second.is_file, 180, "the second run's first epoch", proc)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert not (out / "runs" / "deepcnn" / RESULT_FILE).exists()
        again = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["trained"] == 1 and len(summary["runs"]) == 2
    assert "run 1/2 BaseNetwork: done before, kept" in again.stderr
    assert "deepcnn: resuming after stage adam epoch" in again.stderr
    assert [(r["epochs"], r["stopped_by"]) for r in _rows(out)][1] == ("4", "epoch limit")


@pytest.mark.parametrize(
    ("accuracies", "stopped_by"),
    [
        ([0.5, 0.6, 0.55, 0.54, 0.53], "early stopping"),  # 3 epochs without a better one
        ([0.5, 0.6, 0.6, 0.6, 0.6], "early stopping"),  # equal is not better
        ([0.5, 0.6, 0.55, 0.61], "epoch limit"),
        ([0.5], "epoch limit"),
    ],
)
def test_why_a_run_stopped(accuracies, stopped_by):
    from fcls.train.study import _result_of

    history = [{"val_accuracy": a, "val_loss": 1.0, "seconds": 2.0} for a in accuracies]
    record = {
        "history": history,
        "train_images": 100,
        "parameters": 1,
        "multiply_adds": 1,
        "test_accuracy": 0.5,
        "hardware": "cpu: x (2 CPUs)",
    }
    result = _result_of(StudyRun("CNN", "sgd"), record, patience=3)
    assert result.stopped_by == stopped_by and result.epochs == len(accuracies)
    assert result.images_per_second == pytest.approx(50.0)
    assert result.run == "CNN + SGD" and result.best_val_accuracy == max(accuracies)


def test_cpu_features_by_their_user_names(tmp_path):
    from fcls.infer.common.system import cpu_features

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_features(info) == ["AVX2", "AVX-512", "AVX512-BF16", "AMX"]
    info.write_text("processor\t: 0\nflags\t\t: fpu sse sse2\n")
    assert cpu_features(info) == []
    assert cpu_features(tmp_path / "absent") == []
