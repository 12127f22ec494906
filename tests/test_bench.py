"""fcls.bench and fcls-bench: figures, correctness checks and the report."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fcls.bench import runner
from fcls.bench.artifacts import file_sha256, models_from
from fcls.bench.backends import (
    PEERS_HINT,
    bf16_missing,
    openvino_missing,
    openvino_models,
    peer_models,
)
from fcls.bench.cli import main
from fcls.bench.core import Timing, gemm_kernels
from fcls.bench.errors import AgreementError, BenchError
from fcls.bench.ingest import PARSERS
from fcls.bench.runner import (
    BenchConfig,
    check_agreement,
    format_gemm,
    format_report,
    peer_ratios,
    plan_backends,
    run_bench,
)
from fcls.infer.common.spec import DEFAULT_SPEC
from fcls.infer.engine.runtimes import native_bf16
from fcls.train.registry import model_info

SMALL = ["--batch-sizes", "1,4", "--seconds", "0.05", "--ingest-rows", "0"]


def test_timing_figures():
    t = Timing("x", 10, [0.01] * 98 + [0.02, 0.03])
    assert t.pct(50) == pytest.approx(10.0)
    assert t.pct(99) > 19.0
    assert t.throughput == pytest.approx(10 * 100 / 1.03)
    base = Timing("torch", 10, [0.04] * 100)
    row = t.row(base)
    assert row["vs_torch"] == pytest.approx(4 / 1.03, rel=1e-6)


@pytest.mark.slow
def test_fcls_bench_cli_small_run(tmp_path: Path, exported: Path, trained: Path):
    out = tmp_path / "bench.json"
    args = [
        "--model", str(exported), "--checkpoint", str(trained / "model.pt"),
        "--backends", "ort", "--batch-sizes", "1,8", "--seconds", "0.05", "--rows", "200",
        "--workdir", str(tmp_path / "work"), "--json", str(out), "--ingest-rows", "60,150",
        "--e2e-rounds", "2", "--runtime", "onnxruntime",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "ceiling: fp32 matmul" in result.output and "notebook (pandas + torch)" in result.output
    assert "ceiling / best polars" in result.output
    report = json.loads(out.read_text())
    assert [(r["backend"], r["batch"]) for r in report["rows"]] == [
        ("torch", 1), ("torch", 8), ("ort", 1), ("ort", 8)
    ]  # fmt: skip
    assert all(r["agreement"] == 1.0 for r in report["rows"])
    # each backend's own process holds at least the file it loaded, and stays bounded
    loaded = {"torch": trained / "model.pt", "ort": exported}
    for r in report["rows"]:
        assert loaded[r["backend"]].stat().st_size / 2**20 < r["peak_rss_mb"] < 2048, r
    assert [e["pipeline"] for e in report["e2e"]] == [
        "notebook (pandas + torch)",
        "fcls-infer ort fp32",
        "polars+ort script fp32",
    ]
    fcls_row, script_row = report["e2e"][1:]
    assert fcls_row["agreement"] == script_row["agreement"] == 1.0 and fcls_row["rows"] == 200
    assert fcls_row["vs_ort_fp32"] == 1.0 and (fcls_row["runtime"], fcls_row["kind"]) == (
        "onnxruntime", "fcls-infer"
    )  # fmt: skip
    assert fcls_row["vs_script"] == pytest.approx(fcls_row["rows_per_s"] / script_row["rows_per_s"])
    assert fcls_row["vs_model_only"] is None  # batch 64 was not in this run's table
    assert [len(e["round_seconds"]) for e in report["e2e"]] == [1, 2, 2]  # notebook once
    for e in report["e2e"]:  # the reported run is the faster of two (the lower middle)
        assert e["seconds"] == min(e["round_seconds"])
    assert "medians of 2 alternating rounds" in result.output
    cpus = report["machine"]["cpus_available"]
    for e in report["e2e"]:
        assert e["cores_busy"] == pytest.approx(e["cpu_seconds"] / e["seconds"])
        assert 0 < e["cores_busy"] < cpus + 1  # threads cannot keep more cores busy than exist
    assert "cores" in result.output
    ingest = report["ingest"]
    assert [p["parser"] for p in ingest["parse"]] == list(PARSERS)  # all agree on the pixels
    assert [(c["rows"], c["parse_threads"]) for c in ingest["ceiling"]] == [
        (60, 1), (150, 1), (150, 2)
    ]  # fmt: skip
    ceiling = ingest["ceiling"]
    assert all(30 < c["peak_rss_mb"] < 2048 for c in ceiling)  # an interpreter with pyarrow + ort
    assert ingest["rss_growth"] == ceiling[1]["peak_rss_mb"] / ceiling[0]["peak_rss_mb"]
    assert ingest["rss_growth"] < 1.5  # streaming: 2.5x the rows, about the same memory


def _lying(monkeypatch, liar: str) -> None:
    """Backend `liar` answers label + 1 on every agreement-check row."""
    real = runner._measure

    def lying(name, *args):
        timings, labels, provider, threads, peak = real(name, *args)
        if name == liar and labels is not None:
            labels = (labels + 1) % 10
        return timings, labels, provider, threads, peak

    monkeypatch.setattr(runner, "ProcessPoolExecutor", _Inline)
    monkeypatch.setattr(runner, "_measure", lying)
    monkeypatch.setattr(runner, "matmul_ceiling", lambda seconds: (100.0, "fixed for the test"))


@pytest.mark.slow
def test_wrong_backend_is_marked_and_fails_after_the_report(
    monkeypatch, tmp_path: Path, exported: Path, trained: Path
):
    _lying(monkeypatch, "ort")
    config = BenchConfig(
        model=exported, checkpoint=trained / "model.pt", backends=("torch", "ort"),
        batch_sizes=(4, 8), seconds=0.01, e2e=False, workdir=tmp_path,
    )  # fmt: skip
    report = run_bench(config, log=lambda s: None)  # the whole report, not an abort
    marks = {
        (r["backend"], r["batch"]): (r["agreement"], r["agreement_ok"]) for r in report["rows"]
    }
    assert marks == {
        ("torch", 4): (1.0, True), ("torch", 8): (1.0, True),
        ("ort", 4): (0.0, False), ("ort", 8): (0.0, False),
    }  # fmt: skip
    # the run's own test split of the 400 digit rows it was trained on: 80 rows
    assert report["agreement_rows"] == 80
    want = "ort: top-1 agreement 0.0000 < 1.0 with torch on 80 images"
    assert report["agreement_failures"] == [want]
    table = format_report(report)
    below = [line for line in table.splitlines() if "BELOW the agreement bar" in line]
    assert [line.split()[:2] for line in below] == [["ort", "4"], ["ort", "8"]]
    assert f"FAILED: 1 below the agreement bar:\n{want}" in table
    with pytest.raises(AgreementError, match=re.escape(want)):
        check_agreement(report)
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--model", str(exported), "--checkpoint", str(trained / "model.pt"),
        "--backends", "ort", *SMALL, "--no-e2e", "--workdir", str(tmp_path), "--summary-json",
        str(out),
    )  # fmt: skip
    assert code == 3, output  # clikit.MODEL: a failed gate
    assert "FAILED: 1 below the agreement bar" in output and "(wall " in output  # all printed
    assert (
        output.strip().splitlines()[-1]
        == f"Error: 1 below the agreement bar (marked in the report): {want}"
    )
    assert json.loads(out.read_text())["agreement_failures"] == [want]  # and written


def _beside(tmp_path: Path, exported: Path, checkpoint: Path | None) -> Path:
    """A copy of the exported model (and its siblings) in its own folder, with `checkpoint`
    copied beside it."""
    folder = tmp_path / "m"
    folder.mkdir()
    for sibling in exported.parent.glob(f"{exported.stem}.*onnx"):
        shutil.copy(sibling, folder / sibling.name.replace(exported.stem, "model", 1))
    model = folder / "model.onnx"
    if checkpoint is not None:
        shutil.copy(checkpoint, folder / "model.pt")
    return model


def _bench(monkeypatch, *args: str) -> tuple[int, str]:
    """fcls-bench in this process (backends inline, not spawned; the 2048x2048 matmul ceiling,
    covered by test_fcls_bench_cli_small_run, replaced by a fixed figure): code and output."""
    monkeypatch.setattr(runner, "ProcessPoolExecutor", _Inline)
    monkeypatch.setattr(runner, "matmul_ceiling", lambda seconds: (100.0, "fixed for the test"))
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_model_without_checkpoint_finds_the_matching_one_beside(
    monkeypatch, tmp_path: Path, exported: Path, trained: Path
):
    model = _beside(tmp_path, exported, trained / "model.pt")
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--model", str(model), "--backends", "ort", *SMALL, "--no-e2e",
        "--workdir", str(tmp_path / "w"), "--json", str(out),
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(model.parent / "model.pt") and report["reference"] == "torch"
    assert [r["backend"] for r in report["rows"]] == ["torch", "torch", "ort", "ort"]
    torch_speed = {r["batch"]: r["throughput"] for r in report["rows"] if r["backend"] == "torch"}
    for r in report["rows"]:
        assert r["vs_torch"] == pytest.approx(r["throughput"] / torch_speed[r["batch"]])
        assert r["agreement"] == 1.0 and r["agreement_ok"] is True
    assert "PyTorch not measured" not in output


def test_model_without_matching_checkpoint_runs_the_rest(
    monkeypatch, tmp_path: Path, exported: Path
):
    model = _beside(tmp_path, exported, None)
    (model.parent / "model.pt").write_bytes(b"not the source checkpoint")
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--model", str(model), "--backends", "ort-opt", *SMALL, "--rows", "100",
        "--workdir", str(tmp_path / "w"), "--json", str(out), "--runtime", "onnxruntime",
    )  # fmt: skip
    assert code == 0, output
    why = [line for line in output.splitlines() if "PyTorch not measured" in line]
    assert len(why) == 1 and "source_sha256" in why[0] and "--checkpoint" in why[0]
    assert "model.pt has sha256" in why[0]
    report = json.loads(out.read_text())
    assert report["checkpoint"] is None and report["reference"] == "ort"
    assert [r["backend"] for r in report["rows"]] == ["ort", "ort", "ort-opt", "ort-opt"]
    assert all(r["vs_torch"] is None and r["agreement"] == 1.0 for r in report["rows"])
    assert [e["pipeline"] for e in report["e2e"]] == [
        "fcls-infer ort fp32",
        "polars+ort script fp32",
    ]
    assert report["e2e"][0]["vs_notebook"] is None and report["e2e"][0]["rows"] == 100
    assert "ingest" not in report  # --ingest-rows 0
    assert "agree: top-1 agreement with ort (onnxruntime fp32)" in output


def test_model_whose_data_is_not_here_skips_agreement_with_a_notice(
    monkeypatch, tmp_path: Path, exported: Path
):
    """No --data and the recorded training data gone: never checked on another dataset."""
    from fcls.export.graph import set_metadata

    model = _beside(tmp_path, exported, None)
    gone = {"source": str(tmp_path / "fashion" / "train.csv.gz"), "sha256": "0" * 64}
    for sibling in model.parent.glob("*.onnx"):
        set_metadata(sibling, {"training_data": gone})
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--model", str(model), "--backends", "ort-opt", *SMALL, "--rows", "100",
        "--workdir", str(tmp_path / "w"), "--summary-json", str(out), "--runtime", "onnxruntime",
    )  # fmt: skip
    assert code == 0, output
    notice = [line for line in output.splitlines() if "agreement not measured" in line]
    assert notice == [
        f"agreement not measured: the checkpoint's training data {gone['source']} is not here; "
        "pass --data with the model's data (timings use digits images)"
    ]
    report = json.loads(out.read_text())
    assert report["agreement_rows"] is None and report["agreement_failures"] == []
    assert [(r["agreement"], r["agreement_ok"]) for r in report["rows"]] == [(None, None)] * 4
    assert [(e["agreement"], e["agreement_ok"]) for e in report["e2e"]] == [(None, None)] * 2


def test_model_records_its_data_in_metadata_and_bench_uses_it(
    monkeypatch, tmp_path: Path, exported: Path, digits_csv: Path
):
    """Without a checkpoint, the ONNX metadata names the rows agreement is checked on."""
    model = _beside(tmp_path, exported, None)
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--model", str(model), "--backends", "ort-opt", *SMALL, "--no-e2e",
        "--workdir", str(tmp_path / "w"), "--summary-json", str(out),
    )  # fmt: skip
    assert code == 0, output
    assert (
        f"agreement on 80 rows of {digits_csv.resolve()} (the training run's own test split)"
        in output
    )
    report = json.loads(out.read_text())
    assert report["agreement_rows"] == 80
    assert all(r["agreement"] == 1.0 and r["agreement_ok"] for r in report["rows"])


@pytest.mark.slow
def test_fashion_int8_model_is_checked_on_its_own_data(
    monkeypatch, tmp_path: Path, fashion_trained: Path
):
    """The reported defect: an int8 model that passed fcls-export's gate, benched without
    --data, was checked on the digits (agreement 0.9873 < 0.99) and the whole report aborted."""
    from fcls.export import ExportConfig, export_onnx

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(fashion_trained, folder / "model.pt")
    export_onnx(
        folder / "model.pt", folder / "model.onnx", ExportConfig(int8=True), log=lambda s: None
    )
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--quick", "-m", str(folder / "model.onnx"), "--backends", "ort,ort-int8",
        *SMALL, "--rows", "200", "--workdir", str(tmp_path / "w"), "--summary-json", str(out),
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(out.read_text())
    assert report["agreement_rows"] == 600  # the held-out 20% of the 3,000 rows it trained on
    assert any("train.csv.gz (the training run's own test split)" in n for n in report["notes"])
    int8 = [r for r in report["rows"] if r["backend"] == "ort-int8"]
    assert int8 and all(r["agreement"] >= 0.99 and r["agreement_ok"] for r in int8)


def test_model_alone_has_no_checkpoint_and_says_why(tmp_path: Path, exported: Path):
    model = _beside(tmp_path, exported, None)
    models = models_from(model, None)
    assert models.checkpoint is None and models.no_torch is not None
    assert (
        models.no_torch.startswith("PyTorch not measured")
        and "no model.pt there" in models.no_torch
    )
    assert [n for n, _ in plan_backends(models, None)][:2] == ["ort", "ort-opt"]
    with pytest.raises(BenchError, match=r"--backends torch: PyTorch not measured"):
        plan_backends(models, ("torch",))


def test_given_checkpoint_of_another_model_is_refused(tmp_path: Path, exported: Path):
    other = tmp_path / "other.pt"
    other.write_bytes(b"some other checkpoint")
    with pytest.raises(
        BenchError, match=r"other\.pt: sha256 [0-9a-f]{12} is not the source_sha256"
    ):
        models_from(exported, other)
    result = CliRunner().invoke(
        main, ["--model", str(exported), "--checkpoint", str(other), "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 1 and "not the checkpoint it was exported from" in result.output
    assert "Traceback" not in result.output


def test_unreadable_model_and_unknown_backend_are_one_line_errors(
    monkeypatch, tmp_path: Path, exported: Path, trained: Path
):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    code, output = _bench(monkeypatch, "--model", str(junk), "--workdir", str(tmp_path))
    assert code == 3 and "junk.onnx: not a readable ONNX model" in output  # clikit.MODEL
    assert "Traceback" not in output
    models = models_from(exported, trained / "model.pt")
    with pytest.raises(BenchError, match=r"--backends tensorrt: unknown backend \(known: torch"):
        plan_backends(models, ("tensorrt",))
    with pytest.raises(BenchError, match=r"--backends ort-int8: no \.int8\.onnx sibling"):
        plan_backends(models, ("ort-int8",))
    assert [n for n, _ in plan_backends(models, ("ort-opt",))] == ["torch", "ort-opt"]


def test_openvino_missing_skips_the_openvino_rows(
    monkeypatch, tmp_path: Path, exported: Path, trained: Path
):
    """Without openvino, every OpenVINO row (fcls's runtime, the peers, the script) is out
    with one line naming the extra; --runtime openvino is refused the same way."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    line = openvino_missing()
    assert line is not None and line.startswith("OpenVINO rows skipped") and PEERS_HINT in line
    assert PEERS_HINT == 'pip install "fcls[openvino]"'
    assert peer_models({"ort": exported}) == {}
    assert openvino_models({"ort": exported}, bf16_ok=True) == {}
    models = models_from(exported, trained / "model.pt")
    assert not any(name.startswith(("ov-", "fcls-ov")) for name in models.onnx)
    assert bf16_missing(exported, None) is None  # openvino's line says it all
    for name in ("ov-f32", "fcls-ov", "fcls-ov-bf16"):
        with pytest.raises(
            BenchError, match=rf"--backends {name}: OpenVINO rows skipped.*fcls\[openvino\]"
        ):
            plan_backends(models, (name,))
    plan = runner._e2e_plan(BenchConfig(), models)
    assert [name for name, _, _ in plan] == ["fcls-infer ort fp32", "polars+ort script fp32"]
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--model", str(exported), "--checkpoint", str(trained / "model.pt"),
        "--backends", "ort", *SMALL, "--no-e2e", "--workdir", str(tmp_path), "--json", str(out),
    )  # fmt: skip
    assert code == 0, output
    skipped = [x for x in output.splitlines() if "skipped" in x]
    assert len(skipped) == 1 and 'pip install "fcls[openvino]"' in skipped[0]
    report = json.loads(out.read_text())
    assert report["peers"] == [] and "fcls / OpenVINO" not in output
    assert report["fastest"]["command"] == "fcls-infer"
    code, output = _bench(
        monkeypatch, "--model", str(exported), "--runtime", "openvino", "--workdir", str(tmp_path)
    )
    assert code == 5 and 'pip install "fcls[openvino]"' in output, output  # MissingExtraError
    assert "Traceback" not in output


