"""Derived models: ORT-optimized fp32, static per-channel int8 (QDQ), fp16 for CUDA."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .graph import INPUT


def optimize_for_cpu(src: Path, dst: Path) -> None:
    """Save onnxruntime's offline-optimized graph (extended level: portable across CPUs)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


class _Calibration:
    """Feeds calibration rows to the quantizer in batches of 64."""

    def __init__(self, pixels: np.ndarray, batch: int = 64) -> None:
        self.batches = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return {INPUT: self.batches.pop(0)} if self.batches else None

    def rewind(self) -> None:  # pragma: no cover - part of the reader protocol
        pass


def quantize_int8(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """Static QDQ quantization: per-channel symmetric int8 weights, asymmetric uint8 activations."""
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
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )


def cuda_available() -> bool:
    """Whether onnxruntime can run a session on CUDA here."""
    return "CUDAExecutionProvider" in ort.get_available_providers()
