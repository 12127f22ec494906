"""fcls.infer and fcls-infer: streaming prediction, output rules and every bad-input case."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import deadline, write_eval_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from fcls.infer import Predictor, predict_csv
from fcls.infer.cli.infer import main
from fcls.infer.common.errors import DataError, ProviderError
from fcls.infer.common.system import available_cpus

PIX = ",".join(f"pix{i}" for i in range(1, 1025))
N_ROWS = 403  # not a multiple of any batch size used here


@pytest.fixture(scope="module")
def rows(digits) -> tuple[np.ndarray, list[str]]:
    pixels = digits[0][-N_ROWS:]
    ids = [f"img-{i:04d}" if i % 3 else str(10_000 - i) for i in range(N_ROWS)]
    ids[5] = 'has,comma "and quotes"'
    return pixels, ids


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory, rows) -> Path:
    return write_eval_csv(tmp_path_factory.mktemp("eval") / "evaluate.csv", *rows)


def _direct_labels(model: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": pixels})[0].argmax(1)


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_labels_order_and_ids_across_chunks(tmp_path, exported, eval_csv, rows):
    pixels, ids = rows
    out = tmp_path / "results.csv"
    summary = predict_csv(eval_csv, out, exported, batch_size=7, chunk_bytes=20_000)
    assert summary.rows == N_ROWS and summary.provider == "cpu"
    table = _read(out)
    assert table[0] == ["ID", "label"]
    assert [r[0] for r in table[1:]] == ids  # verbatim, in order, quoted where needed
    np.testing.assert_array_equal([int(r[1]) for r in table[1:]], _direct_labels(exported, pixels))
    assert '\n"has,comma ""and quotes""",' in out.read_text()  # quoted only where needed


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_run_batches_equals_one_call(exported, batch_size):
    """The one batching loop (pipeline and Ray scorers): the same labels and probabilities as
    one call over all rows, whatever the batch size; no rows gives empty arrays."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(150, 1024), dtype=np.uint8)
    model = Predictor(exported, "cpu")
    labels, proba = model.run(pixels, proba=True)
    got_labels, got_proba = model.run_batches(pixels, batch_size, proba=True)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(got_proba, proba, rtol=1e-5, atol=1e-6)
    assert model.run_batches(pixels, batch_size)[1] is None
    none_labels, none_proba = model.run_batches(pixels[:0], batch_size, proba=True)
    assert none_labels.shape == (0,) and none_proba is not None and none_proba.shape == (0, 10)


def test_same_bytes_whatever_the_chunking(tmp_path, exported, eval_csv):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    predict_csv(eval_csv, a, exported, batch_size=1024)
    predict_csv(eval_csv, b, exported, batch_size=1, chunk_bytes=3000)
    assert a.read_bytes() == b.read_bytes()


def test_stdin_and_gzip(tmp_path, exported, eval_csv):
    expected = tmp_path / "expected.csv"
    predict_csv(eval_csv, expected, exported)
    runner = CliRunner()
    out = tmp_path / "stdin.csv"
    result = runner.invoke(
        main, ["-", "--model", str(exported), "-o", str(out)], input=eval_csv.read_bytes()
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == expected.read_bytes()
    gz = tmp_path / "evaluate.csv.gz"
    gz.write_bytes(gzip.compress(eval_csv.read_bytes()))
    out_gz = tmp_path / "gz.csv"
    result = runner.invoke(main, [str(gz), "--model", str(exported), "-o", str(out_gz)])
    assert result.exit_code == 0 and out_gz.read_bytes() == expected.read_bytes()
    assert f"{N_ROWS} rows in" in result.output and "rows/s" in result.output


def test_proba_and_class_names(tmp_path, exported, eval_csv, rows):
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(
        main,
        [
            str(eval_csv),
            "--model",
            str(exported),
            "-o",
            str(out),
            "--proba",
            "--class-names",
            "--quiet",
        ],
    )
    assert result.exit_code == 0 and result.output == ""
    table = _read(out)
    names = Predictor(exported).class_names
    assert table[0] == ["ID", "label", *(f"p_{n}" for n in names)]
    probs = np.array([[float(v) for v in r[2:]] for r in table[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    labels = _direct_labels(exported, rows[0])
    assert [r[1] for r in table[1:]] == [names[i] for i in labels]
    np.testing.assert_array_equal(probs.argmax(1), labels)


def test_predictor_api(exported, rows):
    predictor = Predictor(exported, provider="cpu", threads=1)
    pixels = rows[0][:50]
    np.testing.assert_array_equal(predictor.predict(pixels), _direct_labels(exported, pixels))
    proba = predictor.predict_proba(pixels)
    assert proba.shape == (50, 10) and proba.dtype == np.float32
    assert predictor.predict(pixels[:0]).shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(pixels.astype(np.float32))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_float_input_model_is_accepted(tmp_path, trained, rows, exported):
    import torch

    from fcls.train.checkpoint import Checkpoint

    model = Checkpoint.load(trained / "model.pt").model
    path = tmp_path / "float.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, 32, 32),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    labels = Predictor(path).predict(rows[0])
    assert (labels == _direct_labels(exported, rows[0])).mean() == 1.0


def test_header_only_gives_header_only(tmp_path, exported):
    src = tmp_path / "h.csv"
    src.write_text("ID," + PIX + "\r\n")
    out = tmp_path / "r.csv"
    assert predict_csv(src, out, exported).rows == 0
    assert out.read_text() == "ID,label\n"


def _bad_cases(tmp: Path, eval_csv: Path) -> dict[str, tuple[list[str], str]]:
    good_row = "1," + ",".join(["0"] * 1024)
    header = "ID," + PIX

    def write(name: str, text: str | bytes) -> str:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def cell(value: str) -> str:
        cells = ["0"] * 1024
        cells[41] = value
        return f"{header}\n{good_row}\n{good_row}\n7," + ",".join(cells) + "\n"

    gz = gzip.compress(eval_csv.read_bytes())
    mismatch = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 784])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", 784])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    mismatch.ir_version = 8
    onnx.save(mismatch, str(tmp / "mnist784.onnx"))
    return {
        "missing file": ([str(tmp / "nope.csv")], "nope.csv: no such file"),
        "empty file": ([write("empty.csv", "")], "empty.csv:1: empty file"),
        "no ID column": (
            [write("noid.csv", PIX + "\n" + ",".join(["0"] * 1024) + "\n")],
            "noid.csv:1: missing ID column",
        ),
        "pixel columns": (
            [write("cols.csv", "ID," + PIX.rsplit(",", 1)[0] + "\n")],
            "cols.csv:1: 1023 pixel columns (pix1..pix1023), the model takes 1024 (32x32x1)",
        ),
        "ragged row": (
            [write("ragged.csv", f"{header}\n{good_row}\n{good_row[:-4]}\n")],
            "ragged.csv:3: expected 1025 fields, got 1023",
        ),
        "non-integer": (
            [write("float.csv", cell("3.5"))],
            "float.csv:4 column pix42: pixel '3.5' is not an integer",
        ),
        "empty cell": (
            [write("blank.csv", cell(""))],
            "blank.csv:4 column pix42: empty pixel value",
        ),
        "NaN": (
            [write("nan.csv", cell("NaN"))],
            "nan.csv:4 column pix42: pixel 'NaN' is not an integer",
        ),
        "out of range": (
            [write("big.csv", cell("256"))],
            "big.csv:4 column pix42: pixel 256 is out of range 0..255",
        ),
        "truncated gz": ([write("cut.csv.gz", gz[: len(gz) // 2])], "cut.csv.gz"),
        "model mismatch": (
            [str(eval_csv), "--model", str(tmp / "mnist784.onnx")],
            "is neither uint8 [batch, pixels] rows nor float",
        ),
        "unreadable model": (
            [str(eval_csv), "--model", write("junk.onnx", b"\x00junk")],
            "not a loadable ONNX model",
        ),
        "missing model": (
            [str(eval_csv), "--model", str(tmp / "none.onnx")],
            "none.onnx: no such model file",
        ),
        "unwritable output": (  # a missing directory is created; a file in the way is not
            [str(eval_csv), "-o", str(Path(write("blocker", b"")) / "results.csv")],
            "blocker: cannot create the output directory",
        ),
    }


CASES = [
    "missing file",
    "empty file",
    "no ID column",
    "pixel columns",
    "ragged row",
    "non-integer",
    "empty cell",
    "NaN",
    "out of range",
    "truncated gz",
    "model mismatch",
    "unreadable model",
    "missing model",
    "unwritable output",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_leaves_no_output(tmp_path, exported, eval_csv, case):
    args, message = _bad_cases(tmp_path, eval_csv)[case]
    out = tmp_path / "results.csv"
    out.write_text("previous results\n")  # replaced only on success
    if "-o" not in args:
        args = [*args, "-o", str(out)]
    if "--model" not in args:
        args = [*args, "--model", str(exported)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert out.read_text() == "previous results\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_truncated_gzip_names_the_problem(tmp_path, eval_csv, exported):
    gz = gzip.compress(eval_csv.read_bytes())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="truncated gzip"):
        predict_csv(path, tmp_path / "r.csv", exported)


def test_interrupt_leaves_no_partial_output(tmp_path, exported, eval_csv, monkeypatch):
    calls = {"n": 0}
    real_run = Predictor._fetch

    def interrupted(self, pixels, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_run(self, pixels, *args)

    monkeypatch.setattr(Predictor, "_fetch", interrupted)
    out = tmp_path / "results.csv"
    result = CliRunner().invoke(
        main, [str(eval_csv), "--model", str(exported), "-o", str(out), "--batch-size", "16"]
    )
    assert result.exit_code == 130 and "interrupted" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cuda_request_without_cuda_is_an_error(exported):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime has CUDA here")
    with pytest.raises(ProviderError, match="no CUDAExecutionProvider"):
        Predictor(exported, provider="cuda")
    assert Predictor(exported, provider="auto").provider == "cpu"


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1),  # cgroup v2: 1.5 CPUs -> 1 thread
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_threads_follow_the_cpu_quota(tmp_path, monkeypatch, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert available_cpus(tmp_path) == (8 if quota is None else quota)


def test_infer_never_imports_torch(tmp_path, exported, eval_csv):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import fcls.infer, fcls.infer.cli.infer\n"
        "from fcls.infer import predict_csv\n"
        f"s = predict_csv({str(eval_csv)!r}, {str(tmp_path / 'r.csv')!r}, {str(exported)!r})\n"
        "assert s.rows == %d, s\n"
        "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
        % N_ROWS
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_stream_source(exported, eval_csv, tmp_path):
    out = tmp_path / "r.csv"
    summary = predict_csv(io.BytesIO(eval_csv.read_bytes()), out, exported)
    assert summary.rows == N_ROWS


@pytest.mark.slow
def test_real_evaluate_csv_matches_independent_pytorch(tmp_path, fashion_trained, shared_data):
    import notebook_port as nb
    import torch

    from fcls.export import export_onnx
    from fcls.infer.formats.csvfile import CsvReader

    model_onnx = tmp_path / "model.onnx"
    export_onnx(fashion_trained, model_onnx, log=lambda s: None)
    out = tmp_path / "results.csv"
    summary = predict_csv(shared_data / "evaluate.csv.gz", out, model_onnx)
    assert summary.rows == 17_500
    table = _read(out)
    assert table[0] == ["ID", "label"] and len(table) == 17_501
    assert [r[0] for r in table[1:]] == [str(i) for i in range(17_500)]
    pixels = np.concatenate([c.pixels for c in CsvReader(shared_data / "evaluate.csv.gz")])
    reference = nb.load(torch.load(fashion_trained, weights_only=True)["model"])
    expected = nb.predict_logits(reference, pixels).argmax(1)
    np.testing.assert_array_equal([int(r[1]) for r in table[1:]], expected)


def test_int8_runs_one_session_per_cpu_with_the_same_labels(tmp_path, exported, rows):
    from fcls.export.graph import set_metadata
    from fcls.export.variants import quantize_int8

    int8 = tmp_path / "model.int8.onnx"
    quantize_int8(exported, int8, rows[0][:128])
    set_metadata(int8, {"variant": "int8"})
    split = Predictor(int8, provider="cpu", threads=2)
    single = Predictor(int8, provider="cpu", threads=1)
    assert len(split.replicas) == 2 and len(single.replicas) == 1
    assert len(Predictor(exported, provider="cpu", threads=2).replicas) == 1  # fp32: one session
    pixels = rows[0]
    for n in (1, 7, 300):
        np.testing.assert_array_equal(split.predict(pixels[:n]), single.predict(pixels[:n]))
    np.testing.assert_allclose(split.predict_proba(pixels), single.predict_proba(pixels), atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 2000),
    batch_size=st.integers(1, 300),
    takers=st.integers(1, 8),
    smallest=st.integers(1, 64),
)
def test_claims_hand_out_every_row_once_in_order(rows, batch_size, takers, smallest):
    from fcls.infer.engine.predictor import Claims

    claims = Claims(rows, batch_size, takers, smallest)
    ranges = list(iter(claims.take, None))
    assert ranges[0].start == 0 and ranges[-1].stop == rows
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))  # contiguous, no overlap
    sizes = [r.stop - r.start for r in ranges]
    assert all(0 < s <= batch_size for s in sizes)
    assert all(s >= min(smallest, batch_size) for s in sizes[:-1])
    assert claims.take() is None


def test_claims_shrink_near_the_end_so_sessions_finish_together():
    from fcls.infer.engine.predictor import Claims

    claims = Claims(773, 64, 2, 8)
    sizes = [r.stop - r.start for r in iter(claims.take, None)]
    assert sizes[:11] == [64] * 11  # whole batches while plenty remain
    assert sizes[11:] == [35, 17, 9, 8]  # then what is left, shared out, down to 8 rows


def test_claims_taken_from_many_threads_cover_every_row_once():
    from concurrent.futures import ThreadPoolExecutor

    from fcls.infer.engine.predictor import Claims

    claims = Claims(100_000, 7, 4, 2)
    with ThreadPoolExecutor(4) as pool:
        taken = pool.map(lambda _: list(iter(claims.take, None)), range(4), timeout=30)
        ranges = sorted((r for part in taken for r in part), key=lambda r: r.start)
    assert sum(r.stop - r.start for r in ranges) == 100_000
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, exported, rows) -> Path:
    from fcls.export.graph import set_metadata
    from fcls.export.variants import quantize_int8

    int8 = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    quantize_int8(exported, int8, rows[0][:128])
    set_metadata(int8, {"variant": "int8"})
    return int8


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("proba", [False, True])
def test_default_run_gives_the_bytes_of_the_old_defaults(
    tmp_path, exported, int8_model, digits, precision, proba
):
    """The same model file and input give the same output bytes with today's defaults as
    with the settings fcls-infer used before (batch 64, one session, no spreading)."""
    import hashlib

    model = exported if precision == "fp32" else int8_model
    rng = np.random.default_rng(0)
    pixels = digits[0][rng.integers(0, len(digits[0]), 2_500)]
    src = write_eval_csv(tmp_path / "in.csv", pixels)
    old_defaults = Predictor(model, "cpu", 1, spinning=False)
    old = predict_csv(src, tmp_path / "old.csv", old_defaults, batch_size=64, proba=proba)
    new = predict_csv(src, tmp_path / "new.csv", model, provider="cpu", threads=2, proba=proba)
    assert old.rows == new.rows == 2_500
    if proba:  # ten probabilities a row, printed in full: any change in the arithmetic shows
        assert len({row[2] for row in _read(tmp_path / "old.csv")[1:]}) > 1_000
    digest = [
        hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("old.csv", "new.csv")
    ]
    assert digest[0] == digest[1]


class _FailingSession:
    """Stands in for a replica's runner: fails on its `fail_at`-th call."""

    def __init__(self, real, fail_at: int) -> None:
        self.real, self.fail_at, self.calls = real, fail_at, 0

    def __call__(self, want, rows):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("replica session failed")
        return self.real(want, rows)


@pytest.mark.parametrize("which", [0, 1])
def test_a_failing_replica_stops_the_spread_and_raises(int8_model, rows, which):
    predictor = Predictor(int8_model, provider="cpu", threads=2)
    assert len(predictor.replicas) == 2
    predictor.replicas[which] = _FailingSession(predictor.replicas[which], fail_at=2)
    with deadline(60), pytest.raises(RuntimeError, match="replica session failed"):
        predictor.run_batches(rows[0], 16)
    labels, _ = predictor.run_batches(rows[0], 16)  # the wrapper fails once: all works again
    np.testing.assert_array_equal(labels, Predictor(int8_model, "cpu", 1).predict(rows[0]))
