"""The backends under test, each a `predict(pixels) -> labels` plus how it was set up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcls.infer.engine.runtimes import BF16_MIN_AGREEMENT, native_bf16

# Variants that are not bit-for-bit fp32 are held to top-1 agreement with the reference instead.
# OpenVINO's f32 may pick other convolution algorithms (a near tie can flip); its default may
# run bf16 on CPUs that have it.
# int8 models must agree with PyTorch on 99% of the check set, as fcls-export's gate demands
# (7-bit weights keep onnxruntime's u8s8 kernels exact on CPUs without VNNI too)
INT8_AGREEMENT = 0.99
# fcls's OpenVINO runtime is checked against onnxruntime reading the same file (AGREES_WITH):
# fp32 may only flip near ties, bf16 is held to the bar of fcls-export's bf16 check, and both
# int8 runtimes run the same QDQ graph, so they differ by rounding alone
OV_FP32_AGREEMENT = 0.999
BF16_AGREEMENT = BF16_MIN_AGREEMENT
OV_INT8_AGREEMENT = 0.995
MIN_AGREEMENT = {
    "ort-int8": INT8_AGREEMENT,
    "cuda-fp16": 0.999,
    "fcls-ov": OV_FP32_AGREEMENT,
    "fcls-ov-bf16": BF16_AGREEMENT,
    "fcls-ov-int8": OV_INT8_AGREEMENT,
    "ov-f32": 0.999,
    "ov-default": 0.99,
    "ov-bf16": 0.99,  # what ov-default runs on CPUs with native bf16
    "ov-int8": INT8_AGREEMENT,
}

# OpenVINO peer backends: name -> the fcls ONNX variant it reads (the same file fcls runs).
PEERS = {"ov-f32": "ort", "ov-default": "ort", "ov-bf16": "ort", "ov-int8": "ort-int8"}
PEERS_HINT = 'pip install "fcls[openvino]"'
BF16_NAMES = ("fcls-ov-bf16", "ov-bf16")  # rows that need a CPU with native bf16


@dataclass(frozen=True)
class Route:
    """One of fcls's own ways to score: a runtime at a precision on one model file, with its
    model-alone row (`backend`), its fcls-infer and script pipelines end to end."""

    runtime: str  # onnxruntime | openvino
    precision: str  # fp32 | bf16 | int8 (the int8 file; its float parts at fp32)
    backend: str  # the model-alone row
    variant: str  # the fcls ONNX file it reads (Models.onnx key)
    partner: str | None = None  # the onnxruntime row its labels are checked against

    @property
    def short(self) -> str:
        return "ort" if self.runtime == "onnxruntime" else "ov"

    @property
    def pipeline(self) -> str:
        return f"fcls-infer {self.short} {self.precision}"

    @property
    def script(self) -> str:
        return f"polars+{self.short} script {self.precision}"

    @property
    def hint(self) -> str:
        """fcls's --precision for it (an int8 file runs at fp32 otherwise)."""
        return "bf16" if self.precision == "bf16" else "fp32"


ROUTES = (
    Route("onnxruntime", "fp32", "ort", "ort"),
    Route("onnxruntime", "int8", "ort-int8", "ort-int8"),
    Route("openvino", "fp32", "fcls-ov", "ort", "ort"),
    Route("openvino", "bf16", "fcls-ov-bf16", "ort", "ort"),
    Route("openvino", "int8", "fcls-ov-int8", "ort-int8", "ort-int8"),
)
ROUTE_OF = {r.backend: r for r in ROUTES}
# fcls's OpenVINO rows, checked against onnxruntime on the same file rather than the reference
FCLS_OPENVINO = {r.backend: r for r in ROUTES if r.runtime == "openvino"}
AGREES_WITH = {r.backend: r.partner for r in ROUTES if r.partner}


