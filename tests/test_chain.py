"""The whole chain through the real CLIs at geometries other than the notebook's:
fcls-train -> fcls-export -> fcls-infer / fcls-eval on 28x28 Kaggle-layout Fashion rows, on
16x16 RGB rows with text labels and 3 classes, and with a user's own network; then the
one-line errors at the boundaries between them (pixel counts, labels, sizes, networks).

Every command runs in-process through click's CliRunner, reading and writing under tmp dirs.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from helpers import (
    USER_NET,
    fashion_28x28,
    one_error_line,
    rgb_digits,
    temps_under,
    tiny_model,
    write_rows_csv,
)
from helpers import run_cli as cli

from fcls.export.cli import main as export_main
from fcls.export.graph import read_metadata
from fcls.infer.cli.eval import main as eval_main
from fcls.infer.cli.infer import main as infer_main
from fcls.train.cli import main as train_main

KAGGLE_ROWS = 3000  # training rows of the 28x28 file
HELD_OUT_ROWS = 300  # the next rows of the shared file: what fcls-infer and fcls-eval score
RGB_NAMES = ("zero", "one", "two")  # sklearn digits 0, 1, 2; the model sorts them
SORTED_NAMES = sorted(RGB_NAMES)  # ['one', 'two', 'zero']: class 0 is "one"


def results(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]


def report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


# -- 1. Fashion-MNIST as Kaggle ships it: 28x28, label first, pixel1..pixel784 ----------------


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory, shared_data) -> Path:
    """28x28 Fashion rows cropped from the shared 32x32 file, in three layouts:
    train.csv (label,pixel1..pixel784), labelled.csv (pix1..pix784,label) and
    unlabelled.csv (id,pixel0..pixel783), the last two holding the same held-out images."""
    pixels, labels = fashion_28x28(shared_data / "train.csv.gz", KAGGLE_ROWS + HELD_OUT_ROWS)
    d = tmp_path_factory.mktemp("kaggle")
    train, held, held_y = pixels[:KAGGLE_ROWS], pixels[KAGGLE_ROWS:], labels[KAGGLE_ROWS:]
    write_rows_csv(d / "train.csv", train, labels[:KAGGLE_ROWS], prefix="pixel", label_at=0)
    write_rows_csv(d / "labelled.csv", held, held_y)
    ids = [f"img-{i:04d}" for i in range(HELD_OUT_ROWS)]
    write_rows_csv(d / "unlabelled.csv", held, ids=ids, prefix="pixel", first=0, id_name="id")
    np.save(d / "labels.npy", held_y)
    return d


@pytest.fixture(scope="module")
def cnn28(tmp_path_factory, kaggle: Path) -> Path:
    """The notebook's CNN trained on the 28x28 rows (1 epoch per stage, ~25 s) and exported
    with --int8 --data; returns the run directory (model.pt, model.onnx, perhaps int8).

    The int8 gate is not asserted to pass here: at budgets this small no network passes it
    reliably on Fashion. Held-out top-1 agreement of int8 with fp32 measured on these 3,000
    rows (bar: 99%, over 600 rows): CNN 97.8% (1 epoch per stage), 99.0% (2), 98.8% (4),
    98.9% (1, on 8,000 rows); BatchNormCNN 98.8% (1), 99.3% and 98.3% (2, two seeds);
    FinalCNNet 98.3% (notebook, 1) and 98.7% (fast, 3 epochs). Models ~80% accurate have too
    many rows near a decision boundary. So this export must either pass, or be refused in
    one line with exit 3 and the fp32 model written; the RGB chain below, whose model is
    confident (agreement 100%), asserts a passing int8 variant.
    """
    run = tmp_path_factory.mktemp("cnn28")
    train = kaggle / "train.csv"
    cli(train_main, "--data", train, "-o", run, "--arch", "CNN", "--max-epochs", 1, "-q")
    exported = CliRunner().invoke(
        export_main, [str(run / "model.pt"), "--int8", "--data", str(train), "-q"]
    )
    assert exported.exception is None or isinstance(exported.exception, SystemExit)
    assert (run / "model.onnx").is_file(), exported.output  # fp32 passed its own gate
    if exported.exit_code == 0:
        assert (run / "model.int8.onnx").is_file()
    else:
        assert exported.exit_code == 3, exported.output
        assert one_error_line(exported).startswith("Error: int8 variant refused:")
        assert "top-1 agreement" in exported.output and not (run / "model.int8.onnx").exists()
    return run


def check_28x28_chain(run: Path, kaggle: Path, work: Path, arch: str) -> None:
    """Metadata, fcls-infer on the id,pixel0.. file, fcls-eval on the pix1..,label file."""
    meta = read_metadata(run / "model.onnx")
    numbers = [str(i) for i in range(10)]
    assert json.loads(meta["image_spec"]) == {
        "height": 28,
        "width": 28,
        "channels": 1,
        "pixel_order": "HWC",
        "class_names": numbers,
    }
    assert meta["architecture"] == arch
    int8 = run / "model.int8.onnx"
    models = [run / "model.onnx", *([int8] if int8.is_file() else [])]
    truth = np.load(kaggle / "labels.npy")
    accuracy = []
    for model in models:
        out = work / f"{model.stem}.results.csv"
        cli(infer_main, kaggle / "unlabelled.csv", "-m", model, "-o", out, "-q")
        rows = results(out)
        assert rows[0] == ["ID", "label"] and len(rows) == HELD_OUT_ROWS + 1
        assert [r[0] for r in rows[1:]] == [f"img-{i:04d}" for i in range(HELD_OUT_ROWS)]
        labels = np.array([int(r[1]) for r in rows[1:]])
        assert set(labels) <= set(range(10))
        accuracy.append(float((labels == truth).mean()))
    scored = [a for m in models for a in ("-m", m)]
    cli(eval_main, kaggle / "labelled.csv", *scored, "-o", work / "ev", "-q")
    got = report(work / "ev")
    assert got["rows"] == HELD_OUT_ROWS and got["class_names"] == numbers
    for entry, expected in zip(got["models"], accuracy, strict=True):
        assert len(entry["per_class"]) == 10 and np.shape(entry["confusion_matrix"]) == (10, 10)
        # fcls-eval scores what fcls-infer labels: the same rows, the same accuracy
        assert entry["accuracy"] == pytest.approx(expected, abs=1e-12)
        assert expected > 0.3  # chance is 0.1: the 28x28 images are read as images


@pytest.mark.slow
def test_kaggle_28x28_chain_with_the_cnn(cnn28: Path, kaggle: Path, tmp_path: Path):
    check_28x28_chain(cnn28, kaggle, tmp_path, "CNN")


@pytest.mark.slow
def test_kaggle_28x28_chain_with_finalcnnet(kaggle: Path, tmp_path: Path):
    """The default network at 28x28 (fast recipe, 2 epochs: ~30 s; its export ~20 s), fp32
    only: see `cnn28` for why int8 is not asserted at this budget."""
    run = tmp_path / "run"
    train = kaggle / "train.csv"
    args = ["--data", train, "-o", run, "--recipe", "fast", "--max-epochs", 2]
    trained = cli(train_main, *args, "--json", "-q")
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["architecture"] == "FinalCNNet" and summary["image_spec"]["height"] == 28
    cli(export_main, run / "model.pt", "--data", train, "-q")
    assert not (run / "model.int8.onnx").exists()
    check_28x28_chain(run, kaggle, tmp_path, "FinalCNNet")


@pytest.mark.slow
def test_fast_recipe_trains_the_cnn(kaggle: Path, tmp_path: Path):
    """--recipe fast must train every registered network, not only FinalCNNet: on these rows
    the CNN's loss went to NaN in the first epoch at the recipe's SGD rate, which a network
    without BatchNorm now caps (`sgd_lr_cap`). Two epochs of a 36-epoch schedule, validated
    on the weights' moving average, are only a start: the check is that it learns."""
    run = tmp_path / "run"
    args = ["--data", kaggle / "train.csv", "-o", run, "--arch", "CNN", "--recipe", "fast"]
    cli(train_main, *args, "--max-epochs", 2, "-q")
    with (run / "history.csv").open(newline="") as f:
        history = list(csv.DictReader(f))
    losses = [float(r[k]) for r in history for k in ("train_loss", "val_loss")]
    assert all(math.isfinite(v) and v < 10 for v in losses), history
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"]), history
    assert float(history[-1]["val_accuracy"]) > 0.15, history  # chance is 0.1


