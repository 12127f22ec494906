"""Measurement core shared by `fcls-bench` and the pytest-benchmark suite in bench/.

Every figure comes from per-call wall-clock timings after warm-up; every backend's labels
are checked against PyTorch eager on the same images, so a fast wrong path cannot pass.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fcls.infer.common.system import cpu_features, cpu_model
from fcls.infer.engine.session import make_session


@dataclass
class Timing:
    """Per-call timings of one backend at one batch size."""

    backend: str
    batch: int
    seconds: list[float] = field(repr=False)
    flops_per_image: float | None = None  # 2 x the network's multiply-adds, when known

    def pct(self, q: float) -> float:
        """Latency percentile q (0..100) in milliseconds, linear interpolation."""
        return float(np.percentile(np.asarray(self.seconds), q) * 1e3)

    @property
    def throughput(self) -> float:
        """Images per second over all timed calls."""
        return self.batch * len(self.seconds) / sum(self.seconds)

    @property
    def gflops(self) -> float | None:
        """Achieved GFLOP/s at the network's FLOP per image (None when not known)."""
        if self.flops_per_image is None:
            return None
        return self.throughput * self.flops_per_image / 1e9

    def row(self, baseline: Timing | None) -> dict[str, Any]:
        """Figures of this timing as a flat dict (ratio to the baseline's throughput)."""
        return {
            "backend": self.backend,
            "batch": self.batch,
            "calls": len(self.seconds),
            "p50_ms": self.pct(50),
            "p90_ms": self.pct(90),
            "p99_ms": self.pct(99),
            "throughput": self.throughput,
            "gflops": self.gflops,
            "vs_torch": self.throughput / baseline.throughput if baseline else None,
            "p99_vs_torch": self.pct(99) / baseline.pct(99) if baseline else None,
        }


def time_calls(
    fn: Callable[[], Any],
    seconds: float,
    warmup: int = 3,
    min_calls: int = 5,
    max_calls: int = 100_000,
) -> list[float]:
    """Call `fn` warmup times, then for about `seconds` (at least min_calls); per-call times."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while (len(times) < min_calls or time.perf_counter() < deadline) and len(times) < max_calls:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def matmul_ceiling(seconds: float = 1.0, n: int = 2048) -> tuple[float, str]:
    """The machine's fp32 matrix-multiply rate (GFLOP/s): the best of torch.mm, numpy and
    onnxruntime's MatMul on n x n operands with all their threads, and which one it was."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = make_session(model.SerializeToString(), threads=None)
    candidates = {
        "torch.mm": lambda: torch.mm(ta, tb),
        "numpy matmul": lambda: a @ b,
        "onnxruntime MatMul": lambda: session.run(None, {"a": a, "b": b}),
    }
    rates = {
        name: 2 * n**3 / statistics.median(time_calls(fn, seconds / 3, warmup=2)) / 1e9
        for name, fn in candidates.items()
    }
    best = max(rates, key=lambda k: rates[k])
    del onnx
    return rates[best], f"{best} {n}x{n}"


def bf16_matmul_ceiling(seconds: float = 1.0, n: int = 2048) -> float:
    """The machine's bf16 matrix-multiply rate (GFLOP/s) through torch.mm on n x n operands,
    all threads: the ceiling of training under bf16 autocast, whose products torch runs.
    Meaningful only where the CPU computes bf16 natively (elsewhere torch emulates it)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen, dtype=torch.bfloat16) for _ in range(2))
    seconds_per_call = statistics.median(time_calls(lambda: torch.mm(a, b), seconds, warmup=2))
    return 2 * n**3 / seconds_per_call / 1e9


def gemm_kernels() -> dict[str, Any]:
    """Which fp32 GEMM kernels set the ceiling: numpy's BLAS (threadpoolctl: library, version,
    kernel architecture), OPENBLAS_CORETYPE (forces e.g. Haswell kernels on an AVX-512 CPU at
    half the speed) and torch's CPU capability, so '% of ceiling' cannot shift unseen."""
    import numpy  # noqa: F401  (threadpoolctl lists only libraries already loaded)
    import torch

    kernels: dict[str, Any] = {
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy_blas": None,
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        kernels["numpy_blas_unknown"] = "unknown (threadpoolctl not installed)"
        return kernels
    blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    # numpy's own wheel bundles its OpenBLAS under numpy.libs; else the first BLAS loaded
    blas.sort(key=lambda lib: "numpy" not in str(lib.get("filepath", "")))
    if blas:
        kernels["numpy_blas"] = {
            k: blas[0].get(k) for k in ("internal_api", "version", "architecture", "num_threads")
        }
    else:
        kernels["numpy_blas_unknown"] = "not found by threadpoolctl"
    return kernels


def machine_info() -> dict[str, Any]:
    """CPU, CPUs available to this process, GPU and library versions for the report header."""
    import numpy
    import onnxruntime as ort
    import pyarrow
    import torch

    from fcls.infer.common.system import available_cpus

    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cpus_available": available_cpus(),
        "cpus_host": os.cpu_count(),
        "gpu": gpu,
        "ort_providers": ort.get_available_providers(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__,
        },
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import openvino

        info["versions"]["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        pass
    return info
