"""Export configuration as data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARITY_BATCHES: tuple[int, ...] = (1, 7, 256)
# the largest batch the dynamic-batch gate runs, and the default rows int8 calibrates on
GATE_ROWS = 1024
DYNAMIC_BATCHES: tuple[int, ...] = (1, 7, GATE_ROWS)


@dataclass(frozen=True)
class ExportConfig:
    """What `export_onnx` builds and how strictly it checks it."""

    opset: int | None = None  # None: newest that both torch's exporter and onnxruntime support
    data: Path | None = None  # real images for the gates; None: the checkpoint's data, else digits
    atol: float = 1e-4  # max |dlogit|, scaled by max(1, max |logit|)
    optimize: bool = False
    int8: bool = False
    fp16: bool = False
    require_fp16_check: bool = False  # refuse (before any work) an fp16 model CUDA cannot check
    keep_failed: bool = False
    calibration_rows: int = GATE_ROWS
    eval_rows: int = 5000  # rows read from the data; its held-out test split gates int8
    parity_real: int = 512  # real images in the fp32 parity set (plus as many random ones)
    int8_min_agreement: float = 0.99
    int8_max_accuracy_drop: float = 0.005
    fp16_min_agreement: float = 0.999

    @property
    def builds_fp16(self) -> bool:
        """Whether an fp16 variant is made (asked for, or implied by require_fp16_check)."""
        return self.fp16 or self.require_fp16_check
