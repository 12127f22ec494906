"""The bf16 check of an exported model: OpenVINO bf16 against onnxruntime fp32 on the gate's
held-out rows, and the model-alone speed of each runtime on this CPU.

fcls-infer scores a model at --precision bf16 only where this check passed and is recorded in
the fp32 file's metadata (`BF16_CHECK_KEY`). bf16 keeps 8 bits of mantissa: a model whose
activations carry a large offset, or whose classes are near ties, can change labels, and only
scoring real rows both ways tells. The speed figures are of the CPU the export ran on.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcls.infer.common import system
from fcls.infer.common.spec import DEFAULT_BATCH_SIZE
from fcls.infer.engine.predictor import Predictor
from fcls.infer.engine.runtimes import (
    BF16_MAX_DROP,
    BF16_MIN_AGREEMENT,
    NATIVE_BF16,
    import_openvino,
    native_bf16,
    openvino_version,
)

COMMAND = "fcls-export --bf16"
FP32, OV_FP32, OV_BF16 = "onnxruntime fp32", "openvino fp32", "openvino bf16"
# Timing: the held-out rows repeated up to SPEED_ROWS per call, fewer where the slowest runtime
# would pass SPEED_CALL_S on them, so the check stays a few seconds on a small CPU. The runtimes
# alternate over the rounds and each keeps its best, so a busy moment spoils a round, not a
# runtime's figure.
SPEED_ROWS = 2000
SPEED_CALL_S = 0.25
SPEED_ROUNDS = 3


def require_openvino() -> None:
    """MissingExtraError (exit 5) naming the openvino extra when it is not installed."""
    import_openvino(COMMAND)


def skip_notice() -> str | None:
    """None where this CPU computes bf16 natively; else the one-line notice of a skipped check
    (emulated bf16 is many times slower than fp32: no figure worth recording)."""
    found = system.cpu_features()
    if native_bf16(found):
        return None
    flags = [flag for flag, name in system.CPU_FEATURES.items() if name in NATIVE_BF16]
    return (
        f"notice: --bf16 skipped: this CPU's flags have neither {' nor '.join(flags)} (found: "
        f"{' '.join(found) or 'none of ' + ' '.join(system.CPU_FEATURES)}); OpenVINO would "
        "emulate bf16, so no bf16 check is recorded"
    )


@dataclass(frozen=True)
class Bf16Check:
    """The figures of one bf16 check, as recorded under `BF16_CHECK_KEY` and in parity.json."""

    passed: bool
    agreement: float  # top-1 labels of OpenVINO bf16 equal to onnxruntime fp32's
    rows: int  # held-out rows compared
    accuracy_fp32: float | None  # None: the held-out rows have no labels
    accuracy_bf16: float | None
    min_agreement: float
    max_accuracy_drop: float
    speed_ratio: float  # OpenVINO bf16 img/s / onnxruntime fp32 img/s
    img_per_s: dict[str, float]
    batch_size: int
    timed_rows: int  # rows per timed call
    cpu: str
    openvino: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return asdict(self)

    def problems(self) -> list[str]:
        """What fails the gate, one phrase each with its figures; empty when it passed."""
        found = []
        if self.agreement < self.min_agreement:
            found.append(
                f"top-1 agreement {self.agreement:.4f} < {self.min_agreement} on "
                f"{self.rows:,} held-out rows"
            )
        if self.accuracy_fp32 is not None and self.accuracy_bf16 is not None:
            drop = self.accuracy_fp32 - self.accuracy_bf16
            if drop > self.max_accuracy_drop:
                found.append(
                    f"accuracy {self.accuracy_fp32:.4f} -> {self.accuracy_bf16:.4f}: drop "
                    f"{100 * drop:.2f} points > {100 * self.max_accuracy_drop:.2f}"
                )
        return found

    def summary(self) -> str:
        """One line of figures for the export's log."""
        acc = (
            f", accuracy {self.accuracy_fp32:.4f} -> {self.accuracy_bf16:.4f}"
            if self.accuracy_fp32 is not None and self.accuracy_bf16 is not None
            else ""
        )
        speed = ", ".join(f"{k} {v:,.0f} img/s" for k, v in self.img_per_s.items())
        return (
            f"bf16 check (OpenVINO {self.openvino}): top-1 agreement "
            f"{100 * self.agreement:.2f}% with onnxruntime fp32 over {self.rows:,} held-out "
            f"rows{acc}; model alone, batch {self.batch_size} x {self.timed_rows:,} rows: "
            f"{speed} (bf16 x{self.speed_ratio:.2f})"
        )


