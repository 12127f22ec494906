"""The one place onnxruntime sessions are made: provider choice, threads, and what to say
when CUDA is missing."""

from __future__ import annotations

import contextlib
from importlib import metadata

import onnxruntime as ort

CPU = "CPUExecutionProvider"


CUDA = "CUDAExecutionProvider"


# Both install into the same `onnxruntime` package folder: whichever was installed last wins
# file by file, and the CPU build usually shadows the GPU one, so CUDA silently disappears.
ORT_CPU_DIST, ORT_GPU_DIST = "onnxruntime", "onnxruntime-gpu"


def installed_onnxruntimes() -> dict[str, str]:
    """Installed onnxruntime distributions (CPU and GPU builds) and their versions."""
    found = {}
    for name in (ORT_CPU_DIST, ORT_GPU_DIST):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def ort_conflict() -> str | None:
    """Why CUDA may be missing when both onnxruntime builds are installed, and the fix; else None."""
    found = installed_onnxruntimes()
    if ORT_CPU_DIST not in found or ORT_GPU_DIST not in found:
        return None
    return (
        f"both {ORT_CPU_DIST} {found[ORT_CPU_DIST]} and {ORT_GPU_DIST} {found[ORT_GPU_DIST]} "
        "are installed and the CPU build shadows the GPU one; fix: pip uninstall -y "
        f"{ORT_CPU_DIST} {ORT_GPU_DIST} && pip install {ORT_GPU_DIST}"
    )


def auto_choice(used: str) -> str:
    """One line for --provider auto: the provider it used and, on CPU, why not CUDA."""
    if used == "cuda":
        return "--provider auto used cuda (onnxruntime CUDAExecutionProvider)"
    available = ort.get_available_providers()
    why = (
        "CUDAExecutionProvider is listed but no GPU answered"
        if CUDA in available
        else f"onnxruntime {ort.__version__} offers no CUDAExecutionProvider"
    )
    conflict = ort_conflict()
    return f"--provider auto used cpu ({why})" + (f"; warning: {conflict}" if conflict else "")
