"""The GPU-only code paths, exercised on CPU: fp16 graph, CUDA probe, provider conflicts,
IO binding, the Ray GPU plan and the CUDA generator state of resumed runs."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import run_cli, sparse_pixels, tiny_model, write_eval_csv

from fcls.export import Checkpoint, ExportConfig, export_onnx, variants
from fcls.export.cli import main as export_main
from fcls.export.graph import ServingModel, export_graph, io_signature, lint, read_metadata
from fcls.export.variants import (
    FP16_MAX,
    Fp16RangeError,
    check_fp16_initializers,
    check_fp16_ranges,
    cuda_available,
)
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common.errors import ConfigError, ParityError, ProviderError
from fcls.infer.engine import session as predictor_module
from fcls.infer.engine.predictor import Predictor
from fcls.train import trainer

pytestmark = pytest.mark.slow

HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
no_ort_cuda = pytest.mark.skipif(HAS_ORT_CUDA, reason="onnxruntime has CUDA here")


@pytest.fixture(autouse=True)
def _fresh_probe():
    """cuda_available() caches its answer: tests that fake providers need a fresh one."""
    cuda_available.cache_clear()
    yield
    cuda_available.cache_clear()


def _with_model(ckpt: Checkpoint, model: torch.nn.Module) -> Checkpoint:
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return dataclasses.replace(ckpt, weights=weights)


def _big_variance(ckpt: Checkpoint) -> Checkpoint:
    """The same function, but conv1_bn.running_var above fp16's max in every channel.

    Scaling conv1's outputs by k per channel and its BatchNorm's mean by k and variance by
    k^2 leaves the normalised output unchanged: only the stored buffers grow.
    """
    model = copy.deepcopy(ckpt.model)
    with torch.no_grad():
        k = torch.sqrt(2 * FP16_MAX / model.conv1_bn.running_var)  # (64,)
        model.conv1.weight *= k.view(-1, 1, 1, 1)
        model.conv1.bias *= k
        model.conv1_bn.running_mean *= k
        model.conv1_bn.running_var *= k * k
    assert float(model.conv1_bn.running_var.min()) > FP16_MAX
    return _with_model(ckpt, model)


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory, trained: Path) -> Path:
    """fp32 + fp16 exports of a model whose conv1_bn variance overflows fp16; the fp32 path."""
    ckpt = _big_variance(Checkpoint.load(trained / "model.pt"))
    dest = tmp_path_factory.mktemp("fp16") / "model.onnx"
    export_onnx(ckpt, dest, ExportConfig(fp16=True), log=lambda s: None)
    return dest


def _logits(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, labels = session.run(None, {"pixels": pixels})
    np.testing.assert_array_equal(labels, logits.argmax(1))
    return logits


# --- fp16: BatchNorm folded in fp32, ranges checked before writing ----------------------


def test_fp16_graph_folds_batchnorm_in_fp32(fp16_export: Path, digits):
    fp16 = fp16_export.with_name("model.fp16.onnx")
    lint(fp16)  # onnx.checker full check, symbolic batch, no Dropout
    graph = onnx.load(str(fp16)).graph
    assert not [n.name for n in graph.node if n.op_type == "BatchNormalization"]
    halves = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) >= 18  # 9 weights + 9 biases, all in fp16
    for t in halves:
        assert np.isfinite(onnx.numpy_helper.to_array(t)).all(), t.name
    sig = io_signature(fp16)
    assert sig["inputs"] == [{"name": "pixels", "dtype": "uint8", "shape": ["batch", 1024]}]
    assert [o["dtype"] for o in sig["outputs"]] == ["float32", "int64"]
    meta = read_metadata(fp16)
    assert meta["variant"] == "fp16" and json.loads(meta["class_names"])
    # the CPU provider runs the fp16 graph: its logits match the fp32 model's
    pixels = digits[0][:512]
    ref = _logits(fp16_export, pixels)
    scale = max(1.0, float(np.abs(ref).max()))
    folded_err = float(np.abs(_logits(fp16, pixels) - ref).max())
    assert folded_err <= 1e-2 * scale


def test_fp16_cast_before_folding_is_the_hazard(trained: Path, digits, tmp_path: Path):
    """Why the fold must come first: cast to fp16 and conv1_bn's variance becomes inf."""
    ckpt = _big_variance(Checkpoint.load(trained / "model.pt"))
    pixels = digits[0][:512]
    fp32 = tmp_path / "fp32.onnx"
    export_graph(ServingModel(ckpt.model, ckpt.spec), fp32, 18, "torchscript")
    ref = _logits(fp32, pixels)
    errors = {}
    for fold in (True, False):
        path = tmp_path / f"fold{fold}.onnx"
        serving = ServingModel(ckpt.model, ckpt.spec, torch.float16, fold_bn=fold)
        export_graph(serving, path, 18, "torchscript")
        errors[fold] = float(np.abs(_logits(path, pixels) - ref).max())
    assert errors[False] > 20 * errors[True], errors


