"""fcls-bench's runtime rows: fcls's OpenVINO runtime (fp32, bf16, int8), the polars + OpenVINO
script, --runtime, and the fastest-path line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fcls.bench import artifacts, backends, runner
from fcls.bench.artifacts import models_from
from fcls.bench.backends import PEERS_HINT, ROUTES, bf16_missing
from fcls.bench.cli import main
from fcls.bench.errors import BenchError
from fcls.bench.fastest import fastest_path, format_fastest
from fcls.bench.runner import BenchConfig, plan_backends
from fcls.infer.engine.runtimes import native_bf16

SMALL = ["--batch-sizes", "1,4", "--seconds", "0.05", "--ingest-rows", "0"]
CPU = "Some CPU, 2 CPUs, AVX2"


def _openvino() -> None:
    pytest.importorskip("openvino", reason=f"openvino is not installed ({PEERS_HINT})")


@pytest.fixture(scope="module")
def ov_model(tmp_path_factory, trained: Path) -> Path:
    """The `trained` checkpoint exported with int8 and, where this CPU computes bf16
    natively, the bf16 check (both gates pass on its own held-out rows); the fp32 path,
    with model.pt beside it."""
    _openvino()
    from fcls.export import ExportConfig, export_onnx

    folder = tmp_path_factory.mktemp("ov")
    shutil.copy(trained / "model.pt", folder / "model.pt")
    config = ExportConfig(int8=True, bf16=native_bf16())
    export_onnx(folder / "model.pt", folder / "model.onnx", config, log=lambda s: None)
    return folder / "model.onnx"


def _bench(monkeypatch, *args: str) -> tuple[int, str]:
    """fcls-bench in this process, as tests/test_bench.py runs it."""
    from test_bench import _Inline

    monkeypatch.setattr(runner, "ProcessPoolExecutor", _Inline)
    monkeypatch.setattr(runner, "matmul_ceiling", lambda seconds: (100.0, "fixed for the test"))
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _e2e(pipeline: str, runtime: str, precision: str, rows_per_s: float, ok: bool | None):
    return {
        "pipeline": pipeline,
        "kind": "script" if "script" in pipeline else "fcls-infer",
        "runtime": runtime,
        "precision": precision,
        "rows_per_s": rows_per_s,
        "agreement_ok": ok,
    }


def _row(backend: str, batch: int, img_s: float, ok: bool | None) -> dict:
    return {"backend": backend, "batch": batch, "throughput": img_s, "agreement_ok": ok}


MODELS = {"ort": "/m/model.onnx", "ort-int8": "/m/model.int8.onnx"}


def test_fastest_path_is_the_fastest_route_that_passed():
    report = {
        "models": MODELS,
        "agreement_rows": 80,
        "rows": [_row("ort", 64, 900, True), _row("fcls-ov-int8", 64, 3000, True)],
        "e2e": [
            _e2e("notebook (pandas + torch)", None, None, 100, True) | {"kind": "notebook"},
            _e2e("fcls-infer ort fp32", "onnxruntime", "fp32", 1000, True),
            _e2e("polars+ov script int8", "openvino", "int8", 9000, True),  # a script: not fcls
            _e2e("fcls-infer ort int8", "onnxruntime", "int8", 1800, True),
            _e2e("fcls-infer ov bf16", "openvino", "bf16", 2500, False),  # fastest, but wrong
            _e2e("fcls-infer ov int8", "openvino", "int8", 2000, True),
        ],
    }
    got = fastest_path(report, CPU)
    assert got is not None
    assert (got["runtime"], got["precision"], got["basis"]) == ("openvino", "int8", "end to end")
    assert got["vs_ort_fp32"] == pytest.approx(2.0) and got["unit"] == "rows/s"
    assert format_fastest(got) == (
        "fastest here: fcls-infer -m model.int8.onnx --runtime openvino, 2.00x onnxruntime fp32 "
        f"end to end ({CPU})"
    )
    # its model-alone row failing takes a route out too, however fast it ran end to end
    report["rows"].append(_row("fcls-ov-int8", 1, 50, False))
    got = fastest_path(report, CPU)
    assert got is not None and (got["runtime"], got["precision"]) == ("onnxruntime", "int8")
    assert got["command"] == "fcls-infer -m model.int8.onnx"


def test_fastest_path_model_alone_and_when_none_passed():
    rows = [_row("ort", 1, 500, True), _row("ort", 64, 1000, True)]
    rows += [_row("fcls-ov-bf16", 64, 1930, True), _row("fcls-ov-bf16", 1, 9000, True)]
    rows += [_row("ov-bf16", 64, 5000, True), _row("ort-opt", 64, 4000, True)]  # not routes
    report = {"models": MODELS, "agreement_rows": 80, "rows": rows}
    got = fastest_path(report, CPU)
    assert got is not None and got["basis"] == "model alone, batch 64"  # fcls-infer's batch
    assert format_fastest(got) == (
        "fastest here: fcls-infer --runtime openvino --precision bf16, 1.93x onnxruntime fp32 "
        f"model alone, batch 64 ({CPU})"
    )
    for r in rows:
        r["agreement_ok"] = False
    assert fastest_path(report, CPU) is None
    assert format_fastest(None) == (
        "fastest here: none of fcls's runtimes passed its agreement checks"
    )


def test_fastest_path_without_a_check_set_or_onnxruntime_fp32():
    """No data of the model's: nothing was checked, the line says so; --runtime openvino: no
    onnxruntime fp32 run to divide by."""
    report = {
        "models": MODELS,
        "agreement_rows": None,
        "rows": [_row("fcls-ov", 64, 800, None)],
        "e2e": [_e2e("fcls-infer ov fp32", "openvino", "fp32", 700, None)],
    }
    got = fastest_path(report, CPU)
    assert got is not None and got["vs_ort_fp32"] is None and not got["labels_checked"]
    assert format_fastest(got) == (
        "fastest here: fcls-infer --runtime openvino, 700 rows/s (onnxruntime fp32 not in this "
        f"run) end to end, labels not checked (see the notes) ({CPU})"
    )
    report["agreement_rows"] = 80  # checked, but this row's figure missing: not a pass
    assert fastest_path(report, CPU) is None


def test_openvino_script_labels_equal_fcls_openvino(tmp_path: Path, ov_model: Path):
    from fcls.bench.e2e import fcls_pipeline, openvino_script_pipeline, script_pipeline

    src = artifacts.eval_csv(tmp_path, 300)
    int8 = ov_model.with_name("model.int8.onnx")
    cases = [("fp32", ov_model), ("int8", int8)] + [("bf16", ov_model)] * native_bf16()
    for precision, model in cases:
        hint = "bf16" if precision == "bf16" else "fp32"
        ours = fcls_pipeline("f", src, tmp_path / "f.csv", model, None, None, "openvino", hint)
        script = openvino_script_pipeline("s", src, tmp_path / "s.csv", model, hint)
        assert script.rows == ours.rows == 300
        np.testing.assert_array_equal(script.labels, ours.labels, err_msg=precision)
    ort = script_pipeline("o", src, tmp_path / "o.csv", ov_model)
    ours = fcls_pipeline("f", src, tmp_path / "f.csv", ov_model, None, None, "openvino")
    assert (ort.labels == ours.labels).mean() >= backends.OV_FP32_AGREEMENT


def test_fcls_openvino_rows_agree_and_show_what_ran(monkeypatch, tmp_path: Path, ov_model: Path):
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "-m", str(ov_model), *SMALL, "--no-e2e", "--workdir", str(tmp_path),
        "--summary-json", str(out),
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(out.read_text())
    rows = {(r["backend"], r["batch"]): r for r in report["rows"]}
    own = ["fcls-ov", "fcls-ov-int8"] + ["fcls-ov-bf16"] * native_bf16()
    for name in own:
        r = rows[name, 4]
        assert r["agreement_ok"] is True and r["agreement_with"] == backends.AGREES_WITH[name]
        # the streams follow the CPUs: one single-threaded stream per CPU
        assert r["provider"].startswith("OpenVINO ") and re.search(
            r"\d+ streams? x 1 thread", r["provider"]
        )
    assert " CPU bf16," in rows.get(("fcls-ov-bf16", 4), {"provider": " CPU bf16,"})["provider"]
    assert (("ov-bf16", 4) in rows) == native_bf16()
    pairs = {q["precision"] for q in report["peers"]}
    assert {"fp32, fcls OV", "int8, fcls OV"} <= pairs
    assert ("bf16, fcls OV" in pairs) == native_bf16()
    assert report["fastest"]["basis"] == "model alone, batch 4"
    assert [x for x in output.splitlines() if x.startswith("fastest here: fcls-infer")]
    assert not any("bf16 rows skipped" in n for n in report["notes"]) or not native_bf16()


def test_runtime_restricts_rows_and_pipelines(monkeypatch, tmp_path: Path, ov_model: Path):
    models = models_from(ov_model, None)
    assert models.checkpoint is not None  # model.pt beside it
    names = {r: [n for n, _ in plan_backends(models, None, r)] for r in ("onnxruntime", "openvino")}
    assert names["onnxruntime"] == ["torch", "ort", "ort-int8"]
    assert names["openvino"][0] == "torch"
    assert all(n.startswith(("fcls-ov", "ov-")) for n in names["openvino"][1:])
    with pytest.raises(BenchError, match=r"--backends fcls-ov: an openvino row, not run by"):
        plan_backends(models, ("fcls-ov",), "onnxruntime")
    plans = {
        r: [name for name, _, _ in runner._e2e_plan(BenchConfig(runtime=r), models)]
        for r in ("onnxruntime", "openvino", "all")
    }
    assert plans["onnxruntime"] == [
        "fcls-infer ort fp32", "polars+ort script fp32",
        "fcls-infer ort int8", "polars+ort script int8",
    ]  # fmt: skip
    bf16 = ["fcls-infer ov bf16", "polars+ov script bf16"] * native_bf16()
    assert plans["openvino"] == [
        "fcls-infer ov fp32", "polars+ov script fp32", *bf16,
        "fcls-infer ov int8", "polars+ov script int8",
    ]  # fmt: skip
    assert plans["all"] == plans["onnxruntime"] + plans["openvino"]
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "-m", str(ov_model), "--runtime", "openvino", "--backends", "fcls-ov",
        *SMALL, "--rows", "150", "--e2e-rounds", "1", "--workdir", str(tmp_path),
        "--summary-json", str(out),
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["rows"]} == {"torch", "fcls-ov"}
    # checked against onnxruntime fp32, whose labels were taken without timing it
    assert all(r["agreement_with"] == "ort" for r in report["rows"] if r["backend"] != "torch")
    assert [e["pipeline"] for e in report["e2e"]] == ["notebook (pandas + torch)"] + plans[
        "openvino"
    ]
    assert all(e["agreement_ok"] for e in report["e2e"])
    assert all(e["vs_ort_fp32"] is None for e in report["e2e"])
    fcls_fp32 = report["e2e"][1]
    assert fcls_fp32["vs_script"] == pytest.approx(
        fcls_fp32["rows_per_s"] / report["e2e"][2]["rows_per_s"]
    )
    assert "(onnxruntime fp32 not in this run)" in output


def test_bf16_rows_skip_with_their_reason(monkeypatch, tmp_path: Path, ov_model, exported):
    """No native bf16: no bf16 row, one line; native but no check in the model: the fcls
    bf16 rows skipped (the plain OpenVINO peer still runs)."""
    monkeypatch.setattr(backends, "native_bf16", lambda: False)
    monkeypatch.setattr(artifacts, "native_bf16", lambda: False)
    models = models_from(ov_model, None)
    assert not {"fcls-ov-bf16", "ov-bf16"} & set(models.onnx)
    why = bf16_missing(ov_model, models.bf16_check)
    assert why is not None and why.startswith("bf16 rows skipped: this CPU has no native bf16")
    assert [n for n, *_ in runner._e2e_plan(BenchConfig(), models)][-2:] == [
        "fcls-infer ov int8", "polars+ov script int8"
    ]  # fmt: skip
    with pytest.raises(BenchError, match=r"--backends ov-bf16: bf16 rows skipped: this CPU"):
        plan_backends(models, ("ov-bf16",))
    monkeypatch.setattr(backends, "native_bf16", lambda: True)
    monkeypatch.setattr(artifacts, "native_bf16", lambda: True)
    plain = models_from(exported, None)  # exported without the bf16 check
    assert "fcls-ov-bf16" not in plain.onnx and "ov-bf16" in plain.onnx
    assert bf16_missing(exported, plain.bf16_check) == (
        "fcls bf16 rows skipped: model.onnx carries no bf16 check (fcls-export --bf16 makes one)"
    )
    failed = {"passed": False, "agreement": 0.98}
    assert "failed its bf16 check (top-1 agreement 0.9800" in str(bf16_missing(exported, failed))


def test_route_names_are_short_and_unique():
    assert len({r.pipeline for r in ROUTES}) == len({r.script for r in ROUTES}) == len(ROUTES)
    assert all(len(r.backend) <= 12 for r in ROUTES)  # the backend column's width