def test_openvino_rows_and_ratios(monkeypatch, tmp_path: Path, exported: Path, trained: Path):
    pytest.importorskip("openvino", reason=f"openvino is not installed ({PEERS_HINT})")
    out = tmp_path / "r.json"
    code, output = _bench(
        monkeypatch, "--model", str(exported), "--checkpoint", str(trained / "model.pt"),
        "--backends", "ort,fcls-ov,ov-f32,ov-default", *SMALL, "--no-e2e", "--workdir",
        str(tmp_path), "--json", str(out),
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(out.read_text())
    rows = {(r["backend"], r["batch"]): r for r in report["rows"]}
    names = ("torch", "ort", "fcls-ov", "ov-f32", "ov-default")
    assert set(rows) == {(b, n) for b in names for n in (1, 4)}
    assert rows["fcls-ov", 4]["agreement_with"] == "ort" and rows["fcls-ov", 4]["agreement_ok"]
    assert "CPU f32" in rows["ov-f32", 4]["provider"]  # the precision OpenVINO ran is shown
    assert rows["ov-f32", 4]["agreement"] >= 0.999 and rows["ov-default", 4]["agreement"] >= 0.99
    ratios = {(q["precision"], q["batch"]): q for q in report["peers"]}
    pairs = ("fp32", "fp32 vs OV default", "fp32, fcls OV")
    assert set(ratios) == {(p, n) for p in pairs for n in (1, 4)}
    q = ratios["fp32", 4]
    assert q["throughput_ratio"] == pytest.approx(
        rows["ort", 4]["throughput"] / rows["ov-f32", 4]["throughput"]
    )
    assert "fcls / OpenVINO" in output and "openvino" in report["machine"]["versions"]


def test_peer_ratios_pair_each_precision():
    def row(name: str, batch: int, img_s: float, p50: float) -> dict:
        return {
            "backend": name,
            "batch": batch,
            "throughput": img_s,
            "p50_ms": p50,
            "provider": name,
        }

    rows = [row("ort", 256, 6000, 1.0), row("ov-f32", 256, 4000, 2.0), row("ov-int8", 256, 9, 1)]
    rows += [row("ort-int8", 1, 10, 0.1), row("ov-int8", 1, 5, 0.3)]
    got = {(q["precision"], q["batch"]): q for q in peer_ratios(rows)}
    assert set(got) == {("fp32", 256), ("int8", 1)}  # ov-int8 at 256 has no fcls int8 row
    assert got["fp32", 256]["throughput_ratio"] == pytest.approx(1.5)
    assert got["int8", 1]["p50_ratio"] == pytest.approx(3.0)


def test_report_header_names_the_gemm_kernels(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    kernels = gemm_kernels()
    assert kernels["openblas_coretype"] == "Haswell" and kernels["torch_cpu_capability"]
    line = format_gemm(kernels)
    assert "OPENBLAS_CORETYPE=Haswell" in line and "torch CPU capability" in line
    if kernels["numpy_blas"]:  # threadpoolctl is installed with scikit-learn
        blas = kernels["numpy_blas"]
        assert f"{blas['internal_api']} {blas['version']} ({blas['architecture']}" in line
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    line = format_gemm(gemm_kernels())
    assert "numpy BLAS unknown (threadpoolctl not installed)" in line
    assert "OPENBLAS_CORETYPE=unset" in line


def test_file_sha256_matches_hashlib(tmp_path: Path):
    import hashlib

    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    assert file_sha256(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


class _Inline:
    """A stand-in for ProcessPoolExecutor that runs in this process (for monkeypatching)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args):
        from concurrent.futures import Future

        f: Future = Future()
        f.set_result(fn(*args))
        return f


@pytest.mark.slow
def test_fcls_bench_train_section(tmp_path: Path):
    out = tmp_path / "train.json"
    args = ["--train", "--quick", "--summary-json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["rows"] == [] and "e2e" not in report
    section = report["training"]
    assert (section["rows"], section["rounds"]) == (512, 1)
    ceilings = section["ceilings_gflops"]
    assert ceilings["fp32"] == report["ceiling_gflops"]
    precisions = ["fp32", "bf16"] if native_bf16() else ["fp32"]  # bf16 only where native
    assert list(ceilings) == precisions and all(g > 0 for g in ceilings.values())
    rows = {(r["what"], r["precision"]): r for r in section["throughput"]}
    recipes = [(f"train, recipe {n}", p) for p in precisions for n in ("notebook", "fast")]
    assert list(rows) == [
        *recipes,
        ("train, the notebook's loop", "fp32"),
        ("validation forward", "fp32"),
        ("forward, the notebook's way", "fp32"),
    ]
    loop = rows["train, the notebook's loop", "fp32"]
    forward = rows["forward, the notebook's way", "fp32"]
    for (name, precision), r in rows.items():
        macs = model_info("FinalCNNet", DEFAULT_SPEC).multiply_adds
        flops = (3 if name.startswith("train") else 1) * 2 * macs
        assert r["gflops"] == pytest.approx(r["img_per_s"] * flops / 1e9)
        assert r["pct_ceiling"] == pytest.approx(100 * r["gflops"] / ceilings[precision])
    for key in recipes:  # every precision against the notebook's own (fp32) loop
        assert rows[key]["vs_notebook_loop"] == pytest.approx(
            rows[key]["img_per_s"] / loop["img_per_s"]
        )
    fcls_forward = rows["validation forward", "fp32"]
    assert fcls_forward["vs_notebook_loop"] == pytest.approx(
        fcls_forward["img_per_s"] / forward["img_per_s"]
    )
    assert ("no bf16 rows" in " ".join(report["notes"])) != native_bf16()
    assert [layer["layer"] for layer in section["layers"]] == ["conv1", "conv2", "conv3", "conv4"]
    assert all(layer["fcls_ms"] > 0 and layer["nchw_ms"] > 0 for layer in section["layers"])
    assert all(("fcls_bf16_ms" in layer) == native_bf16() for layer in section["layers"])
    assert "train, recipe fast" in result.output and "patch GEMM" in result.output


@pytest.mark.parametrize("native", [False, True])
def test_training_measures_bf16_only_where_the_cpu_computes_it(monkeypatch, native: bool):
    from fcls.infer.engine import runtimes

    monkeypatch.setattr(runtimes, "native_bf16", lambda *a: native)
    monkeypatch.setattr(runner, "bf16_matmul_ceiling", lambda seconds: 400.0)
    expected = {"fp32": 190.0, "bf16": 400.0} if native else {"fp32": 190.0}
    assert runner._training_ceilings(190.0, 0.1) == expected


def test_bf16_matmul_ceiling_is_a_rate():
    from fcls.bench.core import bf16_matmul_ceiling

    assert bf16_matmul_ceiling(seconds=0.05, n=64) > 0


def test_median_run_is_the_middle_wall_time():
    from fcls.bench.e2e import E2E

    runs = [E2E("x", 10, s, np.zeros(10)) for s in (3.0, 1.0, 2.0, 5.0)]
    assert runner._median_run(runs).seconds == 2.0  # lower middle of an even count
    assert runner._median_run(runs[:3]).seconds == 2.0
    assert runner._median_run(runs[:1]).seconds == 3.0