def _scaled(ckpt: Checkpoint, name: str, factor: float) -> Checkpoint:
    model = copy.deepcopy(ckpt.model)
    with torch.no_grad():
        getattr(model, name).weight.mul_(factor)
    return _with_model(ckpt, model)


def test_fp16_refuses_an_overflowing_activation(trained: Path, digits, tmp_path: Path):
    ckpt = Checkpoint.load(trained / "model.pt")
    check_fp16_ranges(ckpt.model, ckpt.spec, digits[0][:256])  # the trained model fits
    # conv1 weights x10^4 without its BatchNorm knowing: conv1's output leaves fp16's range
    loud = _scaled(ckpt, "conv1", 1e4)
    with pytest.raises(Fp16RangeError, match=r"activation model\.conv1 reaches"):
        check_fp16_ranges(loud.model, loud.spec, digits[0][:256])
    dest = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match=r"fp16 variant refused: activation model\.conv1 "):
        export_onnx(loud, dest, ExportConfig(fp16=True), log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before anything was written


def test_fp16_refuses_an_overflowing_parameter(trained: Path, digits):
    ckpt = Checkpoint.load(trained / "model.pt")
    model = copy.deepcopy(ckpt.model)
    with torch.no_grad():
        model.fc5.bias[3] = 2 * FP16_MAX
    with pytest.raises(
        Fp16RangeError, match=r"parameter model\.fc5\.bias .*reaches \|x\| = 1\.31e\+05"
    ):
        check_fp16_ranges(model, ckpt.spec, digits[0][:64])


def test_fp16_initializer_check_names_the_tensor(tmp_path: Path):
    def graph_with(values: np.ndarray, as_constant: bool) -> Path:
        tensor = onnx.numpy_helper.from_array(values.astype(np.float16), "w16")
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [2])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [2])
        nodes = [onnx.helper.make_node("Add", ["x", "w16"], ["y"])]
        inits = [tensor]
        if as_constant:
            nodes.insert(0, onnx.helper.make_node("Constant", [], ["w16"], value=tensor))
            inits = []
        graph = onnx.helper.make_graph(nodes, "g", [x], [y], initializer=inits)
        path = tmp_path / f"g{as_constant}.onnx"
        onnx.save(onnx.helper.make_model(graph), str(path))
        return path

    for as_constant in (False, True):
        check_fp16_initializers(graph_with(np.array([1.0, -2.0]), as_constant))
        with pytest.raises(Fp16RangeError, match="w16 has 1 non-finite or out-of-range"):
            check_fp16_initializers(graph_with(np.array([1.0, np.inf]), as_constant))


# --- the CUDA probe ---------------------------------------------------------------------


@no_ort_cuda
def test_cuda_probe_does_not_trust_the_provider_list(monkeypatch, trained: Path, tmp_path: Path):
    # onnxruntime-gpu without a usable GPU: the provider is listed, a session falls back
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    assert cuda_available() is False
    cuda_available.cache_clear()
    dest = tmp_path / "s.onnx"
    result = CliRunner().invoke(
        export_main, [str(trained / "model.pt"), str(dest), "--require-fp16-check"]
    )
    assert result.exit_code != 0 and "cannot run a CUDA session here" in result.output
    assert "Traceback" not in result.output and not dest.exists()


def test_cuda_probe_runs_a_session(monkeypatch):
    made = []

    class FakeSession:
        def __init__(self, model: bytes, options: object, providers: list[str]) -> None:
            made.append(providers)

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [feed["x"] + feed["x"]]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider"])
    monkeypatch.setattr(variants.ort, "InferenceSession", FakeSession)
    assert cuda_available() is True and made == [["CUDAExecutionProvider"]]


# --- two onnxruntime builds; --provider auto says what it used ---------------------------


def _fake_dists(monkeypatch, installed: dict[str, str]) -> None:
    def version(name: str) -> str:
        if name not in installed:
            raise predictor_module.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(predictor_module.metadata, "version", version)


BOTH = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}
FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"


