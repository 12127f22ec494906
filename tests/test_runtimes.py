"""Runtimes: OpenVINO beside onnxruntime, bf16 and its refusals (infer/engine/runtimes.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    deadline,
    one_error_line,
    oserror,
    run_cli,
    sparse_pixels,
    tiny_model,
    write_eval_csv,
)

from fcls.infer.cli.eval import main as eval_main
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common import system
from fcls.infer.common.errors import ConfigError, ModelError, OutputError, ProviderError
from fcls.infer.common.extras import MissingExtraError
from fcls.infer.engine import stages
from fcls.infer.engine.options import ScoringOptions
from fcls.infer.engine.pipeline import predict_csv
from fcls.infer.engine.predictor import Predictor
from fcls.infer.engine.resume import resume_paths
from fcls.infer.engine.runtimes import (
    BF16_CHECK_KEY,
    Choice,
    check_bf16_passed,
    check_cpu_bf16,
    native_bf16,
)

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason='openvino is not installed ("fcls[openvino]")',
)
needs_bf16 = pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """2,000 sparse rows: about 60 blocks of 64 KiB."""
    return write_eval_csv(tmp_path_factory.mktemp("data") / "data.csv", sparse_pixels(2000))


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, exported) -> Path:
    from fcls.export.graph import set_metadata
    from fcls.export.variants import quantize_int8

    path = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    quantize_int8(exported, path, sparse_pixels(128))
    set_metadata(path, {"variant": "int8"})
    return path


def _with_bf16_check(src: Path, dst: Path, passed: bool) -> Path:
    from fcls.export.graph import set_metadata

    dst.write_bytes(src.read_bytes())
    set_metadata(dst, {BF16_CHECK_KEY: json.dumps({"passed": passed, "agreement": 0.98})})
    return dst


# -- choices and refusals (no OpenVINO needed) --------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "precision", "match"),
    [
        ("tensorrt", "fp32", "runtime 'tensorrt': expected onnxruntime or openvino"),
        ("openvino", "fp16", "precision 'fp16': expected fp32 or bf16"),
        ("onnxruntime", "bf16", "--precision bf16 runs through OpenVINO: add --runtime openvino"),
    ],
)
def test_choices_that_cannot_run_are_refused(runtime, precision, match):
    with pytest.raises(ConfigError, match=match):
        Choice(runtime, precision)
    with pytest.raises(ConfigError, match=match):
        ScoringOptions(runtime=runtime, precision=precision)


@pytest.mark.parametrize(
    ("features", "native"),
    [
        ([], False),
        (["AVX2"], False),
        (["AVX2", "AVX-512", "VNNI"], False),
        (["AVX2", "AVX-512", "VNNI", "AVX512-BF16"], True),
        (["AVX2", "AVX-512", "AMX"], True),
    ],
)
def test_native_bf16_by_cpu_flags(features, native):
    assert native_bf16(features) is native
    if native:
        check_cpu_bf16(features)
    else:
        with pytest.raises(ConfigError, match="neither avx512_bf16 nor amx") as info:
            check_cpu_bf16(features)
        assert "use --precision fp32" in str(info.value)


def test_bf16_needs_a_passed_check(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match=r"has none; make one: fcls-export .* --bf16"):
        check_bf16_passed(path, {})
    with pytest.raises(ModelError, match=r"bf16 check failed .*0\.9800"):
        check_bf16_passed(path, {BF16_CHECK_KEY: json.dumps({"passed": False, "agreement": 0.98})})
    with pytest.raises(ModelError, match="has none"):
        check_bf16_passed(path, {BF16_CHECK_KEY: "{not json"})
    check_bf16_passed(path, {BF16_CHECK_KEY: json.dumps({"passed": True})})


def test_the_runtime_is_recorded_for_resume_only_when_set():
    assert "runtime" not in ScoringOptions().identity()  # journals of older runs still resume
    chosen = ScoringOptions(runtime="openvino", precision="bf16").identity()
    assert chosen["runtime"] == "openvino" and chosen["precision"] == "bf16"


def test_without_openvino_the_runtime_names_the_extra(tmp_path, tiny, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "fcls\[openvino\]"'):
        Predictor(tiny, "cpu", runtime="openvino")
    out = tmp_path / "r.csv"
    result = run_cli(infer_main, data, "-m", tiny, "-o", out, "--runtime", "openvino", code=5)
    assert 'needs openvino, which is not installed: pip install "fcls[openvino]"' in one_error_line(
        result
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bf16_with_onnxruntime_is_one_line(tmp_path, tiny, data):
    result = run_cli(
        infer_main, data, "-m", tiny, "-o", tmp_path / "r.csv", "--precision", "bf16", code=1
    )
    assert "add --runtime openvino" in one_error_line(result)


# -- OpenVINO ------------------------------------------------------------------------------


@needs_openvino
def test_openvino_fp32_agrees_with_onnxruntime(exported):
    pixels = sparse_pixels(600, seed=3)
    ort_model = Predictor(exported, "cpu", threads=2)
    ov_model = Predictor(exported, "cpu", threads=2, runtime="openvino")
    assert ov_model.runtime_line.startswith("OpenVINO ") and " f32" in ov_model.runtime_line
    a, b = ort_model.logits_batches(pixels, 64), ov_model.logits_batches(pixels, 64)
    np.testing.assert_allclose(a, b, atol=1e-3 * max(1.0, float(np.abs(a).max())))
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.999
    labels, proba = ov_model.run_batches(pixels, 64, proba=True)
    assert labels.dtype == np.int64 and proba is not None and proba.shape == a.shape


@needs_openvino
def test_openvino_int8_agrees_with_onnxruntime_int8(int8_model):
    pixels = sparse_pixels(600, seed=4)
    ort_labels = Predictor(int8_model, "cpu", threads=2).predict(pixels)
    ov_model = Predictor(int8_model, "cpu", threads=2, runtime="openvino")
    assert (ov_model.predict(pixels) == ort_labels).mean() >= 0.995


@needs_openvino
def test_openvino_refuses_cuda_and_bf16_on_a_variant(exported, int8_model):
    with pytest.raises(ProviderError, match="--runtime openvino runs on the CPU"):
        Predictor(exported, "cuda", runtime="openvino")
    with pytest.raises(ConfigError, match="bf16 runs the fp32 model file, this is the int8"):
        Predictor(int8_model, "cpu", runtime="openvino", precision="bf16")


@needs_openvino
def test_bf16_refused_on_a_cpu_without_it(exported, monkeypatch):
    monkeypatch.setattr(system, "cpu_features", lambda: ["AVX2", "AVX-512", "VNNI"])
    with pytest.raises(ConfigError, match="found: AVX2 AVX-512 VNNI"):
        Predictor(exported, "cpu", runtime="openvino", precision="bf16", bf16_check=False)


@needs_openvino
@needs_bf16
def test_bf16_runs_a_checked_model_and_refuses_others(tmp_path, exported):
    with pytest.raises(ModelError, match="needs a passed bf16 check"):
        Predictor(exported, "cpu", runtime="openvino", precision="bf16")
    failed = _with_bf16_check(exported, tmp_path / "failed.onnx", passed=False)
    with pytest.raises(ModelError, match="its bf16 check failed"):
        Predictor(failed, "cpu", runtime="openvino", precision="bf16")
    checked = _with_bf16_check(exported, tmp_path / "checked.onnx", passed=True)
    model = Predictor(checked, "cpu", threads=2, runtime="openvino", precision="bf16")
    assert " bf16" in model.runtime_line
    pixels = sparse_pixels(600, seed=5)
    reference = Predictor(exported, "cpu").predict(pixels)
    assert (model.run_batches(pixels, 64)[0] == reference).mean() >= 0.99


@needs_openvino
def test_fcls_infer_and_eval_with_openvino(tmp_path, exported, trained, data):
    ref, out = tmp_path / "ort.csv", tmp_path / "ov.csv"
    run_cli(infer_main, data, "-m", exported, "-o", ref, "-q")
    result = run_cli(infer_main, data, "-m", exported, "-o", out, "--runtime", "openvino", "-v")
    assert "OpenVINO" in result.output
    a, b = ref.read_text().splitlines(), out.read_text().splitlines()
    assert a[0] == b[0] and len(a) == len(b) == 2001
    assert sum(x == y for x, y in zip(a, b)) >= 0.999 * len(a)
    report = tmp_path / "report"
    labelled = trained / "test_labelled.csv"
    args = ["--runtime", "openvino", "--json"]
    result = run_cli(eval_main, labelled, "-m", exported, "-o", report, *args)
    written = json.loads((report / "report.json").read_text())
    assert written["models"][0]["runtime"].startswith("OpenVINO ")
    assert 0.0 <= json.loads(result.stdout)["models"][0]["accuracy"] <= 1.0


@needs_openvino
def test_resume_with_openvino_gives_the_bytes_of_one_run(tmp_path, tiny, data, monkeypatch):
    expected, out = tmp_path / "e.csv", tmp_path / "r.csv"
    predict_csv(data, expected, tiny, runtime="openvino")
    calls = {"n": 0}
    real = stages.format_rows

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 30:
            raise oserror(28)
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "format_rows", failing)
    options = {"chunk_bytes": 1 << 16, "checkpoint_seconds": 0, "runtime": "openvino"}
    with deadline(120), pytest.raises(OutputError):
        predict_csv(data, out, tiny, resume=True, **options)
    monkeypatch.undo()
    assert all(p.exists() for p in resume_paths(out))
    with pytest.raises(ConfigError, match="option --runtime differs"):
        predict_csv(data, out, tiny, resume=True)  # onnxruntime would write other bytes
    summary = predict_csv(data, out, tiny, resume=True, **options)
    assert summary.resumed > 0 and summary.rows == 2000
    assert out.read_bytes() == expected.read_bytes()


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_results_do_not_depend_on_the_batch_size(exported, precision):
    if precision == "bf16" and not native_bf16():
        pytest.skip("this CPU has no native bf16")
    model = Predictor(
        exported,
        "cpu",
        runtime="openvino",
        precision=precision,
        bf16_check=False,
        batch_invariant=True,
    )
    pixels = sparse_pixels(300, seed=6)
    reference = model.logits_batches(pixels, 64)
    for batch in (1, 2, 5, 7, 15, 16, 17, 40, 300):
        np.testing.assert_array_equal(model.logits_batches(pixels, batch), reference, str(batch))


@needs_openvino
def test_openvino_direct_calls_run_beside_a_spread(exported):
    """A call of a few rows while a spread over the streams is still running uses an infer
    request of its own: both give the results they give alone."""
    model = Predictor(exported, "cpu", threads=2, runtime="openvino")
    assert model.asynchronous and len(model.replicas) == 2
    big, small = sparse_pixels(2000, seed=7), sparse_pixels(5, seed=8)
    alone_big, alone_small = model.logits_batches(big, 64), model.logits_batches(small, 64)
    with deadline(60):
        later = model.submit_logits(big, 64)
        during = [model.logits_batches(small, 64) for _ in range(20)]
        np.testing.assert_array_equal(later(), alone_big)
    for out in during:
        np.testing.assert_array_equal(out, alone_small)


@needs_openvino
def test_openvino_without_batch_invariance_still_agrees(exported):
    model = Predictor(exported, "cpu", runtime="openvino")  # batch_invariant off: the default
    pixels = sparse_pixels(40, seed=9)
    reference = Predictor(exported, "cpu").logits(pixels)
    got = np.concatenate([model.logits(pixels[i : i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(got, reference, atol=1e-3 * max(1.0, float(np.abs(reference).max())))


@needs_openvino
def test_a_model_openvino_cannot_compile_is_one_model_error(tmp_path, tiny, data, monkeypatch):
    import openvino

    def refuse(self, *args, **kwargs):
        raise RuntimeError("Exception from src/core: unsupported operation\nsecond line")

    monkeypatch.setattr(openvino.Core, "compile_model", refuse)
    with pytest.raises(ModelError, match=r"OpenVINO cannot compile it \(Exception from"):
        Predictor(tiny, "cpu", runtime="openvino")
    result = run_cli(
        infer_main, data, "-m", tiny, "-o", tmp_path / "r.csv", "--runtime", "openvino", code=3
    )
    assert "unsupported operation" in one_error_line(result) and "second line" not in result.output
    assert not (tmp_path / "r.csv").exists()
