"""The backends under test, each a `predict(pixels) -> labels` plus how it was set up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Variants that are not bit-for-bit fp32 are held to top-1 agreement with the reference instead.
# OpenVINO's f32 may pick other convolution algorithms (a near tie can flip); its default may
# run bf16 on CPUs that have it.
# int8 models must agree with PyTorch on 99% of the check set, as fcls-export's gate demands
# (7-bit weights keep onnxruntime's u8s8 kernels exact on CPUs without VNNI too)
INT8_AGREEMENT = 0.99
MIN_AGREEMENT = {
    "ort-int8": INT8_AGREEMENT,
    "cuda-fp16": 0.999,
    "ov-f32": 0.999,
    "ov-default": 0.99,
    "ov-int8": INT8_AGREEMENT,
}

# OpenVINO peer backends: name -> the fcls ONNX variant it reads (the same file fcls runs).
PEERS = {"ov-f32": "ort", "ov-default": "ort", "ov-int8": "ort-int8"}
PEERS_HINT = 'pip install "fcls[peers]"'


@dataclass
class Backend:
    """A named way to turn (n, P) uint8 rows into labels."""

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    prepare: Callable[[np.ndarray], object]  # done once per batch, outside the timing
    run: Callable[[object], object]  # the timed call
    provider: str
    threads: int


def openvino_missing() -> str | None:
    """Why the OpenVINO peer rows cannot run here (one line), or None when they can."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"OpenVINO rows skipped: openvino is not importable ({e}); {PEERS_HINT}"
    return None


def peer_models(onnx: dict[str, Path]) -> dict[str, Path]:
    """The OpenVINO backends (name -> the fcls ONNX file they read) for the variants present."""
    if openvino_missing():
        return {}
    return {peer: onnx[variant] for peer, variant in PEERS.items() if variant in onnx}


def torch_backend(checkpoint: Path) -> Backend:
    """The notebook's way: the eager network in eval mode on float tensors prepared upfront."""
    import torch

    from fcls.train.checkpoint import Checkpoint
    from fcls.train.predict import to_input

    ckpt = Checkpoint.load(checkpoint)
    model = ckpt.model

    def prepare(pixels: np.ndarray) -> torch.Tensor:
        return to_input(torch.Tensor(pixels), ckpt.spec)  # as the notebook built its dataset

    def run(x: object) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    def predict(pixels: np.ndarray) -> np.ndarray:
        return run(prepare(pixels)).argmax(1).numpy()

    return Backend("torch", predict, prepare, run, "cpu (eager)", torch.get_num_threads())


def ort_backend(name: str, path: Path, threads: int | None = None) -> Backend:
    """An fcls Predictor: uint8 rows in, labels out (CUDA for names starting with 'cuda')."""
    from fcls.infer.engine.predictor import Predictor

    predictor = Predictor(
        path, provider="cuda" if name.startswith("cuda") else "cpu", threads=threads
    )
    return Backend(
        name,
        predictor.predict,
        lambda pixels: np.ascontiguousarray(pixels),
        predictor.predict,  # type: ignore[arg-type]
        f"{predictor.session.get_providers()[0]} ({path.name})",
        predictor.threads,
    )


def ov_backend(name: str, path: Path, threads: int | None = None) -> Backend:
    """OpenVINO on CPU reading the same fcls ONNX file: f32 forced, its default, or the int8 QDQ.

    One synchronous infer request with the LATENCY hint (one stream over all threads), the
    same shape of call as an fcls Predictor; the provider string shows the precision
    OpenVINO actually picked.
    """
    import openvino as ov

    from fcls.infer.common.system import available_cpus

    if name not in PEERS:
        raise ValueError(f"{name}: not an OpenVINO backend ({', '.join(PEERS)})")
    n_threads = threads or available_cpus()
    config: dict[str, object] = {"INFERENCE_NUM_THREADS": n_threads, "PERFORMANCE_HINT": "LATENCY"}
    if name == "ov-f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    names = {n for out in compiled.outputs for n in out.get_names()}
    want = compiled.output("label" if "label" in names else "logits")
    request = compiled.create_infer_request()

    def run(x: object) -> np.ndarray:
        return request.infer({0: x})[want]

    def predict(pixels: np.ndarray) -> np.ndarray:
        out = run(np.ascontiguousarray(pixels))
        return out.astype(np.int64) if out.ndim == 1 else out.argmax(axis=1)

    provider = f"OpenVINO {ov.__version__.split('-')[0]} CPU {precision} ({path.name})"
    return Backend(name, predict, lambda p: np.ascontiguousarray(p), run, provider, n_threads)