@no_ort_cuda
def test_provider_cuda_names_both_onnxruntime_builds(monkeypatch, exported: Path):
    _fake_dists(monkeypatch, BOTH)
    with pytest.raises(ProviderError) as e:
        Predictor(exported, provider="cuda")
    message = str(e.value)
    assert "both onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1 are installed" in message
    assert FIX in message
    _fake_dists(monkeypatch, {"onnxruntime": "1.32.0"})
    with pytest.raises(ProviderError, match=r"install onnxruntime-gpu instead of onnxruntime$"):
        Predictor(exported, provider="cuda")
    # listed but falling back: the same diagnosis
    _fake_dists(monkeypatch, BOTH)
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(ProviderError, match=r"fell back to CPUExecutionProvider.*both onnxruntime"):
        Predictor(exported, provider="cuda")


def _auto_run(tmp_path: Path, *extra: str) -> str:
    """fcls-infer --provider auto (the default) on the tiny model; its output."""
    model = tiny_model(tmp_path / "tiny.onnx")
    src = write_eval_csv(tmp_path / "in.csv", sparse_pixels(20))
    args = [src, "--model", model, "-o", tmp_path / "r.csv", *extra]
    return run_cli(infer_main, *args).output


@no_ort_cuda
def test_auto_on_a_cpu_install_says_which_provider_only_with_verbose(tmp_path: Path):
    output = _auto_run(tmp_path)
    assert "on cpu with tiny.onnx" in output  # the summary names the provider anyway
    assert "--provider auto" not in output and "CUDAExecutionProvider" not in output
    output = _auto_run(tmp_path, "-v")
    assert "fcls-infer: --provider auto used cpu (onnxruntime " in output
    assert "offers no CUDAExecutionProvider)" in output and "warning" not in output
    assert "--provider auto" not in _auto_run(tmp_path, "-v", "--provider", "cpu")


@no_ort_cuda
def test_auto_on_a_half_installed_cuda_says_why_without_verbose(monkeypatch, tmp_path: Path):
    _fake_dists(monkeypatch, BOTH)  # both builds: the CPU one shadows the GPU one
    output = _auto_run(tmp_path)
    assert "fcls-infer: --provider auto used cpu (onnxruntime " in output
    assert "warning: both onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1" in output
    assert FIX in output
    _fake_dists(monkeypatch, {"onnxruntime-gpu": "1.31.1"})  # a GPU build that finds no GPU
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    output = _auto_run(tmp_path)
    assert (
        "--provider auto used cpu (CUDAExecutionProvider is listed but no GPU answered)" in output
    )


# --- IO binding: the CUDA path's code, run on the CPU provider --------------------------


def test_io_binding_on_cpu_equals_the_plain_path(monkeypatch, exported: Path, digits):
    pixels = digits[0][:300]
    plain = Predictor(exported, provider="cpu", threads=1)
    bound = Predictor(exported, provider="cpu", threads=1, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    calls = []
    real = Predictor._run_bound

    def spy(self, feed, want, device):
        calls.append((want, device))
        return real(self, feed, want, device)

    monkeypatch.setattr(Predictor, "_run_bound", spy)
    for rows in (pixels, pixels[:1]):
        np.testing.assert_array_equal(bound.predict(rows), plain.predict(rows))
        np.testing.assert_allclose(bound.predict_proba(rows), plain.predict_proba(rows), atol=1e-6)
    assert calls == [("label", "cpu"), ("logits", "cpu")] * 2
    assert len(bound.predict(pixels[:0])) == 0


def test_fp16_graph_through_io_binding_on_cpu(fp16_export: Path, digits):
    pixels = digits[0][:300]
    fp32 = Predictor(fp16_export, provider="cpu", threads=1)
    fp16 = Predictor(fp16_export.with_name("model.fp16.onnx"), "cpu", threads=1, io_binding=True)
    assert fp16.class_names == fp32.class_names
    np.testing.assert_allclose(fp16.predict_proba(pixels), fp32.predict_proba(pixels), atol=1e-3)
    assert (fp16.predict(pixels) == fp32.predict(pixels)).mean() >= 0.99


# --- Ray: GPU plan, contradictions, the driver check -------------------------------------


def test_ray_gpu_plan_is_accepted_by_ray(ray_local, exported: Path):
    from fcls.infer.engine.options import ScoringOptions
    from fcls.infer.engine.ray import _Cluster, _Scorer, _scorer_stage

    ds = ray_local.data.from_items([{"x": 1}])
    options = ScoringOptions(provider="cuda", threads=1, batch_size=64)
    stage = _scorer_stage(ray_local.put(b""), _Cluster(None, 2, 1.0, "cuda"), 0.5, options)
    assert stage["num_gpus"] == 1.0 and stage["batch_size"] >= 64
    ds.map_batches(_Scorer, **stage)  # plan only: nothing runs without a GPU
    # what the plan used to be: Ray refuses it before any work
    with pytest.raises(ValueError, match="batch_size"):
        ds.map_batches(_Scorer, **{**stage, "batch_size": None})
    cpu_options = ScoringOptions(provider="cpu", threads=1, batch_size=64)
    cpu = _scorer_stage(ray_local.put(b""), _Cluster(None, 2, 0.0, "cpu"), 0.5, cpu_options)
    assert cpu["num_gpus"] is None and cpu["batch_size"] is None  # CPU plan unchanged


@pytest.mark.parametrize(
    ("provider", "gpus", "message"),
    [
        ("cpu", 1.0, "--provider cpu with --gpus-per-worker 1: the actors would hold GPUs"),
        ("cuda", 0.0, "--provider cuda with --engine ray needs --gpus-per-worker > 0"),
    ],
)
def test_ray_provider_contradictions_are_refused_up_front(
    provider, gpus, message, exported: Path, digits, tmp_path: Path
):
    from fcls.infer.engine.ray import predict_csv_ray

    src = write_eval_csv(tmp_path / "in.csv", digits[0][:5])
    with pytest.raises(ConfigError, match=message):
        predict_csv_ray(
            [str(src)], tmp_path / "o.csv", exported, provider=provider, gpus_per_worker=gpus
        )
    args = [str(src), "--engine", "ray", "--model", str(exported), "--provider", provider]
    result = CliRunner().invoke(infer_main, [*args, "--gpus-per-worker", str(gpus)])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "results.csv").exists()


