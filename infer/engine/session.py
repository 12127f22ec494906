"""The one place onnxruntime sessions are made: provider choice, threads, and what to say
when CUDA is missing."""

from __future__ import annotations

import contextlib
from importlib import metadata
from pathlib import Path

import onnxruntime as ort

from ..common.errors import ModelError, ProviderError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPTIMIZATION = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,  # portable across CPUs
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


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


def cuda_half_installed() -> bool:
    """Whether this install looks meant for CUDA without giving it: CUDAExecutionProvider is
    listed (so a GPU build is there), or both onnxruntime builds are installed (the CPU one
    shadowing the GPU one). Only then is --provider auto's fall back to CPU news: on a plain
    CPU install it is what every run does, and a line per run would be noise."""
    return CUDA in ort.get_available_providers() or ort_conflict() is not None


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


def make_session(
    model: str | Path | bytes,
    providers: tuple[str, ...] = (CPU,),
    *,
    threads: int | None = None,
    spinning: bool = True,
    optimization: str = "all",
    optimized_copy: Path | None = None,
    quiet: int = 3,
    arena: bool = True,
) -> ort.InferenceSession:
    """An onnxruntime session of `model` (a path or the model's bytes) on `providers`.

    `threads`: intra-op threads (None: onnxruntime's default), one inter-op thread;
    `spinning`: idle intra-op threads spin between calls; `optimization`: none, extended or
    all (OPTIMIZATION); `optimized_copy`: also save the optimized graph there; `quiet`:
    onnxruntime's log severity (3: errors only); `arena`: keep freed CPU memory for the next
    call (off for a session that runs each batch size once). A model onnxruntime cannot load
    is a ModelError naming the file.
    """
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = OPTIMIZATION[optimization]
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    options.log_severity_level = quiet
    if optimized_copy is not None:
        options.optimized_model_filepath = str(optimized_copy)
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=list(providers))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = "<model bytes>" if isinstance(model, bytes) else str(model)
        raise ModelError(f"{name}: not a loadable ONNX model ({first[:240]})") from None


def providers_for(provider: str) -> tuple[str, ...]:
    """The onnxruntime providers for --provider auto, cuda or cpu (ProviderError otherwise,
    and for cuda where onnxruntime has no CUDAExecutionProvider)."""
    if provider not in ("auto", "cuda", "cpu"):
        raise ProviderError(f"--provider {provider}: expected auto, cuda or cpu")
    available = ort.get_available_providers()
    if provider == "cuda" and CUDA not in available:
        conflict = ort_conflict()
        raise ProviderError(
            f"--provider cuda: onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); "
            + (conflict or f"install {ORT_GPU_DIST} instead of {ORT_CPU_DIST}")
        )
    return (CUDA, CPU) if provider != "cpu" and CUDA in available else (CPU,)


def active_provider(session: ort.InferenceSession) -> str:
    """'cuda' or 'cpu': the provider a session really runs on."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"
