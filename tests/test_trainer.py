"""fcls.train.trainer and the fcls-train CLI: artefacts, resume, and bad input."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import notebook_port as nb
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import USER_NET, untimed_history

from fcls.infer.common import spec as fcls_spec
from fcls.infer.common.errors import CheckpointError, ConfigError
from fcls.infer.formats.sources import read_train
from fcls.train import trainer
from fcls.train.checkpoint import FORMAT, Checkpoint
from fcls.train.cli import main
from fcls.train.config import DEFAULT_STAGES, FAST, NOTEBOOK, Recipe, TrainConfig
from fcls.train.registry import list_models
from fcls.train.trainer import OUTPUTS, train

pytestmark = pytest.mark.slow
NETWORKS = list_models()
N_PIXELS = fcls_spec.DEFAULT_SPEC.n_pixels  # the digits' 32x32 grayscale rows


def test_every_artefact_is_written(trained: Path, digits_csv: Path):
    for name in OUTPUTS:
        head = (trained / name).read_bytes()[:8]
        if name.endswith(".png"):
            assert head == b"\x89PNG\r\n\x1a\n", name
        else:
            assert head, name  # not empty
    ckpt = torch.load(trained / "model.pt", weights_only=True)
    assert set(ckpt) == {
        "format",
        "architecture",
        "image_spec",
        "model",
        "input",
        "config",
        "data",
        "split",
        "metrics",
        "epochs",
        "precision",
        "fcls_version",
    }
    assert ckpt["format"] == FORMAT and ckpt["architecture"] == "FinalCNNet"
    assert ckpt["image_spec"] == {
        "height": 32,
        "width": 32,
        "channels": 1,
        "pixel_order": "HWC",
        "class_names": list("0123456789"),  # integer labels, no --class-names: their numbers
    }
    assert ckpt["input"]["dtype"] == "uint8" and ckpt["input"]["shape"] == [N_PIXELS]
    assert ckpt["data"]["size"] == digits_csv.stat().st_size
    assert ckpt["data"]["sha256"] == hashlib.sha256(digits_csv.read_bytes()).hexdigest()
    assert ckpt["split"] == {"train": 240, "val": 80, "test": 80}
    assert [s["name"] for s in ckpt["config"]["stages"]] == ["adam", "sgd_wd", "sgd"]
    with (trained / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["adam", "sgd_wd", "sgd"]
    assert list(rows[0]) == [
        "stage",
        "epoch",
        "train_accuracy",
        "train_loss",
        "val_accuracy",
        "val_loss",
        "seconds",
        "precision",
    ]
    report = json.loads((trained / "report.json").read_text())
    assert report["split"]["test"] == 80
    assert len(report["confusion_matrix"]) == 10 and len(report["per_class"]) == 10
    assert sum(map(sum, report["confusion_matrix"])) == 80
    assert report["test_accuracy"] == ckpt["metrics"]["test_accuracy"]


def test_test_csv_holds_the_held_out_split(trained: Path, digits_csv: Path):
    from fcls.infer.formats.csvfile import CsvReader

    chunks = list(CsvReader(trained / "test.csv"))
    pixels = np.concatenate([c.pixels for c in chunks])
    *_, x_test, _, _, _ = nb.notebook_split(*read_train(digits_csv))
    assert pixels.tobytes() == x_test.tobytes()
    assert chunks[0].ids.to_pylist()[:3] == ["0", "1", "2"]


def test_test_accuracy_equals_independent_notebook_port(trained: Path, digits_csv: Path):
    ckpt = torch.load(trained / "model.pt", weights_only=True)
    model = nb.load(ckpt["model"])  # the notebook's own class, strict load
    pixels, labels = read_train(digits_csv)
    *_, x_test, _, _, y_test = nb.notebook_split(pixels, labels)
    acc = float((nb.predict_logits(model, x_test).argmax(1) == y_test).mean())
    assert acc == pytest.approx(ckpt["metrics"]["test_accuracy"], abs=1e-12)


def test_report_metrics_equal_sklearn_on_the_port(trained: Path, digits_csv: Path):
    """report.json's per-class figures, from the shared metrics module, are scikit-learn's."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    report = json.loads((trained / "report.json").read_text())
    model = nb.load(torch.load(trained / "model.pt", weights_only=True)["model"])
    *_, x_test, _, _, y_test = nb.notebook_split(*read_train(digits_csv))
    logits = nb.predict_logits(model, x_test)
    y_pred = logits.argmax(1)
    labels = np.arange(10)
    p, r, f1, support = precision_recall_fscore_support(
        y_test, y_pred, labels=labels, zero_division=0
    )
    got = list(report["per_class"].values())
    np.testing.assert_allclose([c["precision"] for c in got], p, atol=1e-12)
    np.testing.assert_allclose([c["recall"] for c in got], r, atol=1e-12)
    np.testing.assert_allclose([c["f1"] for c in got], f1, atol=1e-12)
    assert [c["support"] for c in got] == support.tolist()
    assert report["confusion_matrix"] == confusion_matrix(y_test, y_pred, labels=labels).tolist()