def runtime_of(name: str) -> str:
    """The runtime a backend row belongs to (--runtime): OpenVINO's peers follow openvino."""
    return "openvino" if name in FCLS_OPENVINO or name in PEERS else "onnxruntime"


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
    """Why the OpenVINO rows (fcls's runtime, the peers, the script) cannot run here (one
    line), or None when they can."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"OpenVINO rows skipped: openvino is not importable ({e}); {PEERS_HINT}"
    return None


def bf16_missing(model: Path, check: dict[str, Any] | None) -> str | None:
    """Why fcls's bf16 rows cannot run on `model` here (one line), or None when they can;
    `check` is the bf16 check its metadata carries. None too without openvino: that line is
    openvino_missing's."""
    if openvino_missing():
        return None
    if not native_bf16():
        return (
            "bf16 rows skipped: this CPU has no native bf16 (neither AVX512-BF16 nor AMX in "
            "its flags), and emulated bf16 is slower than fp32"
        )
    if check is None:
        return (
            f"fcls bf16 rows skipped: {model.name} carries no bf16 check (fcls-export --bf16 "
            "makes one)"
        )
    if not check.get("passed"):
        return (
            f"fcls bf16 rows skipped: {model.name} failed its bf16 check (top-1 agreement "
            f"{check.get('agreement', float('nan')):.4f} with fp32)"
        )
    return None


def peer_models(onnx: dict[str, Path]) -> dict[str, Path]:
    """The OpenVINO peer backends (name -> the fcls ONNX file they read) for the variants
    present; ov-bf16 only on CPUs with native bf16."""
    if openvino_missing():
        return {}
    native = native_bf16()
    return {
        peer: onnx[variant]
        for peer, variant in PEERS.items()
        if variant in onnx and (peer not in BF16_NAMES or native)
    }


def openvino_models(onnx: dict[str, Path], bf16_ok: bool) -> dict[str, Path]:
    """fcls's OpenVINO rows (fcls-ov bf16 only where `bf16_ok`: see bf16_missing), then the
    peers, for the variants present: what Models.onnx adds for OpenVINO."""
    if openvino_missing():
        return {}
    own = {
        name: onnx[route.variant]
        for name, route in FCLS_OPENVINO.items()
        if route.variant in onnx and (route.precision != "bf16" or bf16_ok)
    }
    return {**own, **peer_models(onnx)}


def make_backend(name: str, path: Path, threads: int | None = None) -> Backend:
    """The backend called `name` reading `path` (a checkpoint for torch, else an ONNX file)."""
    if name == "torch":
        return torch_backend(path)
    if name in PEERS:
        return ov_backend(name, path, threads)
    return fcls_backend(name, path, threads)


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


def fcls_backend(name: str, path: Path, threads: int | None = None) -> Backend:
    """An fcls Predictor: uint8 rows in, labels out; onnxruntime (CUDA for names starting
    with 'cuda'), or fcls's OpenVINO runtime for the fcls-ov rows. The provider column shows
    the Predictor's own line of what ran."""
    from fcls.infer.engine.predictor import Predictor

    route = FCLS_OPENVINO.get(name)
    predictor = Predictor(
        path,
        provider="cuda" if name.startswith("cuda") else "cpu",
        threads=threads,
        runtime="openvino" if route else "onnxruntime",
        precision=route.hint if route else "fp32",
    )
    # on CUDA the Predictor's line would call an fp16 file fp32: name the provider alone
    cpu = predictor.provider == "cpu"
    shown = predictor.runtime_line if cpu else predictor.session.get_providers()[0]
    return Backend(
        name,
        predictor.predict,
        lambda pixels: np.ascontiguousarray(pixels),
        predictor.predict,  # type: ignore[arg-type]
        f"{shown} ({path.name})",
        predictor.threads,
    )


def ov_backend(name: str, path: Path, threads: int | None = None) -> Backend:
    """OpenVINO on CPU reading the same fcls ONNX file: f32 or bf16 forced, its default, or
    the int8 QDQ.

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
    forced = {"ov-f32": "f32", "ov-bf16": "bf16"}
    if name in forced:
        config["INFERENCE_PRECISION_HINT"] = forced[name]
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
