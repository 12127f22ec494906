"""The numeric-parity gate: PyTorch eval-mode logits vs an onnxruntime session."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from fcls.infer.common.errors import ProviderError
from fcls.infer.common.numeric import softmax
from fcls.infer.common.spec import ImageSpec
from fcls.infer.engine.session import CPU, CUDA, make_session
from fcls.train.predict import to_input

from .graph import INPUT

BATCH1_IMAGES = 64  # batch size 1 runs one session call per image: check a prefix only


@dataclass(frozen=True)
class ParityResult:
    """Figures of one parity check and whether they pass its gate."""

    variant: str
    provider: str
    images: int
    batch_sizes: tuple[int, ...]
    max_abs_dlogit: float
    logit_scale: float  # max |logit| of the reference: tolerances scale with it
    tolerance: float | None  # None: this gate checks agreement only
    max_abs_dproba: float
    top1_agreement: float
    min_agreement: float
    nonfinite: int
    label_mismatch: int  # rows whose graph `label` output is not argmax of its `logits`
    passed: bool
    accuracy: float | None = None  # of the candidate, where true labels were given

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return asdict(self)

    def summary(self) -> str:
        """One line of figures, e.g. for an error message."""
        tol = "" if self.tolerance is None else f" (tol {self.tolerance:.1e})"
        return (
            f"{self.variant} on {self.provider}: max |dlogit| {self.max_abs_dlogit:.1e}{tol}, "
            f"max |dprob| {self.max_abs_dproba:.1e}, top-1 agreement {100 * self.top1_agreement:.2f}% "
            f"over {self.images} images at batch {'/'.join(map(str, self.batch_sizes))}"
            + (f", {self.nonfinite} non-finite" if self.nonfinite else "")
        )


@torch.no_grad()
def reference_logits(
    model: torch.nn.Module, spec: ImageSpec, pixels: np.ndarray, batch: int = 256
) -> np.ndarray:
    """(N, K) float32 logits of the eval-mode PyTorch model for (N, P) uint8 rows of `spec`."""
    model.eval()
    out = [
        model(to_input(torch.from_numpy(pixels[i : i + batch]), spec)).numpy()
        for i in range(0, len(pixels), batch)
    ]
    return np.concatenate(out) if out else np.empty((0, spec.n_classes), np.float32)


def exact_session(path: Path | bytes, provider: str = "cpu") -> ort.InferenceSession:
    """An onnxruntime session on exactly the provider asked for (no silent CPU fallback)."""
    name = {"cpu": CPU, "cuda": CUDA}[provider]
    # a gate runs each batch size once: an arena would only hold on to the largest one's memory
    session = make_session(path, (name,), optimization="all", arena=False)
    if session.get_providers()[0] != name:
        raise ProviderError(f"{name} is not active (got {', '.join(session.get_providers())})")
    return session


def run_session(
    session: ort.InferenceSession, pixels: np.ndarray, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) float32 and labels (N,) int64 of a uint8-input session, `batch` rows a call."""
    logits, labels = [], []
    for i in range(0, len(pixels), batch):
        lo, la = session.run(None, {INPUT: pixels[i : i + batch]})
        logits.append(lo)
        labels.append(la)
    return np.concatenate(logits), np.concatenate(labels)


@dataclass
class _Tally:
    """Figures gathered over the runs at each batch size: counts add up, worst cases max."""

    worst_logit: float = 0.0
    worst_proba: float = 0.0
    agree: int = 0
    total: int = 0
    nonfinite: int = 0
    label_mismatch: int = 0
    accuracy: float | None = None  # of the last run over all of `truth`

    def add(
        self,
        logits: np.ndarray,
        labels: np.ndarray,
        ref: np.ndarray,
        n: int,
        truth: np.ndarray | None,
    ) -> None:
        """Count one run of `n` rows: its logits and labels against the reference's `ref`."""
        finite = np.isfinite(logits).all(axis=1)
        self.nonfinite += int((~finite).sum())
        diff = np.abs(logits.astype(np.float64) - ref)
        self.worst_logit = max(
            self.worst_logit, float(np.nanmax(diff, initial=0.0)) if finite.all() else np.inf
        )
        self.worst_proba = max(
            self.worst_proba, float(np.abs(softmax(logits) - softmax(ref)).max(initial=0.0))
        )
        self.agree += int((logits.argmax(1) == ref.argmax(1)).sum())
        self.label_mismatch += int((labels != logits.argmax(1)).sum())
        if truth is not None and n == len(truth):
            self.accuracy = float((labels == truth).mean()) if n else None
        self.total += n


def check_parity(
    reference: np.ndarray,  # (N, K) float32 logits of the source model
    onnx_model: Path | bytes,
    pixels: np.ndarray,  # (N, P) uint8
    *,
    variant: str = "fp32",
    batch_sizes: tuple[int, ...] = (1, 7, 256),
    atol: float | None = 1e-4,
    min_agreement: float = 1.0,
    provider: str = "cpu",
    truth: np.ndarray | None = None,  # (N,) true labels: also report the candidate's accuracy
) -> ParityResult:
    """Compare an ONNX model against reference logits at each batch size; gate on the figures.

    `reference` are the source model's logits for `pixels`; `onnx_model` is a path or the
    serialized model; each of `batch_sizes` runs the whole set (batch 1 a prefix of it).
    The gate passes when no output is non-finite, the graph's `label` equals argmax(logits),
    top-1 agreement >= `min_agreement` and, unless `atol` is None, max |dlogit| <=
    `atol * max(1, max |reference logit|)`. `truth` adds the candidate's accuracy. Returns
    the figures with `passed`; raises only for a session that cannot run on `provider`.
    """
    session = exact_session(onnx_model, provider)
    scale = float(max(1.0, np.abs(reference).max(initial=0.0)))
    tally = _Tally()
    for b in batch_sizes:
        n = min(len(pixels), BATCH1_IMAGES) if b == 1 else len(pixels)
        logits, labels = run_session(session, pixels[:n], b)
        tally.add(logits, labels, reference[:n], n, truth)
    agreement = tally.agree / tally.total if tally.total else 1.0
    tolerance = None if atol is None else atol * scale
    passed = (
        tally.nonfinite == 0
        and tally.label_mismatch == 0
        and agreement >= min_agreement
        and (tolerance is None or tally.worst_logit <= tolerance)
    )
    return ParityResult(
        variant=variant,
        provider=provider,
        images=len(pixels),
        batch_sizes=tuple(batch_sizes),
        max_abs_dlogit=tally.worst_logit,
        logit_scale=scale,
        tolerance=tolerance,
        max_abs_dproba=tally.worst_proba,
        top1_agreement=agreement,
        min_agreement=min_agreement,
        nonfinite=tally.nonfinite,
        label_mismatch=tally.label_mismatch,
        passed=passed,
        accuracy=tally.accuracy,
    )