NAN_NET = USER_NET.replace("return self.fc(", "return float('nan') * self.fc(")


def test_a_diverged_run_is_one_line_not_a_traceback(tmp_path: Path, monkeypatch):
    """A network whose loss is NaN (here: by construction) must end fcls-train with one
    `Error:` line, not an exception (it escaped as ValueError: Input contains NaN, from
    roc_auc_score in train/report.py's classification_metrics)."""
    (tmp_path / "chain_nan_net.py").write_text(NAN_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["-o", tmp_path / "run", "--arch", "chain_nan_net:Tiny", "--limit", 200]
    result = CliRunner().invoke(train_main, [str(a) for a in [*args, "--max-epochs", 1, "-q"]])
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"{type(escaped).__name__}: {escaped}\n{result.output}"
    assert result.exit_code not in (0, 2) and result.output.strip() == one_error_line(result)


# -- 2. RGB rows, text labels, 3 classes ------------------------------------------------------


@pytest.fixture(scope="module")
def rgb(tmp_path_factory) -> Path:
    """sklearn's digits 0..2 as tinted 16x16 RGB (HWC) rows labelled zero/one/two: train.csv
    (all 537), and the first 90 as unlabelled.csv, names.csv (text labels) and numbers.csv
    (the class indices, 0 = "one" as the model sorts the names); trained with the CNN (2
    epochs per stage, a few seconds) and exported with --int8 (it passes: agreement 100%)."""
    d = tmp_path_factory.mktemp("rgb")
    pixels, digit = rgb_digits(16)
    names = np.array(RGB_NAMES)[digit]
    write_rows_csv(d / "train.csv", pixels, names)
    few, few_names = pixels[:90], names[:90]
    write_rows_csv(d / "unlabelled.csv", few)
    write_rows_csv(d / "names.csv", few, few_names)
    write_rows_csv(d / "numbers.csv", few, [SORTED_NAMES.index(n) for n in few_names])
    np.save(d / "truth.npy", np.array([SORTED_NAMES.index(n) for n in few_names]))
    run = d / "run"
    args = ["--data", d / "train.csv", "-o", run, "--image-size", "16x16x3", "--arch", "CNN"]
    cli(train_main, *args, "--max-epochs", 2, "-q")
    cli(export_main, run / "model.pt", "--int8", "--data", d / "train.csv", "-q")
    return d


def test_rgb_text_labelled_three_class_chain(rgb: Path, tmp_path: Path):
    run = rgb / "run"
    for model in (run / "model.onnx", run / "model.int8.onnx"):
        meta = read_metadata(model)
        assert json.loads(meta["class_names"]) == SORTED_NAMES
        spec = json.loads(meta["image_spec"])
        assert (spec["height"], spec["width"], spec["channels"]) == (16, 16, 3)
        assert spec["class_names"] == SORTED_NAMES
        graph = onnx.load(str(model)).graph
        assert dims(graph.input[0]) == ["batch", 16 * 16 * 3]
        assert {o.name: dims(o) for o in graph.output} == {
            "logits": ["batch", 3],
            "label": ["batch"],
        }

    truth = np.load(rgb / "truth.npy")
    args = [rgb / "unlabelled.csv", "-m", run / "model.onnx", "-o", tmp_path / "n.csv"]
    cli(infer_main, *args, "-q")
    numbers = results(tmp_path / "n.csv")
    assert numbers[0] == ["ID", "label"] and len(numbers) == 91
    indices = np.array([int(r[1]) for r in numbers[1:]])
    assert set(indices) <= {0, 1, 2} and (indices == truth).mean() > 0.8
    args = [rgb / "unlabelled.csv", "-m", run / "model.onnx", "-o", tmp_path / "s.csv"]
    cli(infer_main, *args, "--class-names", "-q")
    named = results(tmp_path / "s.csv")
    assert [r[1] for r in named[1:]] == [SORTED_NAMES[i] for i in indices]

    both = ["-m", run / "model.onnx", "-m", run / "model.int8.onnx"]
    cli(eval_main, rgb / "names.csv", *both, "-o", tmp_path / "by_name", "-q")
    cli(eval_main, rgb / "numbers.csv", *both, "-o", tmp_path / "by_number", "-q")
    by_name, by_number = report(tmp_path / "by_name"), report(tmp_path / "by_number")
    assert by_name["class_names"] == SORTED_NAMES == by_number["class_names"]
    for a, b in zip(by_name["models"], by_number["models"]):  # one file, two label spellings
        assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
        assert list(a["per_class"]) == SORTED_NAMES and np.shape(a["confusion_matrix"]) == (3, 3)
    assert by_name["models"][0]["accuracy"] == pytest.approx((indices == truth).mean())


# -- 3. a user's own network: --arch package.module:Class -------------------------------------


def test_a_users_network_trains_exports_and_scores(tmp_path: Path, monkeypatch):
    (tmp_path / "chain_user_net.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = ["-o", run, "--arch", "chain_user_net:Tiny", "--limit", 400, "--max-epochs", 1]
    trained = cli(train_main, *args, "--write-test-csv", "--json", "-q")  # the digits, 32x32
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["architecture"] == "chain_user_net:Tiny"
    cli(export_main, run / "model.pt", "-q")
    assert read_metadata(run / "model.onnx")["architecture"] == "chain_user_net:Tiny"
    cli(infer_main, run / "test.csv", "-m", run / "model.onnx", "-q")
    rows = results(tmp_path / "results.csv")
    assert rows[0] == ["ID", "label"] and len(rows) == len(results(run / "test.csv"))
    assert {int(r[1]) for r in rows[1:]} <= set(range(10))


# -- 4. one line, no traceback, the documented exit code --------------------------------------


def _refused(result: Result, code: int, *words: str) -> str:
    line = one_error_line(result)
    assert result.exit_code == code, result.output
    for word in words:
        assert word in line, line
    return line


@pytest.fixture(scope="module")
def model1024(tmp_path_factory) -> Path:
    """A model with fcls's interface over 1024 pixels (32x32 grayscale, 10 classes)."""
    return tiny_model(tmp_path_factory.mktemp("m1024") / "m1024.onnx")


@pytest.mark.slow  # trains a model (module fixture)
def test_infer_refuses_1024_columns_for_a_784_model(cnn28: Path, tmp_path: Path):
    data = write_rows_csv(tmp_path / "u.csv", np.zeros((5, 1024), np.uint8))
    out = tmp_path / "results.csv"
    result = cli(infer_main, data, "-m", cnn28 / "model.onnx", "-o", out, "-q", code=1)
    assert result.output.strip() == _refused(result, 1, "1024", "784")
    assert not out.exists() and temps_under(tmp_path) == []


def test_infer_refuses_784_columns_for_a_1024_model(model1024: Path, tmp_path: Path):
    data = tmp_path / "u.csv"
    write_rows_csv(data, np.zeros((5, 784), np.uint8), prefix="pixel", first=0, id_name="id")
    out = tmp_path / "results.csv"
    result = cli(infer_main, data, "-m", model1024, "-o", out, "-q", code=1)
    assert result.output.strip() == _refused(result, 1, "784", "1024")
    assert not out.exists() and temps_under(tmp_path) == []


@pytest.mark.parametrize(("label", "row"), [("three", 4), ("3", 2)])
def test_eval_refuses_a_label_that_is_not_a_class(rgb: Path, tmp_path: Path, label: str, row: int):
    pixels, _ = rgb_digits(16)
    labels = ["one", "two", "zero", "one", "two"]
    labels[row - 1] = label  # data row `row` (file line row + 1)
    data = write_rows_csv(tmp_path / "bad.csv", pixels[:5], labels)
    out = tmp_path / "ev"
    result = cli(eval_main, data, "-m", rgb / "run" / "model.onnx", "-o", out, "-q", code=1)
    line = _refused(result, 1, f"bad.csv:{row + 1}", repr(label))
    assert result.output.strip() == line and not (out / "report.json").exists()


@pytest.mark.slow  # trains a model (module fixture)
def test_eval_refuses_label_10_for_a_ten_class_model(cnn28: Path, tmp_path: Path):
    data = write_rows_csv(tmp_path / "bad.csv", np.zeros((4, 784), np.uint8), [1, 2, 10, 3])
    out = tmp_path / "ev"
    result = cli(eval_main, data, "-m", cnn28 / "model.onnx", "-o", out, "-q", code=1)
    assert result.output.strip() == _refused(result, 1, "bad.csv:4", "'10'")
    assert not (out / "report.json").exists()


def _train_refused(tmp_path: Path, pixels: np.ndarray, *args: object, code: int) -> str:
    data = write_rows_csv(tmp_path / "data.csv", pixels, np.arange(len(pixels)) % 3)
    out = tmp_path / "out"
    result = cli(train_main, "--data", data, "-o", out, "-q", *args, code=code)
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())
    line = one_error_line(result)
    if code == 1:  # fcls's own errors: only the line; click's usage errors add a Usage line
        assert result.output.strip() == line
    return line


def _noise(n: int, p: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, p)).astype(np.uint8)


