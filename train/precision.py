"""Which arithmetic a training run uses: fp32, or bf16 autocast where the hardware has it.

`--precision auto` (the default) picks bf16 autocast on a CUDA GPU with bf16 support and on
a CPU that computes bf16 natively (AVX512-BF16 or AMX), fp32 everywhere else: a CPU without
them emulates bf16, many times slower than fp32, so it is never chosen there and refused
when asked for. The weights stay fp32 either way (autocast runs the convolutions and matrix
products in bf16), so model.pt, the exported ONNX model and its parity gate do not change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from fcls.infer.common.errors import ConfigError
from fcls.infer.common.system import NATIVE_BF16, check_cpu_bf16, cpu_features, native_bf16

from .config import PRECISION_REQUESTS

Requested = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run trains at, what was asked for and why it is this one."""

    precision: Literal["fp32", "bf16"]
    requested: Requested
    why: str

    @property
    def autocast(self) -> bool:
        """Whether forward passes run under bf16 autocast."""
        return self.precision == "bf16"

    def describe(self) -> str:
        """What the run trains at and why, as the first line of fcls-train's log says it."""
        what = "bf16 autocast" if self.autocast else "fp32"
        if self.requested != "auto":
            return f"{what}, as asked (--precision {self.requested})"
        off = "; --precision fp32 trains in fp32" if self.autocast else ""
        return f"{what}, chosen by itself: {self.why}{off}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cuda_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether the GPU has bf16, what it is) for `device`."""
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    # without emulation: torch otherwise says yes for any GPU that can hold bf16 tensors
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    return native, f"{name}, compute capability {major}.{minor}"


def _native(device: torch.device, features: list[str]) -> tuple[bool, str]:
    """(whether `device` computes bf16 natively, the reason in words)."""
    if device.type == "cuda":
        has, gpu = _cuda_bf16(device)
        return has, f"this GPU {'computes' if has else 'lacks'} bf16 ({gpu})"
    if device.type == "cpu":
        found = [f for f in features if f in NATIVE_BF16]
        if native_bf16(features):
            return True, f"this CPU computes bf16 natively ({' '.join(found)})"
        flags = " ".join(features) or "none of AVX2/AVX-512/VNNI"
        return False, f"this CPU has no native bf16 (no AVX512-BF16 or AMX; found: {flags})"
    return False, f"bf16 autocast is not chosen by itself on {device.type}"


def choose_precision(
    requested: str, device: torch.device, features: list[str] | None = None
) -> PrecisionChoice:
    """The precision to train at on `device` for `--precision requested`.

    `features`: the CPU's (system.CPU_FEATURES names); default: read from this CPU. Raises
    ConfigError for bf16 asked for where it would be emulated (a CPU without native bf16, a
    GPU without bf16) and for an unknown request.
    """
    if requested not in PRECISION_REQUESTS:
        raise ConfigError(
            f"--precision {requested}: expected one of {', '.join(PRECISION_REQUESTS)}"
        )
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32", "asked for")
    found = cpu_features() if features is None and device.type == "cpu" else features or []
    has, why = _native(device, found)
    if requested == "auto":
        return PrecisionChoice("bf16" if has else "fp32", "auto", why)
    if device.type == "cpu":
        check_cpu_bf16(found)  # refuses, naming the flags found
    elif device.type == "cuda" and not has:
        raise ConfigError(f"--precision bf16: {why}; use --precision fp32")
    return PrecisionChoice("bf16", "bf16", "asked for")


__all__ = ["PrecisionChoice", "choose_precision"]