@no_ort_cuda
def test_ray_gpu_workers_are_checked_on_the_driver(exported: Path, digits, tmp_path: Path):
    """--gpus-per-worker without CUDA fails on the driver, before Ray starts."""
    from fcls.infer.engine.ray import predict_csv_ray

    src = write_eval_csv(tmp_path / "in.csv", digits[0][:5])
    ray = sys.modules.get("ray")
    was_running = bool(ray and ray.is_initialized())
    with pytest.raises(
        ProviderError, match=r"--provider cuda: onnxruntime .* no CUDAExecutionProvider"
    ):
        predict_csv_ray([str(src)], tmp_path / "o.csv", exported, gpus_per_worker=1)
    ray = sys.modules.get("ray")
    assert was_running or not (ray and ray.is_initialized())
    assert list(tmp_path.iterdir()) == [src]


def test_ray_gpu_request_beyond_the_cluster_is_refused():
    from fcls.infer.engine.ray import _check_gpus

    with pytest.raises(
        ConfigError, match=r"--workers 2 x --gpus-per-worker 1 = 2 GPUs, but the Ray cluster has 1"
    ):
        _check_gpus({"CPU": 16.0, "GPU": 1.0}, 2, 1.0)
    with pytest.raises(ConfigError, match="cluster has 0"):
        _check_gpus({"CPU": 2.0}, 1, 0.5)
    _check_gpus({"CPU": 16.0, "GPU": 1.0}, 2, 0.5)
    _check_gpus({"CPU": 2.0}, 2, 0.0)


# --- resume on CUDA continues the CUDA generator ----------------------------------------


def test_cuda_generator_state_is_saved_and_restored(monkeypatch, tmp_path: Path):
    saved = [torch.arange(16, dtype=torch.uint8)]
    restored: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in saved])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")

    torch.manual_seed(7)
    run = trainer._Run({"id": 1})
    run.rng_state, run.cuda_rng_state = trainer._rng_states(cuda)
    expected = torch.rand(3)  # what an uninterrupted run draws next
    path = tmp_path / trainer.STATE_FILE
    trainer._atomic_save(run.to_dict(), path)
    loaded = trainer._Run.from_dict(torch.load(path, weights_only=True))

    torch.manual_seed(7)  # what train() does before restoring
    torch.rand(5)
    trainer._restore_rng(loaded, cuda)
    assert torch.equal(torch.rand(3), expected)
    assert len(restored) == 1 and torch.equal(restored[0][0], saved[0])

    trainer._restore_rng(loaded, cpu)  # resumed on CPU: the CUDA state is not applied
    assert len(restored) == 1
    assert trainer._rng_states(cpu)[1] is None
    old = {k: v for k, v in run.to_dict().items() if k != "cuda_rng_state"}  # older state.pt
    assert trainer._Run.from_dict(old).cuda_rng_state is None


def test_training_saves_the_generator_states(trained: Path):
    state = torch.load(trained / trainer.STATE_FILE, weights_only=True)
    assert isinstance(state["rng_state"], torch.Tensor)
    assert state["cuda_rng_state"] is None  # a CPU run