def test_train_refuses_a_non_square_row_without_image_size(tmp_path: Path):
    line = _train_refused(tmp_path, _noise(60, 24), code=1)
    assert "24 pixel columns" in line and "--image-size" in line


@pytest.mark.parametrize(
    ("size", "values"), [("27x27", "729"), ("28x28x3", "2352"), ("14x56x2", "1568")]
)
def test_train_refuses_an_image_size_that_is_not_the_row(tmp_path: Path, size: str, values: str):
    line = _train_refused(tmp_path, _noise(60, 784), "--image-size", size, code=1)
    assert size in line and values in line and "784" in line


def test_train_refuses_an_image_size_it_cannot_read(tmp_path: Path):
    line = _train_refused(tmp_path, _noise(60, 784), "--image-size", "28by28", code=2)
    assert "--image-size" in line and "28by28" in line


def test_train_refuses_an_unknown_network(tmp_path: Path):
    line = _train_refused(tmp_path, _noise(60, 784), "--arch", "NoSuchNet", code=2)
    assert "NoSuchNet" in line and "FinalCNNet" in line and "package.module:ClassName" in line


def test_train_refuses_a_network_too_big_for_the_images(tmp_path: Path):
    line = _train_refused(tmp_path, _noise(60, 64), code=1)  # FinalCNNet on 8x8
    assert "FinalCNNet needs images of at least 23x23; the data is 8x8" in line


def test_train_refuses_a_module_that_does_not_import(tmp_path: Path):
    line = _train_refused(tmp_path, _noise(60, 784), "--arch", "nosuchmodule:X", code=1)
    assert "nosuchmodule:X" in line and "cannot import nosuchmodule" in line