def _accuracy(labels: np.ndarray, truth: np.ndarray | None) -> float | None:
    return None if truth is None or not len(truth) else float((labels == truth).mean())


def check_bf16(path: Path, heldout: np.ndarray, truth: np.ndarray | None) -> Bf16Check:
    """Score the fp32 model `path` on the (H >= 1, P) uint8 `heldout` rows with OpenVINO bf16
    and with onnxruntime fp32, gate on agreement (and on the accuracy drop where `truth`, the
    (H,) labels, is given), and time each runtime on this CPU. Raises ModelError or
    ConfigError when a runtime cannot load the model here."""
    batch = DEFAULT_BATCH_SIZE
    with contextlib.ExitStack() as stack:
        runtimes = {
            FP32: stack.enter_context(Predictor(path, "cpu")),
            OV_FP32: stack.enter_context(Predictor(path, "cpu", runtime="openvino")),
            # this is the check: no recorded one to require yet
            OV_BF16: stack.enter_context(
                Predictor(path, "cpu", runtime="openvino", precision="bf16", bf16_check=False)
            ),
        }
        fp32 = runtimes[FP32].run_batches(heldout, batch)[0]
        bf16 = runtimes[OV_BF16].run_batches(heldout, batch)[0]
        timed_rows, speeds = _speeds(runtimes, heldout, batch)
    acc_fp32, acc_bf16 = _accuracy(fp32, truth), _accuracy(bf16, truth)
    partial = Bf16Check(
        passed=False,
        agreement=float((fp32 == bf16).mean()),
        rows=len(heldout),
        accuracy_fp32=acc_fp32,
        accuracy_bf16=acc_bf16,
        min_agreement=BF16_MIN_AGREEMENT,
        max_accuracy_drop=BF16_MAX_DROP,
        speed_ratio=round(speeds[OV_BF16] / speeds[FP32], 3),
        img_per_s={k: round(v, 1) for k, v in speeds.items()},
        batch_size=batch,
        timed_rows=timed_rows,
        cpu=system.describe_cpu(),
        openvino=openvino_version(),
    )
    return Bf16Check(**{**partial.to_dict(), "passed": not partial.problems()})


def _speeds(
    runtimes: dict[str, Predictor], heldout: np.ndarray, batch: int
) -> tuple[int, dict[str, float]]:
    """(rows per timed call, img/s of each runtime): its best of SPEED_ROUNDS calls."""
    probe = np.resize(heldout, (batch, heldout.shape[1]))
    per_row = 0.0
    for predictor in runtimes.values():
        predictor.run_batches(probe, batch)  # warm-up: first-call allocations and compilation
        t0 = time.perf_counter()
        predictor.run_batches(probe, batch)
        per_row = max(per_row, (time.perf_counter() - t0) / batch)
    fits = int(SPEED_CALL_S / per_row) // batch * batch if per_row > 0 else SPEED_ROWS
    rows = np.resize(heldout, (max(batch, min(SPEED_ROWS, fits)), heldout.shape[1]))
    best = dict.fromkeys(runtimes, float("inf"))
    for _ in range(SPEED_ROUNDS):
        for name, predictor in runtimes.items():
            t0 = time.perf_counter()
            predictor.run_batches(rows, batch)
            best[name] = min(best[name], time.perf_counter() - t0)
    return len(rows), {name: len(rows) / seconds for name, seconds in best.items()}
