"""Export configuration as data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcls.infer.common.errors import ConfigError

PARITY_BATCHES: tuple[int, ...] = (1, 7, 256)
GATE_ROWS = 1024  # the default rows int8 calibrates on
# The dynamic-batch gate: sizes the real-row gate does not run, the largest past its largest
# but not so large that its activations set the export's peak memory.
DYNAMIC_BATCHES: tuple[int, ...] = (1, 7, 300)


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
    bf16: bool = False  # check OpenVINO bf16 against fp32 and record it in the fp32 model
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


@dataclass(frozen=True)
class WrapConfig:
    """How a user's ONNX classifier takes fcls's uint8 rows: the image size, and the input
    transform x -> (x * input_scale - input_mean) / input_std, per channel or one for all."""

    image_size: str | None = None  # HxW or HxWxC; None: the model's input shape says it
    input_scale: float = 1.0
    input_mean: tuple[float, ...] = (0.0,)
    input_std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not math.isfinite(self.input_scale) or self.input_scale == 0:
            raise ConfigError(f"--input-scale {self.input_scale:g}: must be finite and not 0")
        for option, values in (("--input-mean", self.input_mean), ("--input-std", self.input_std)):
            if not values or not all(math.isfinite(v) for v in values):
                raise ConfigError(f"{option} {_show(values)}: every value must be finite")
        if any(v <= 0 for v in self.input_std):
            raise ConfigError(f"--input-std {_show(self.input_std)}: every value must be > 0")

    def per_channel(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) with one value per channel; ConfigError for another count than 1 or C."""
        out = []
        for option, values in (("--input-mean", self.input_mean), ("--input-std", self.input_std)):
            if len(values) not in (1, channels):
                raise ConfigError(
                    f"{option} {_show(values)}: {len(values)} values for a {channels}-channel "
                    f"image: give 1 or {channels}"
                )
            out.append(values * channels if len(values) == 1 else values)
        return out[0], out[1]

    def to_dict(self) -> dict[str, Any]:
        """The recorded form (ONNX metadata `input_transform`)."""
        return {
            "formula": "(pixel * scale - mean) / std",
            "scale": self.input_scale,
            "mean": list(self.input_mean),
            "std": list(self.input_std),
        }


def _show(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def parse_number(option: str, text: str) -> float:
    """A float, or a fraction such as 1/255 (what --input-scale is usually written as)."""
    top, slash, bottom = text.strip().partition("/")
    try:
        value = float(top) / float(bottom) if slash else float(top)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{option} {text!r}: expected a number such as 0.5 or 1/255") from None
    return value


def parse_numbers(option: str, text: str) -> tuple[float, ...]:
    """One number, or one per channel separated by commas (`0.485,0.456,0.406`)."""
    return tuple(parse_number(option, part) for part in text.split(","))
