"""fcls.infer.evaluate / fcls-eval: metrics equal scikit-learn's, agreement, bad input, atomic output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import deadline, naive_ece_nll, write_eval_csv, write_train_csv
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from fcls.infer import Predictor
from fcls.infer.cli.eval import main
from fcls.infer.common.errors import ConfigError, DataError, ModelError, OutputError
from fcls.infer.common.output import TEMP_SUFFIX
from fcls.infer.evaluate import PNG_HINT, EvalConfig, evaluate, label_matrix, metrics_from_confusion

K = 10
LABELS = np.arange(K)


def select_model(path: Path, offset: int, names: list[str] | None = None, classes: int = K) -> Path:
    """A graph with fcls's interface whose logits are pixels offset..offset+classes-1.

    Its label is the argmax of those pixels (first one on ties, like numpy), so a test knows
    every prediction exactly without running it.
    """
    w = np.zeros((1024, classes), np.float32)
    w[offset + np.arange(classes), np.arange(classes)] = 1.0
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "select",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 1024])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"class_names": json.dumps(names)})
    onnx.save(model, str(path))
    return path


def expected_labels(pixels: np.ndarray, offset: int) -> np.ndarray:
    """What select_model(offset) predicts."""
    return pixels[:, offset : offset + K].argmax(axis=1)


def labelled_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1024) uint8 pixels and labels with: class 9 absent from the labels, class 5 never
    predicted by select_model(0), and models 0 and 10 agreeing on some rows, not all."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 1024), dtype=np.uint8)
    pixels[rng.random((n, 1024)) < 0.7] = 0
    pixels[:, 5] = 0  # model 0 never says 5 (ties go to an earlier column)
    same = rng.random(n) < 0.5
    pixels[same, 10:20] = pixels[same, 0:10]  # model 10 copies model 0 on half the rows
    labels = np.where(rng.random(n) < 0.6, expected_labels(pixels, 0), rng.integers(0, K, n))
    labels[labels == 9] = 8  # class 9 never occurs in the data
    return pixels, labels.astype(np.int64)


def assert_like_sklearn(model: dict, y_true: np.ndarray, y_pred: np.ndarray, names: list[str]):
    """Every number of one model's report entry equals scikit-learn's on the same labels."""
    p, r, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=LABELS, zero_division=0
    )
    assert model["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert model["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=LABELS).tolist()
    got = [model["per_class"][n] for n in names]
    np.testing.assert_allclose([c["precision"] for c in got], p, atol=1e-12)
    np.testing.assert_allclose([c["recall"] for c in got], r, atol=1e-12)
    np.testing.assert_allclose([c["f1"] for c in got], f1, atol=1e-12)
    assert [c["support"] for c in got] == support.tolist()
    for key, average in (("macro_avg", "macro"), ("weighted_avg", "weighted")):
        want = precision_recall_fscore_support(
            y_true, y_pred, labels=LABELS, average=average, zero_division=0
        )[:3]
        got_avg = model[key]
        np.testing.assert_allclose(
            [got_avg["precision"], got_avg["recall"], got_avg["f1"]], want, atol=1e-12
        )


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_equal_sklearn_with_absent_and_never_predicted_classes():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, K, 2000)
    y_true[y_true == 3] = 4  # class 3 absent from the data (but predicted: precision 0)
    y_pred = np.where(rng.random(2000) < 0.5, y_true, rng.integers(0, K, 2000))
    y_pred[y_pred == 7] = 6  # class 7 never predicted: precision 0/0 -> 0
    m = metrics_from_confusion(label_matrix(y_true, y_pred, K))
    assert m.support[3] == 0 and m.confusion[:, 7].sum() == 0 and m.confusion[:, 3].sum() > 0
    # zero division gives 0, as scikit-learn's zero_division=0 (not NaN, no warning)
    assert m.precision[7] == 0.0 and m.recall[3] == 0.0 and m.f1[3] == 0.0
    p, r, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=LABELS, zero_division=0
    )
    np.testing.assert_allclose(m.precision, p, atol=1e-12)
    np.testing.assert_allclose(m.recall, r, atol=1e-12)
    np.testing.assert_allclose(m.f1, f1, atol=1e-12)
    assert m.support.tolist() == support.tolist()
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert m.confusion.tolist() == confusion_matrix(y_true, y_pred, labels=LABELS).tolist()
    for average in ("macro", "weighted"):
        want = precision_recall_fscore_support(
            y_true, y_pred, labels=LABELS, average=average, zero_division=0
        )[:3]
        got = m.average(average)
        np.testing.assert_allclose([got["precision"], got["recall"], got["f1"]], want, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, K - 1), st.integers(0, K - 1)), min_size=1, max_size=40))
def test_metrics_equal_sklearn_property(pairs: list[tuple[int, int]]):
    """On any small label sets (most classes absent or never predicted)."""
    y_true, y_pred = (np.array(v, dtype=np.int64) for v in zip(*pairs))
    m = metrics_from_confusion(label_matrix(y_true, y_pred, K))
    p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=LABELS, zero_division=0)
    np.testing.assert_allclose(np.stack([m.precision, m.recall, m.f1]), [p, r, f1], atol=1e-12)
    for average in ("macro", "weighted"):
        want = precision_recall_fscore_support(
            y_true, y_pred, labels=LABELS, average=average, zero_division=0
        )[:3]
        got = m.average(average)
        np.testing.assert_allclose([got["precision"], got["recall"], got["f1"]], want, atol=1e-12)


# --- the CLI on two models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    return labelled_rows(1500)


@pytest.fixture(scope="module")
def data(tmp_path_factory, rows) -> Path:
    """1,500 labelled rows: two chunks of the reader (~3.4 MB of CSV)."""
    pixels, labels = rows
    return write_train_csv(tmp_path_factory.mktemp("eval") / "data.csv", pixels, labels)


NAMES = [f"class {c}" for c in "abcdefghij"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("models")
    return select_model(d / "a.onnx", 0, NAMES), select_model(d / "b.onnx", 10, NAMES)


def test_cli_two_models_report_equals_sklearn(tmp_path: Path, data, rows, models):
    pixels, y = rows
    out = tmp_path / "report"
    with deadline(60):
        result = CliRunner().invoke(
            main,
            [
                str(data),
                "-m",
                str(models[0]),
                "-m",
                str(models[1]),
                "-o",
                str(out),
                "--batch-size",
                "100",
                "--provider",
                "cpu",
                "--json",
                "--summary-json",
                str(tmp_path / "summary.json"),
            ],
        )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    pred_a, pred_b = expected_labels(pixels, 0), expected_labels(pixels, 10)
    assert report["rows"] == len(y) == 1500
    assert report["class_names"] == NAMES
    for model, pred, path in zip(report["models"], (pred_a, pred_b), models):
        assert model["path"] == str(path) and len(model["sha256"]) == 64
        assert model["provider"] == "cpu"
        assert_like_sklearn(model, y, pred, NAMES)
    # the data was made so that every zero-division case is there
    a = report["models"][0]
    assert a["per_class"]["class j"]["support"] == 0 and a["per_class"]["class j"]["recall"] == 0
    assert a["per_class"]["class f"]["precision"] == 0  # model a never predicts class 5
    (pair,) = report["agreement"]
    differ = pred_a != pred_b
    assert 0 < differ.sum() < len(y)
    assert pair["agreement"] == pytest.approx(1 - differ.mean(), abs=1e-12)
    assert pair["different_label_rows"] == int(differ.sum())
    by_class = np.bincount(y[differ], minlength=K).tolist()
    assert [pair["disagreements_by_true_class"][n] for n in NAMES] == by_class
    assert pair["label_matrix"] == confusion_matrix(pred_a, pred_b, labels=LABELS).tolist()
    # PNGs (matplotlib is in the dev extra) and the summary line and JSON
    for model, offset in zip(report["models"], (0, 10)):  # no profile: T = 1, raw = calibrated
        cal = model["calibration"]
        ece, nll = naive_ece_nll(pixels[:, offset : offset + K].astype(np.float64), y)
        assert cal["temperature"] == 1.0
        assert cal["ece"] == cal["ece_raw"] == pytest.approx(ece, abs=1e-6)
        assert cal["nll"] == pytest.approx(nll, rel=1e-6)
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_a.png",
        "confusion_b.png",
        "reliability_a.png",
        "reliability_b.png",
        "report.json",
    ]
    assert (out / "confusion_a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 1500 and summary["output"] == str(out / "report.json")
    assert summary["agreement"][0]["agreement"] == pair["agreement"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert not any("rows |" in s for s in result.stderr.splitlines())  # --json replaces it
    quiet = CliRunner().invoke(main, [str(data), "-m", str(models[0]), "-o", str(out), "-q"])
    assert quiet.exit_code == 0 and quiet.stdout == quiet.stderr == ""
    human = CliRunner().invoke(
        main, [str(data), "-m", str(models[0]), "-m", str(models[1]), "-o", str(out)]
    )
    line = next(s for s in human.stderr.splitlines() if "rows |" in s)
    assert f"a.onnx accuracy {a['accuracy']:.4f}" in line
    assert f"agreement a.onnx ~ b.onnx {pair['agreement']:.4f}" in line


def test_int8_model_against_its_fp32_source(tmp_path: Path, exported: Path, digits, digits_csv):
    """The real chain: a trained, exported model and its int8 quantization, on digits."""
    from fcls.export.variants import quantize_int8

    int8 = tmp_path / "q.int8.onnx"
    quantize_int8(exported, int8, digits[0][:256])
    out = tmp_path / "report"
    with deadline(120):
        result = CliRunner().invoke(
            main, [str(digits_csv), "-m", str(exported), "-m", str(int8), "-o", str(out), "-q"]
        )
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet
    report = json.loads((out / "report.json").read_text())
    pixels, y = digits[0][:400], digits[1][:400]
    preds = [Predictor(m, "cpu").predict(pixels) for m in (exported, int8)]
    names = Predictor(exported, "cpu").class_names
    assert report["class_names"] == names
    for model, pred in zip(report["models"], preds):
        assert_like_sklearn(model, y, pred, names)
    assert report["agreement"][0]["agreement"] == pytest.approx((preds[0] == preds[1]).mean())


def test_one_model_stdin_and_no_png_without_matplotlib(
    tmp_path: Path, data, rows, models, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "r"
    result = CliRunner().invoke(
        main, ["-", "-m", str(models[0]), "-o", str(out)], input=data.read_bytes()
    )
    assert result.exit_code == 0, result.output
    assert f"fcls-eval: {PNG_HINT}" in result.stderr
    assert [p.name for p in out.iterdir()] == ["report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["agreement"] == [] and report["data"] == "<stdin>"
    assert report["models"][0]["confusion_png"] is None
    assert_like_sklearn(report["models"][0], rows[1], expected_labels(rows[0], 0), NAMES)


# --- bad input: one line, non-zero exit, nothing written -------------------------------------


def _fails(args: list[str], out: Path, match: str, code: int = 1) -> None:
    """`code`: 1 for data and options, 3 for a model (fcls.infer.cli.kit.EXIT_CODES)."""
    with deadline(60):
        result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert match in lines[0], lines[0]
    assert not out.exists()  # no report, and no report directory, on failure


def test_unlabelled_file_is_refused(tmp_path: Path, rows, models):
    eval_csv = write_eval_csv(tmp_path / "e.csv", rows[0][:5])
    _fails(
        [str(eval_csv), "-m", str(models[0])],
        tmp_path / "out",
        "e.csv:1: has ID and pixel columns but no label column; fcls-eval needs a "
        "label column (pix1..pixN,label); fcls-infer scores unlabelled files",
    )


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_table_input_reports_as_the_same_rows_in_csv(tmp_path: Path, data, rows, models, suffix):
    """A labelled Parquet / Arrow IPC file is opened as a table (it was parsed as CSV)."""
    from fcls.infer.convert import convert

    table = tmp_path / f"data{suffix}"
    convert(data, table, durable=False)
    reports = {}
    for name, src in (("csv", data), ("table", table)):
        out = tmp_path / name
        result = CliRunner().invoke(
            main, [str(src), "-m", str(models[0]), "-m", str(models[1]), "-o", str(out), "-q"]
        )
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((out / "report.json").read_text())
    keep = ("accuracy", "per_class", "macro_avg", "weighted_avg", "confusion_matrix")
    for csv_model, table_model in zip(reports["csv"]["models"], reports["table"]["models"]):
        assert {k: table_model[k] for k in keep} == {k: csv_model[k] for k in keep}
    for key in ("rows", "class_names"):
        assert reports["table"][key] == reports["csv"][key]
    drop = ("models", "models_index")
    assert [
        {k: v for k, v in p.items() if k not in drop} for p in reports["table"]["agreement"]
    ] == [{k: v for k, v in p.items() if k not in drop} for p in reports["csv"]["agreement"]]
    assert reports["table"]["data"] == str(table)
    assert_like_sklearn(reports["table"]["models"][0], rows[1], expected_labels(rows[0], 0), NAMES)


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_unlabelled_table_is_refused_like_csv(tmp_path: Path, rows, models, suffix):
    from fcls.infer.convert import convert

    table = tmp_path / f"e{suffix}"
    convert(write_eval_csv(tmp_path / "e.csv", rows[0][:5]), table, durable=False)
    _fails(
        [str(table), "-m", str(models[0])],
        tmp_path / "out",
        f"e{suffix}: has ID and pixel columns but no label column; fcls-eval needs a "
        "label column (pix1..pixN,label); fcls-infer scores unlabelled files",
    )


def test_other_header_problems_keep_the_reader_message(tmp_path: Path, models):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    _fails([str(bad), "-m", str(models[0])], tmp_path / "out", "bad.csv:1: missing label column")


def test_a_label_beyond_the_models_classes_names_its_row(tmp_path: Path, data):
    five = select_model(tmp_path / "five.onnx", 0, classes=5)
    _fails(
        [str(data), "-m", str(five)],
        tmp_path / "out",
        "data.csv:3 column label: label '6' is not one of the model's 5 classes (0, 1, 2, 3, 4)",
        1,
    )


def test_models_with_different_class_names_are_refused(tmp_path: Path, data, models):
    other = select_model(tmp_path / "other.onnx", 0, [*NAMES[:3], "zebra", *NAMES[4:]])
    _fails(
        [str(data), "-m", str(models[0]), "-m", str(other)],
        tmp_path / "out",
        "other.onnx: class 3 is 'zebra', but",
        3,
    )


def test_repeated_class_names_are_refused(tmp_path: Path, data):
    twice = select_model(tmp_path / "twice.onnx", 0, [*NAMES[:9], NAMES[0]])
    _fails(
        [str(data), "-m", str(twice)],
        tmp_path / "out",
        "twice.onnx: its image spec cannot be used (classes 0 and 9 share the name 'class a')",
        3,
    )


def test_missing_model_and_empty_data(tmp_path: Path, data, models):
    _fails([str(data), "-m", str(tmp_path / "nope.onnx")], tmp_path / "o1", "no such model file", 3)
    empty = write_train_csv(tmp_path / "empty.csv", np.zeros((0, 1024)), np.zeros(0))
    _fails([str(empty), "-m", str(models[0])], tmp_path / "o2", "no data rows after the header")


def test_bad_row_late_in_the_file_leaves_an_old_report_untouched(tmp_path: Path, rows, models):
    """Atomic output: a failure after the first chunk was scored writes nothing."""
    pixels, labels = rows
    path = write_train_csv(tmp_path / "late.csv", pixels, labels)
    lines = path.read_bytes().split(b"\n")
    lines[1400] = lines[1400].replace(b",", b",x", 1)  # file line 1401, past the first chunk
    path.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("old")
    result = CliRunner().invoke(main, [str(path), "-m", str(models[0]), "-o", str(out)])
    assert result.exit_code == 1
    assert "late.csv:1401 column pix2:" in result.stderr
    assert [p.name for p in out.iterdir()] == ["report.json"]  # no temp, no PNG left
    assert (out / "report.json").read_text() == "old"
    assert not list(out.glob(f"*{TEMP_SUFFIX}"))


def test_output_that_is_a_file(tmp_path: Path, data, models):
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(OutputError, match="taken: exists and is not a directory"):
        evaluate(EvalConfig(data=data, models=(models[0],), out=taken))
    assert taken.read_text() == "x"


def test_library_errors_are_typed(tmp_path: Path, data, rows):
    with pytest.raises(ModelError, match="no model given"):
        evaluate(EvalConfig(data=data, models=(), out=tmp_path / "o"))
    tiny = select_model(tmp_path / "m.onnx", 0)
    with pytest.raises(ConfigError, match="--batch-size 0: must be at least 1"):
        evaluate(EvalConfig(data=data, models=(tiny,), out=tmp_path / "o", batch_size=0))
    with pytest.raises(DataError, match="no such file"):
        evaluate(
            EvalConfig(
                data=tmp_path / "gone.csv",
                models=(tiny,),
                out=tmp_path / "o",
            )
        )
    assert not (tmp_path / "o").exists()


def test_version_and_help():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("fcls-eval ")
    assert "onnxruntime" in result.output
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "-m, --model" in result.output


def test_evaluation_needs_neither_torch_nor_sklearn(tmp_path: Path, data, models):
    """The deployment half: fcls-eval runs with torch and scikit-learn absent."""
    code = (
        "import sys\n"
        "sys.modules.update(torch=None, sklearn=None)  # any import of them would fail\n"
        "from fcls.infer.cli.eval import main\n"
        f"main([{str(data)!r}, '-m', {str(models[0])!r}, '-o', {str(tmp_path / 'o')!r}, '-q'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "report.json").is_file()