def test_classification_metrics_are_bit_identical_to_sklearn():
    """train/report switched from scikit-learn to fcls.infer.common.metrics: same floats."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    from fcls.train.report import classification_metrics

    names = tuple("abcdefghij")
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 300))
        y_true = rng.integers(0, 10, n)
        proba = rng.random((n, 10))
        if seed % 3 == 0:  # a class absent from the data, one never predicted
            y_true[y_true == 3] = 4
            proba[:, 7] = 0.0
        y_pred = proba.argmax(1)
        got = classification_metrics(y_true, proba, names)
        p, r, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=np.arange(10), zero_division=0
        )
        want = {
            name: {"precision": p[i], "recall": r[i], "f1": f1[i], "support": support[i]}
            for i, name in enumerate(names)
        }
        assert {k: {m: v[m] for m in want[k]} for k, v in got["per_class"].items()} == want
        assert got["accuracy"] == accuracy_score(y_true, y_pred)
        assert (
            got["confusion_matrix"]
            == confusion_matrix(y_true, y_pred, labels=np.arange(10)).tolist()
        )


def test_test_labelled_csv_is_the_test_split_with_its_labels(trained: Path, digits_csv: Path):
    pixels, labels = read_train(trained / "test_labelled.csv")
    *_, x_test, _, _, y_test = nb.notebook_split(*read_train(digits_csv))
    assert pixels.tobytes() == x_test.tobytes() and labels.tolist() == y_test.tolist()


def _run_at(stage: int, epoch: int, finished: bool = False) -> trainer._Run:
    run = trainer._Run({})
    run.stage_index, run.epoch, run.finished = stage, epoch, finished
    return run


def test_epochs_left_counts_this_stage_and_every_later_one():
    notebook = TrainConfig(max_epochs=10)  # three stages of at most 10
    assert trainer.epochs_left(notebook, _run_at(0, 1)) == 9 + 10 + 10
    assert trainer.epochs_left(notebook, _run_at(2, 10)) == 0
    assert trainer.epochs_left(notebook, _run_at(2, 3, finished=True)) == 0
    fast = TrainConfig(recipe=FAST)  # one stage: the schedule's length caps --max-epochs
    assert trainer.epochs_left(fast, _run_at(0, 1)) == FAST.epochs - 1
    assert trainer.epochs_left(dataclasses.replace(fast, max_epochs=5), _run_at(0, 1)) == 4


def test_pace_line_bounds_the_rest_of_the_run():
    pace = trainer._Pace(epochs=1, seconds=12.0)
    line = trainer.pace_line(TrainConfig(), _run_at(0, 1), pace)  # notebook: 3 x 200 epochs
    assert line.startswith("pace: 12.0 s an epoch; at most 599 more epoch(s), 2.0 h")
    assert "early stopping (patience 4) usually ends each stage sooner" in line
    assert f"--recipe fast trains at most {FAST.epochs} epochs" in line  # over an hour left
    short = trainer.pace_line(TrainConfig(recipe=FAST, max_epochs=3), _run_at(0, 1), pace)
    assert short == (
        "pace: 12.0 s an epoch; at most 2 more epoch(s), 24 s; early stopping (patience 8) "
        "usually ends it sooner"
    )
    done = trainer.pace_line(TrainConfig(max_epochs=1), _run_at(2, 1, finished=True), pace)
    assert done == "pace: 12.0 s an epoch; at most 0 more epoch(s), 0 s"


@pytest.mark.parametrize(
    ("seconds", "said"), [(0, "0 s"), (89.4, "89 s"), (90, "1.5 min"), (5399, "90.0 min"),
                          (5400, "1.5 h"), (36000, "10.0 h")],
)  # fmt: skip
def test_duration_reads_as_a_wait(seconds: float, said: str):
    assert trainer.duration(seconds) == said


def test_a_run_says_its_pace_after_its_first_epoch(digits_csv: Path, tmp_path: Path):
    lines: list[str] = []
    config = TrainConfig(out=tmp_path / "r", data=digits_csv, limit=200, max_epochs=2)
    train(config, log=lines.append)
    epochs = [i for i, line in enumerate(lines) if line.startswith("stage ")]
    paces = [line for line in lines if line.startswith("pace: ")]
    assert len(epochs) == 6 and len(paces) == 1  # once, right after the first epoch
    assert lines[epochs[0] + 1] == paces[0] and "at most 5 more epoch(s)" in paces[0]


def test_rerun_finished_run_says_so_and_matches(trained: Path, digits_csv: Path, tmp_path: Path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)  # never rewrite the session fixture's model.pt
    before = Checkpoint.load(out / "model.pt")
    lines: list[str] = []
    result = train(TrainConfig(out=out, data=digits_csv, max_epochs=1), log=lines.append)
    assert result.resumed_from == "finished run"
    assert any("already finished" in line for line in lines)
    assert not any(line.startswith("stage ") for line in lines)  # nothing retrained
    after = Checkpoint.load(out / "model.pt")
    assert result.test_accuracy == before.test_accuracy == after.test_accuracy
    for k, v in before.weights.items():
        torch.testing.assert_close(after.weights[k], v, rtol=0, atol=0)


def test_resume_identifies_data_by_content(trained: Path, digits_csv: Path, tmp_path: Path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    moved = tmp_path / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    shutil.copy(digits_csv, moved)  # same bytes, another path
    result = train(TrainConfig(out=out, data=moved, max_epochs=1), log=lambda s: None)
    assert result.resumed_from == "finished run"
    other = tmp_path / "other.csv"
    other.write_bytes(digits_csv.read_bytes().replace(b"\n0,", b"\n1,", 1))
    with pytest.raises(ConfigError, match="data_sha256"):
        train(TrainConfig(out=out, data=other, max_epochs=1), log=lambda s: None)


def test_checkpoint_versions(trained: Path, tmp_path: Path):
    saved = torch.load(trained / "model.pt", weights_only=True)
    # fcls 0.1's model.pt: no format, architecture or image spec; class names at the top
    legacy = {k: v for k, v in saved.items() if k not in ("format", "image_spec")}
    legacy["stages"], legacy["seed"] = ["adam", "sgd_wd", "sgd"], 42
    legacy["class_names"] = [f"c{i}" for i in range(10)]
    torch.save(legacy, tmp_path / "v1.pt")
    torch.save(saved["model"], tmp_path / "bare.pt")  # the notebook's torch.save(state_dict)
    v1, bare = Checkpoint.load(tmp_path / "v1.pt"), Checkpoint.load(tmp_path / "bare.pt")
    assert (v1.format, bare.format) == (1, 0)
    assert v1.test_accuracy == saved["metrics"]["test_accuracy"] and bare.test_accuracy is None
    assert v1.class_names == tuple(f"c{i}" for i in range(10))  # recorded names are kept
    assert bare.class_names == tuple("0123456789")  # none recorded: numbers, no dataset assumed
    for old in (v1, bare):
        assert old.architecture == "FinalCNNet" and old.spec.size == "32x32"
        assert old.model.fc5.out_features == 10
    torch.save({**saved, "format": FORMAT + 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=rf"format {FORMAT + 1} is unknown.*upgrade fcls"):
        Checkpoint.load(tmp_path / "future.pt")
    original = Checkpoint.load(trained / "model.pt")
    round_trip = Checkpoint.load(original.save(tmp_path / "rt.pt")).to_dict()
    expected = original.to_dict()
    for k, v in expected.pop("model").items():
        torch.testing.assert_close(round_trip["model"].pop(k), v, rtol=0, atol=0)
    assert round_trip.pop("model") == {} and round_trip == expected


def test_rerun_with_other_config_is_refused(trained: Path, digits_csv: Path):
    with pytest.raises(ConfigError, match=r"seed 42 -> 7.*--restart"):
        train(TrainConfig(out=trained, data=digits_csv, max_epochs=1, seed=7), log=lambda s: None)


def test_out_holding_a_foreign_or_corrupt_run_is_refused(tmp_path: Path, digits_csv: Path):
    config = TrainConfig(out=tmp_path, data=digits_csv, max_epochs=1)
    (tmp_path / "model.pt").write_bytes(b"someone else's model")
    with pytest.raises(ConfigError, match=r"without state\.pt"):
        train(config, log=lambda s: None)
    (tmp_path / "state.pt").write_bytes(b"\x00 not a torch file")
    with pytest.raises(CheckpointError, match="corrupt state file"):
        train(config, log=lambda s: None)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    ("recipe", "cut_at", "resumed_from"),
    [
        (NOTEBOOK, 3, "stage adam epoch 2"),  # on the boundary: the next stage starts afresh
        (NOTEBOOK, 2, "stage adam epoch 1"),  # mid-stage: Adam's moments must be restored
        # mid-schedule: momentum, the EMA, its update count and the augmentation draws
        (FAST, 2, "stage onecycle epoch 1"),
    ],
)
def test_interrupted_run_resumes_to_the_same_model(
    tmp_path: Path, digits_csv: Path, recipe: Recipe, cut_at: int, resumed_from: str
):
    max_epochs = 2 if cut_at == 3 else 3
    config = TrainConfig(
        out=tmp_path / "full", data=digits_csv, max_epochs=max_epochs, limit=200, recipe=recipe
    )
    train(config, log=lambda s: None)

    seen: list[str] = []

    def stop_at_epoch(line: str) -> None:
        seen.append(line)
        if sum(s.startswith("stage ") for s in seen) == cut_at:
            raise _Interrupt  # before this epoch's state is saved

    cut = dataclasses.replace(config, out=tmp_path / "cut")
    with pytest.raises(_Interrupt):
        train(cut, log=stop_at_epoch)
    lines: list[str] = []
    result = train(cut, log=lines.append)
    assert result.resumed_from == resumed_from  # the interrupted epoch was never saved
    assert lines[0].startswith("precision: ") and "resuming after" in lines[1]
    # same losses and accuracies, only the timings differ
    assert untimed_history(tmp_path / "full") == untimed_history(tmp_path / "cut")
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_restart_starts_over(tmp_path: Path, digits_csv: Path):
    runner = CliRunner()
    args = [
        "--data",
        str(digits_csv),
        "--out",
        str(tmp_path),
        "--max-epochs",
        "1",
        "--limit",
        "200",
    ]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "test accuracy" in first.stdout and "epochs 1+1+1" in first.stdout
    again = runner.invoke(main, [*args, "--seed", "3"])
    assert again.exit_code != 0 and "different run" in again.output
    restarted = runner.invoke(main, [*args, "--seed", "3", "--restart"])
    assert restarted.exit_code == 0, restarted.output
    assert "resuming" not in restarted.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/missing.csv"], "missing.csv: no such file"),
        (["--data", "{bad}"], "bad.csv:3 column pix5: pixel 300 is out of range 0..255"),
        (["--out", "{file}/sub"], "not writable"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str):
    zeros = ["0"] * (N_PIXELS + 1)
    bad = list(zeros)
    bad[4] = "300"
    bad_csv = tmp_path / "bad.csv"
    header = ",".join([*(f"pix{i}" for i in range(1, N_PIXELS + 1)), "label"])
    bad_csv.write_text(header + "\n" + ",".join(zeros) + "\n" + ",".join(bad) + "\n")
    afile = tmp_path / "afile"
    afile.write_text("")
    args = [a.format(tmp=tmp_path, bad=bad_csv, file=afile) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(tmp_path: Path):
    result = CliRunner().invoke(main, ["--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "CUDA is not available" in result.output


def test_digits_default_trains(tmp_path: Path):
    result = CliRunner().invoke(
        main, ["--out", str(tmp_path), "--max-epochs", "1", "--limit", "200"]
    )
    assert result.exit_code == 0, result.output
    assert "scikit-learn's bundled digits" in result.output
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["image_spec"]["class_names"] == list("0123456789")


def test_too_few_rows_per_class_is_refused(tmp_path: Path):
    from helpers import write_train_csv

    from fcls.infer.common.errors import DataError

    rng = np.random.default_rng(0)
    tiny = write_train_csv(tmp_path / "tiny.csv", rng.integers(0, 256, (3, N_PIXELS)), np.arange(3))
    with pytest.raises(DataError, match=r"tiny\.csv: too few rows: .* without class \d \(1 rows\)"):
        train(TrainConfig(out=tmp_path / "a", data=tiny, max_epochs=1), log=lambda s: None)
    result = CliRunner().invoke(main, ["--data", str(tiny), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "at least 50 rows" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "b" / "model.pt").exists()


def test_thin_classes_are_warned_about(tmp_path: Path):
    from helpers import write_train_csv

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2  # two classes of 20 rows: about 4 test rows each
    path = write_train_csv(tmp_path / "thin.csv", rng.integers(0, 256, (40, N_PIXELS)), labels)
    lines: list[str] = []
    config = TrainConfig(
        out=tmp_path / "run", data=path, max_epochs=1, recipe=Recipe("adam", DEFAULT_STAGES[:1])
    )
    train(config, log=lines.append)
    assert any(s.startswith("warning: 2 classes have fewer than 10 test rows") for s in lines)


def test_fast_recipe_saves_the_moving_average_and_records_itself(
    tmp_path: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
):
    """model.pt (what fcls-export reads) holds the EMA weights, not the trained ones."""
    snapshots: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
    real_epoch = trainer.train_epoch

    def recording_epoch(model, optimizer, x, y, plan, ema, *rest):
        result = real_epoch(model, optimizer, x, y, plan, ema, *rest)
        assert ema is not None
        copy = {k: v.clone() for k, v in model.state_dict().items()}
        snapshots.append((copy, {k: v.clone() for k, v in ema.model.state_dict().items()}))
        return result

    monkeypatch.setattr(trainer, "train_epoch", recording_epoch)
    config = TrainConfig(out=tmp_path, data=digits_csv, max_epochs=1, recipe=FAST, limit=200)
    result = train(config, log=lambda s: None)
    ((raw, averaged),) = snapshots
    saved = Checkpoint.load(tmp_path / "model.pt")
    for k, v in averaged.items():
        torch.testing.assert_close(saved.weights[k], v, rtol=0, atol=0, msg=k)
    assert not torch.equal(saved.weights["fc5.weight"], raw["fc5.weight"])
    assert saved.config is not None and Recipe.of_run(saved.config) == FAST
    report = json.loads((tmp_path / "report.json").read_text())
    assert Recipe.from_dict(report["recipe"]) == FAST
    assert report["test_accuracy"] == result.test_accuracy
    assert result.epochs == {"onecycle": 1}


@pytest.mark.parametrize(
    ("recipe", "scripted", "expected"),
    [
        # the notebook's EarlyStopping: the first epoch sets the mark, then only a strict
        # improvement resets the count; 4 epochs without one end the stage
        (
            NOTEBOOK,
            [[0.5, 0.6, 0.6, 0.55, 0.6, 0.59], [0.1 * i for i in range(1, 9)], [0.9] * 5],
            {"adam": 6, "sgd_wd": 8, "sgd": 5},
        ),
        # the fast recipe waits 8 epochs (--max-epochs 12 would end its schedule later)
        (FAST, [[0.5, 0.6, *[0.6] * 8]], {"onecycle": 10}),
        (FAST, [[0.05 * i for i in range(1, 13)]], {"onecycle": 12}),
    ],
)
def test_early_stopping_follows_the_recipe(
    tmp_path: Path,
    digits_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    recipe: Recipe,
    scripted: list[list[float]],
    expected: dict[str, int],
):
    accuracies = iter([a for stage in scripted for a in stage])
    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: (0.0, 0.0))
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: (next(accuracies), 0.0))
    max_epochs = 8 if recipe is NOTEBOOK else 12
    config = TrainConfig(
        out=tmp_path, data=digits_csv, limit=200, recipe=recipe, max_epochs=max_epochs
    )
    result = train(config, log=lambda s: None)
    assert result.epochs == expected


def _text_labelled_rgb(monkeypatch: pytest.MonkeyPatch, n: int = 150) -> Path:
    """16x16 RGB rows with text labels of 3 classes, as the readers return them: (N, P)
    uint8 pixels and an object array of the labels' text. Each class has its own colour."""
    from fcls.infer.formats import sources
    from fcls.train import data as fdata

    rng = np.random.default_rng(0)
    labels = np.array(["eel", "cat", "dog"], dtype=object)[np.arange(n) % 3]
    colour = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}
    noise = rng.integers(0, 40, (n, 16 * 16, 3))
    pixels = (np.array([colour[v] for v in labels])[:, None, :] + noise).clip(0, 255)
    pixels = pixels.astype(np.uint8).reshape(n, -1)

    def read_train(
        src: object, limit: int | None = None, image_size: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return pixels[:limit], labels[:limit]

    monkeypatch.setattr(fdata, "read_train", read_train)
    # fcls-train checks a file's header before reading it: this one has none to check
    monkeypatch.setattr(sources, "check_header", lambda *args, **kwargs: None)
    return Path(__file__)  # an existing file: its content is what read_train returns


def test_rgb_text_labelled_data_trains_a_three_class_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = _text_labelled_rgb(monkeypatch)
    config = TrainConfig(
        out=tmp_path,
        data=data,
        max_epochs=2,
        image_size="16x16x3",
        arch="CNN",
        recipe=Recipe("adam", DEFAULT_STAGES[:1]),
    )
    result = train(config, log=lambda s: None)
    assert result.spec == fcls_spec.ImageSpec(16, 16, 3, ("cat", "dog", "eel"))  # sorted
    saved = Checkpoint.load(tmp_path / "model.pt")
    assert saved.architecture == "CNN" and saved.spec == result.spec
    assert saved.model.fc2.out_features == 3 and saved.model.conv1.in_channels == 3
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["per_class"]) == ["cat", "dog", "eel"]
    assert len(report["confusion_matrix"]) == 3 and report["test_accuracy"] > 0.9
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match=r"labels of .* are names already"):
        train(dataclasses.replace(config, class_names=("a", "b", "c")), log=lambda s: None)


