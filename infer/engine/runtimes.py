"""The runtimes that score a model file: onnxruntime (the default) and OpenVINO, and the
precisions each may run it at.

The one place OpenVINO models are compiled and the one place a runtime/precision choice is
checked against the model and the CPU. Both runtimes read the same ONNX files; only the call
that runs a batch differs (a `Runner`), so the pipeline, resume, drift and outputs are shared.
bf16 runs the fp32 file through OpenVINO's inference precision hint, and only on CPUs that
compute bf16 natively (emulated bf16 is many times slower than fp32), and only for a model
whose bf16 check passed at export (`BF16_CHECK_KEY` in its metadata).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..common.errors import ConfigError, ModelError
from ..common.extras import require

# the CPU's bf16 facts live with its other features (training asks them too); named here as
# well, since the runtime's callers and tests know them from here
from ..common.system import NATIVE_BF16 as NATIVE_BF16
from ..common.system import check_cpu_bf16 as check_cpu_bf16
from ..common.system import describe_cpu
from ..common.system import native_bf16 as native_bf16
from ._replicas import Runner
from .session import make_session

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
# OpenVINO's INFERENCE_PRECISION_HINT for each precision fcls names
PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}
# The bf16 check fcls-export records in the fp32 model's metadata, and what it must show
BF16_CHECK_KEY = "bf16_check"
BF16_MIN_AGREEMENT = 0.995  # top-1 labels equal to fp32's on the held-out rows
BF16_MAX_DROP = 0.002  # accuracy lost against fp32 on the same rows (0.2 points)
# OpenVINO runs the smallest batches on other kernels, whose last bits differ: calls of fewer
# rows are padded to this many, so a row's result does not depend on how rows are batched
# (a resumed run, the Ray engine and any --batch-size write the same bytes)
SMALLEST_CALL = 16


@dataclass(frozen=True)
class Choice:
    """A runtime and precision asked for: validated names, nothing loaded."""

    runtime: str = "onnxruntime"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime {self.runtime!r}: expected {' or '.join(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: expected {' or '.join(PRECISIONS)}")
        if self.precision == "bf16" and self.runtime != "openvino":
            raise ConfigError(
                "--precision bf16 runs through OpenVINO: add --runtime openvino "
                '(pip install "fcls[openvino]")'
            )

    def label(self) -> str:
        """`openvino bf16`: how a log line or a report names the choice."""
        return f"{self.runtime} {self.precision}"


def read_bf16_check(meta: dict[str, str]) -> dict[str, Any] | None:
    """The bf16 check recorded in a model's metadata, or None (none recorded, or unreadable)."""
    try:
        found = json.loads(meta[BF16_CHECK_KEY])
    except (KeyError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def check_bf16_passed(path: Path, meta: dict[str, str]) -> None:
    """ModelError unless the model carries a passed bf16 check, naming the command that
    makes one."""
    found = read_bf16_check(meta)
    make = (
        f"make one: fcls-export model.pt -o {path.name} --data train.csv --bf16 "
        "(on a CPU with native bf16, openvino installed)"
    )
    if found is None:
        raise ModelError(f"{path}: --precision bf16 needs a passed bf16 check; it has none; {make}")
    if not found.get("passed"):
        raise ModelError(
            f"{path}: its bf16 check failed (top-1 agreement with fp32 "
            f"{found.get('agreement', float('nan')):.4f}, needs >= {BF16_MIN_AGREEMENT}); "
            "score it at --precision fp32"
        )


def import_openvino(command: str = "--runtime openvino") -> ModuleType:
    """The openvino module; MissingExtraError (exit 5) naming the extra when absent."""
    require(command, "openvino")
    import openvino

    return openvino


def openvino_version() -> str:
    """OpenVINO's release (`2026.4.1`), without its build suffix."""
    return str(import_openvino().__version__).split("-")[0]


@dataclass
class OpenVinoModel:
    """A model compiled by OpenVINO for the CPU: one `Runner` per stream, each for one pool
    thread only (an infer request runs one call at a time), and `single`, a runner of its
    own for calls from any thread, one at a time."""

    runners: list[Runner]
    single: Runner
    description: str  # `OpenVINO 2026.4.1 CPU bf16, 2 streams x 1 thread`


def compile_openvino(
    path: Path, precision: str, threads: int, streams: int = 1, batch_invariant: bool = True
) -> OpenVinoModel:
    """`path` compiled on the CPU at `precision` (fp32 or bf16; an int8 file runs its int8
    kernels, the rest in fp32) with `threads` threads over `streams` streams, one infer
    request (runner) per stream; `batch_invariant`: pad calls under SMALLEST_CALL rows, so
    a row's result does not depend on its batch (off: lower latency for a few rows).
    ModelError when OpenVINO cannot read or compile it."""
    ov = import_openvino()
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": PRECISION_HINT[precision],
        # the threads and streams above decide the layout; the hint only names its intent
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    }
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:240]
        raise ModelError(f"{path}: OpenVINO cannot compile it ({first})") from None
    ports = {name: port for port in compiled.outputs for name in port.get_names()}
    smallest = SMALLEST_CALL if batch_invariant else 1
    runners = [_runner(compiled.create_infer_request(), ports, smallest) for _ in range(streams)]
    single = _locked(_runner(compiled.create_infer_request(), ports, smallest))
    ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    per = max(1, threads // streams)
    shown = f"{streams} stream{'s' if streams > 1 else ''} x {per} thread{'s' if per > 1 else ''}"
    return OpenVinoModel(runners, single, f"OpenVINO {openvino_version()} CPU {ran}, {shown}")


def _locked(runner: Runner) -> Runner:
    lock = threading.Lock()

    def run(want: str, rows: np.ndarray) -> np.ndarray:
        with lock:
            return runner(want, rows)

    return run


def _runner(request: Any, ports: dict[str, Any], smallest: int) -> Runner:
    def run(want: str, rows: np.ndarray) -> np.ndarray:
        n = len(rows)
        if n < smallest:
            padded = np.zeros((smallest, *rows.shape[1:]), rows.dtype)
            padded[:n] = rows
            return np.array(request.infer({0: padded}, share_inputs=True)[ports[want]][:n])
        # the rows stay the caller's (no copy in); the outputs are copied out of the request,
        # which the next call reuses
        return request.infer({0: rows}, share_inputs=True)[ports[want]]

    return run


def fastest_note(path: Path, runtime: str, precision: str) -> str:
    """One line for -v: which runtime and precision ran this model fastest when fcls-export
    checked bf16 (only those that passed their gate), on which CPU, against this run's."""
    meta = make_session(path, optimization="none", arena=False).get_modelmeta()
    found = read_bf16_check(meta.custom_metadata_map) or {}
    speeds = found.get("img_per_s")
    speeds = speeds if isinstance(speeds, dict) else {}
    base = speeds.get("onnxruntime fp32")
    if not base:
        return (
            "speed: no runtime comparison recorded for this model (fcls-export --bf16 records "
            "one); fcls-bench -m MODEL compares every runtime and precision on this CPU"
        )
    usable = {k: v for k, v in speeds.items() if found.get("passed") or "bf16" not in k}
    best = max(usable, key=usable.__getitem__)
    fast_runtime, fast_precision = best.split()
    where = "this CPU" if found.get("cpu") == describe_cpu() else str(found.get("cpu"))
    return (
        f"fastest at export on {where}: --runtime {fast_runtime} --precision {fast_precision}, "
        f"{usable[best] / base:.2f}x onnxruntime fp32, model alone (this run: {runtime} "
        f"{precision}); fcls-bench -m MODEL compares int8 and end-to-end runs too"
    )
