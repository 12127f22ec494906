"""Derived models: ORT-optimized fp32, static per-channel int8 (QDQ), fp16 for CUDA."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from fcls.infer.common.errors import ParityError
from fcls.infer.common.spec import ImageSpec
from fcls.infer.engine.session import CUDA, make_session

from .graph import INPUT, ServingModel

FP16_MAX = 65504.0
# activations seen on calibration rows must stay this many times below fp16's max: other
# rows (brighter images, other classes) can go further than the calibration set did
FP16_HEADROOM = 8.0


def optimize_for_cpu(src: Path, dst: Path) -> None:
    """Save onnxruntime's offline-optimized graph (extended level: portable across CPUs)."""
    make_session(src, optimization="extended", optimized_copy=dst)


class _Calibration:
    """Feeds calibration rows to the quantizer in batches of 64."""

    def __init__(self, pixels: np.ndarray, batch: int = 64) -> None:
        self.batches = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return {INPUT: self.batches.pop(0)} if self.batches else None

    def rewind(self) -> None:  # pragma: no cover - part of the reader protocol
        pass


def quantize_int8(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """Static QDQ quantization: per-channel symmetric 7-bit int8 weights, uint8 activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        logging.getLogger().setLevel(logging.ERROR)
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the plain graph
            prepared = src
        quantize_static(
            str(prepared),
            str(dst),
            Reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: on x86 CPUs without VNNI (AVX2, plain AVX-512) onnxruntime's u8s8
            # kernels sum pairs of uint8 x int8 products in int16 (VPMADDUBSW), which saturates
            # with full-range weights; the same int8 file then answers differently per CPU.
            # With reduce_range it agrees with fp32 on every CPU (figures: bench/README.md).
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )


class Fp16RangeError(ParityError):
    """A model whose weights or activations do not fit fp16; the message names the tensor."""


def check_fp16_ranges(
    model: torch.nn.Module, spec: ImageSpec, calibration: np.ndarray, batch: int = 256
) -> None:
    """Refuse an fp16 export whose folded fp32 weights or calibration activations exceed fp16.

    Runs the BatchNorm-folded fp32 serving model (the one the fp16 graph is cast from) over
    the (N, P) uint8 calibration rows and checks every parameter and every layer's output.
    """
    serving = ServingModel(model, spec, torch.float32, fold_bn=True)
    limit = FP16_MAX / FP16_HEADROOM
    network = serving.model  # names as the network's own (`model.conv1` in FinalCNNet's)
    for name, tensor in network.named_parameters():
        peak = float(tensor.detach().abs().max())
        if not np.isfinite(peak) or peak > limit:
            raise Fp16RangeError(
                f"fp16 variant refused: parameter {name} (BatchNorm folded) reaches |x| = "
                f"{peak:.4g}, over the fp16 limit {limit:.4g} (max {FP16_MAX:.0f} / "
                f"{FP16_HEADROOM:g} headroom); nothing written"
            )
    peaks: dict[str, float] = {}

    def record(name: str) -> torch.utils.hooks.RemovableHandle:
        def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
            peak = float(output.detach().abs().max()) if output.numel() else 0.0
            peaks[name] = max(peaks.get(name, 0.0), peak if np.isfinite(peak) else np.inf)

        return dict(network.named_modules())[name].register_forward_hook(hook)

    leaves = [n for n, m in network.named_modules() if n and not list(m.children())]
    handles = [record(name) for name in leaves]
    try:
        with torch.no_grad():
            for i in range(0, len(calibration), batch):
                serving(torch.from_numpy(calibration[i : i + batch]))
    finally:
        for handle in handles:
            handle.remove()
    for name in peaks:  # in order of first call: the first layer that overflows is the cause
        if peaks[name] > limit:
            raise Fp16RangeError(
                f"fp16 variant refused: activation {name} reaches |x| = {peaks[name]:.4g} on "
                f"{len(calibration)} calibration rows, over the fp16 limit {limit:.4g} "
                f"(max {FP16_MAX:.0f} / {FP16_HEADROOM:g} headroom); nothing written"
            )


def check_fp16_initializers(path: Path) -> None:
    """Refuse a written fp16 graph with a non-finite or out-of-range fp16 initializer or constant."""
    model = onnx.load(str(path))
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [
        (node.name or node.output[0], attr.t)
        for node in model.graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
    ]
    for name, tensor in tensors:
        if tensor.data_type != onnx.TensorProto.FLOAT16:
            continue
        values = numpy_helper.to_array(tensor).astype(np.float32)
        bad = int((~np.isfinite(values) | (np.abs(values) > FP16_MAX)).sum())
        if bad:
            raise Fp16RangeError(
                f"{path.name}: fp16 initializer {name} has {bad} non-finite or out-of-range "
                f"values of {values.size}; fp16 variant refused"
            )


def _probe_model() -> bytes:
    """A one-Add float graph: the smallest thing a provider must run."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime fcls supports
    return model.SerializeToString()


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether onnxruntime really runs a session on CUDA here (not only lists the provider).

    onnxruntime-gpu lists CUDAExecutionProvider even with no usable GPU or missing CUDA
    libraries; the session then falls back to CPU or fails. So build one and run it.
    """
    if CUDA not in ort.get_available_providers():
        return False
    try:
        with warnings.catch_warnings():  # "not in available provider names": the answer is False
            warnings.simplefilter("ignore")
            session = make_session(_probe_model(), (CUDA,), quiet=4)
        if session.get_providers()[0] != CUDA:
            return False
        (y,) = session.run(None, {"x": np.ones(1, np.float32)})
        return bool(y[0] == 2.0)
    except Exception:  # any failure to build or run means: no usable CUDA
        return False