def test_square_default_geometry_needs_image_size(tmp_path: Path, monkeypatch):
    data = _text_labelled_rgb(monkeypatch)  # 768 values: not a square grayscale image
    result = CliRunner().invoke(main, ["--data", str(data), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "768 pixel columns is not a square image" in result.output
    too_small = CliRunner().invoke(
        main, ["--data", str(data), "--out", str(tmp_path), "--image-size", "16x16x3"]
    )
    assert too_small.exit_code == 1  # FinalCNNet, the default, needs 23x23
    assert "FinalCNNet needs images of at least 23x23; the data is 16x16" in too_small.output
    assert "Traceback" not in too_small.output and not (tmp_path / "model.pt").exists()


def test_class_name_count_must_fit_the_data(tmp_path: Path, digits_csv: Path):
    args = ["--data", str(digits_csv), "--out", str(tmp_path), "--class-names", "a,b,c"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "3 names given, the data has 10 classes (labels 0..9)" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("recipe", [NOTEBOOK, FAST], ids=["notebook", "fast"])
def test_a_users_network_trains_and_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipe: Recipe
):
    (tmp_path / "my_nets.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = TrainConfig(
        out=tmp_path / "run", arch="my_nets:Tiny", max_epochs=1, limit=200, recipe=recipe
    )
    result = train(config, log=lambda s: None)
    assert result.architecture == "my_nets:Tiny"
    saved = Checkpoint.load(tmp_path / "run" / "model.pt")
    assert saved.architecture == "my_nets:Tiny" and type(saved.model).__name__ == "Tiny"
    assert saved.config is not None and saved.config["arch"] == "my_nets:Tiny"


@pytest.mark.parametrize("recipe", [NOTEBOOK, FAST], ids=["notebook", "fast"])
@pytest.mark.parametrize("arch", [n for n in NETWORKS if n != "FinalCNNet"])
def test_every_network_trains_with_either_recipe(tmp_path: Path, arch: str, recipe: Recipe):
    """FinalCNNet's runs are the session's `trained` fixture and the tests above."""
    stages = recipe.stages[:1]
    config = TrainConfig(
        out=tmp_path,
        arch=arch.lower(),
        max_epochs=1,
        limit=200,
        recipe=dataclasses.replace(recipe, stages=stages),
    )
    result = train(config, log=lambda s: None)
    assert result.architecture == arch and 0.0 <= result.test_accuracy <= 1.0
    assert Checkpoint.load(tmp_path / "model.pt").architecture == arch


def test_fcls_train_on_an_rgb_file_with_text_labels(tmp_path: Path):
    """A real file through the readers: 16x16 RGB rows (HWC), text labels, --image-size."""
    rng = np.random.default_rng(1)
    n = 150
    labels = np.array(["eel", "cat", "dog"])[np.arange(n) % 3]
    colour = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}
    noise = rng.integers(0, 40, (n, 16 * 16, 3))
    pixels = (np.array([colour[v] for v in labels])[:, None, :] + noise).clip(0, 255)
    data = tmp_path / "rgb.csv"
    header = ",".join([*(f"pix{i}" for i in range(1, 16 * 16 * 3 + 1)), "label"])
    body = "".join(
        ",".join(map(str, row)) + f",{label}\n" for row, label in zip(pixels.reshape(n, -1), labels)
    )
    data.write_text(header + "\n" + body)
    out = tmp_path / "run"
    args = ["--data", str(data), "--out", str(out), "--arch", "batchnormcnn", "--json"]
    result = CliRunner().invoke(main, [*args, "--image-size", "16x16x3", "--max-epochs", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["architecture"] == "BatchNormCNN"
    assert summary["image_spec"]["class_names"] == ["cat", "dog", "eel"]
    saved = Checkpoint.load(out / "model.pt")
    assert (saved.spec.height, saved.spec.width, saved.spec.channels) == (16, 16, 3)
    assert saved.model.fc2.out_features == 3 and summary["test_accuracy"] > 0.9


@pytest.mark.parametrize("k", [2, 5, 30])
def test_roc_plot_for_any_class_count(tmp_path: Path, k: int):
    from fcls.train.report import _roc_curves

    rng = np.random.default_rng(k)
    y = np.arange(200) % k
    proba = rng.random((200, k))
    path = tmp_path / "roc.png"
    _roc_curves(y, proba / proba.sum(1, keepdims=True), tuple(f"c{i}" for i in range(k)), path)
    assert path.read_bytes()[:4] == b"\x89PNG"
