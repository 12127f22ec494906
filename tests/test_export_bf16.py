"""fcls-export --bf16: OpenVINO bf16 checked against fp32 on the held-out rows and recorded."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import onnx
import pytest
from helpers import one_error_line, run_cli

from fcls.export import ExportConfig, export_onnx
from fcls.export import api as export_api
from fcls.export.cli import main as export_main
from fcls.export.graph import read_metadata
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common import system
from fcls.infer.common.errors import ConfigError
from fcls.infer.common.extras import EXTRA_OF, MissingExtraError
from fcls.infer.common.spec import DEFAULT_BATCH_SIZE
from fcls.infer.engine import runtimes
from fcls.infer.engine.predictor import Predictor
from fcls.infer.engine.runtimes import BF16_CHECK_KEY, BF16_MIN_AGREEMENT
from fcls.train.checkpoint import Checkpoint

pytestmark = pytest.mark.slow

FIELDS = {
    "passed",
    "agreement",
    "rows",
    "accuracy_fp32",
    "accuracy_bf16",
    "min_agreement",
    "max_accuracy_drop",
    "speed_ratio",
    "img_per_s",
    "batch_size",
    "timed_rows",
    "cpu",
    "openvino",
}
# The offset added to fc4's BatchNorm output and taken back out through fc5's bias: fp32
# computes the same labels, bf16 (8 bits of mantissa) rounds the 64-wide hidden activations
# to steps of a quarter, far coarser than their spread, and its labels collapse. (An offset
# on the logits themselves does not fail: OpenVINO adds the last layer's bias in fp32.)
HIDDEN_OFFSET = 64.0


def _needs_native_bf16() -> None:
    pytest.importorskip("openvino")
    if not runtimes.native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")


def _recorded(model: Path) -> dict:
    return json.loads(read_metadata(model)[BF16_CHECK_KEY])


def _parity_json(model: Path) -> dict:
    return json.loads(model.with_name(f"{model.stem}.parity.json").read_text())


def test_bf16_check_passes_and_unlocks_bf16_scoring(
    tmp_path: Path, trained: Path, digits, monkeypatch
):
    _needs_native_bf16()
    before: list[bytes] = []
    record = export_api._record_bf16

    def spy(build, check):  # the published fp32 file just before its rewrite
        before.append(build.dest.read_bytes())
        record(build, check)

    monkeypatch.setattr(export_api, "_record_bf16", spy)
    dest, lines = tmp_path / "model.onnx", []
    config = ExportConfig(optimize=True, bf16=True)
    result = export_onnx(trained / "model.pt", dest, config, log=lines.append)
    check = _recorded(dest)
    assert set(check) == FIELDS and check == result.bf16 == _parity_json(dest)["bf16"]
    assert check["passed"] is True and check["agreement"] >= BF16_MIN_AGREEMENT
    assert check["min_agreement"] == BF16_MIN_AGREEMENT and check["rows"] > 0
    assert check["accuracy_fp32"] is not None and check["accuracy_bf16"] is not None
    speeds = check["img_per_s"]
    assert list(speeds) == ["onnxruntime fp32", "openvino fp32", "openvino bf16"]
    assert all(v > 0 for v in speeds.values())
    ratio = speeds["openvino bf16"] / speeds["onnxruntime fp32"]
    assert check["speed_ratio"] == pytest.approx(ratio, rel=1e-3)
    assert check["batch_size"] == DEFAULT_BATCH_SIZE and check["timed_rows"] >= DEFAULT_BATCH_SIZE
    assert check["cpu"] == system.describe_cpu()
    assert check["openvino"] == runtimes.openvino_version()
    assert any(line.startswith("bf16 check (OpenVINO ") for line in lines)
    # the rewrite added one metadata entry: graph and every other entry byte-identical
    model = onnx.load(str(dest))
    keys = [p.key for p in model.metadata_props]
    del model.metadata_props[keys.index(BF16_CHECK_KEY)]
    assert len(before) == 1 and model.SerializeToString() == before[0]
    Predictor(dest.with_name("model.opt.onnx"))  # the variant still matches its fp32 model
    # the recorded check unlocks bf16 scoring; its labels agree on rows the run never read
    pixels = digits[0][400:]
    with (
        Predictor(dest, "cpu") as fp32,
        Predictor(dest, "cpu", runtime="openvino", precision="bf16") as bf16,
    ):
        agree = (fp32.run(pixels)[0] == bf16.run(pixels)[0]).mean()
    assert agree >= BF16_MIN_AGREEMENT
    out = tmp_path / "pred.csv"
    args = ("-m", dest, "-o", out, "--runtime", "openvino", "--precision", "bf16")
    run_cli(infer_main, trained / "test.csv", *args)
    assert len(out.read_text().splitlines()) > 1


def _offset_checkpoint(trained: Path, path: Path) -> Path:
    """The trained checkpoint with HIDDEN_OFFSET carried through its last hidden layer."""
    ckpt = Checkpoint.load(trained / "model.pt")
    weights = dict(ckpt.weights)
    weights["fc4_bn.bias"] = weights["fc4_bn.bias"] + HIDDEN_OFFSET
    weights["fc5.bias"] = weights["fc5.bias"] - HIDDEN_OFFSET * weights["fc5.weight"].sum(1)
    return dataclasses.replace(ckpt, weights=weights).save(path)


def test_bf16_check_fails_on_a_model_made_to_fail(tmp_path: Path, trained: Path, digits):
    _needs_native_bf16()
    source, dest = _offset_checkpoint(trained, tmp_path / "offset.pt"), tmp_path / "model.onnx"
    result = run_cli(export_main, source, "-o", dest, "--bf16", code=3)  # a failed gate
    line = one_error_line(result)
    assert "bf16 check failed: top-1 agreement 0." in line
    assert f"< {BF16_MIN_AGREEMENT} on " in line and " held-out rows" in line
    assert "recorded in model.onnx" in line
    check = _recorded(dest)
    assert check["passed"] is False and check["agreement"] < 0.5
    assert _parity_json(dest)["bf16"] == check
    # it really fails: on rows the run never read, bf16's labels are mostly not fp32's
    pixels = digits[0][400:]
    with (
        Predictor(dest, "cpu") as fp32,
        Predictor(dest, "cpu", runtime="openvino", precision="bf16", bf16_check=False) as bf16,
    ):
        assert (fp32.run(pixels)[0] == bf16.run(pixels)[0]).mean() < 0.5
    args = ("-m", dest, "-o", tmp_path / "pred.csv", "--runtime", "openvino")
    refused = run_cli(infer_main, trained / "test.csv", *args, "--precision", "bf16", code=3)
    assert "its bf16 check failed" in one_error_line(refused)
    run_cli(infer_main, trained / "test.csv", *args)  # fp32 is unaffected


def test_bf16_skipped_without_native_bf16(tmp_path: Path, trained: Path, monkeypatch):
    pytest.importorskip("openvino")
    no_bf16 = ["AVX2", "AVX-512", "VNNI"]
    monkeypatch.setattr(system, "cpu_features", lambda *a: no_bf16)
    dest = tmp_path / "model.onnx"
    result = run_cli(export_main, trained / "model.pt", "-o", dest, "--bf16")
    notices = [line for line in result.output.splitlines() if "--bf16 skipped" in line]
    assert len(notices) == 1 and "avx512_bf16 nor amx_tile" in notices[0]
    assert "found: AVX2 AVX-512 VNNI" in notices[0]
    assert BF16_CHECK_KEY not in read_metadata(dest)
    assert "bf16" not in _parity_json(dest)


def test_bf16_without_openvino_is_one_line(tmp_path: Path, trained: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails
    dest = tmp_path / "model.onnx"
    result = run_cli(export_main, trained / "model.pt", "-o", dest, "--bf16", code=5)
    line = one_error_line(result)
    assert "fcls-export --bf16 needs openvino, which is not installed" in line
    assert f'pip install "fcls[{EXTRA_OF["openvino"]}]"' in line
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    # before any work: a checkpoint that is not there is not even looked at
    with pytest.raises(MissingExtraError):
        export_onnx(tmp_path / "missing.pt", dest, ExportConfig(bf16=True), log=print)


def test_bf16_refuses_random_gate_images(tmp_path: Path, trained: Path):
    _needs_native_bf16()
    ckpt = dataclasses.replace(Checkpoint.load(trained / "model.pt"), data=None)
    with pytest.raises(ConfigError, match=r"--bf16 needs real images to gate on.*--data"):
        export_onnx(ckpt, tmp_path / "m.onnx", ExportConfig(bf16=True), log=lambda s: None)
    assert list(tmp_path.iterdir()) == []
