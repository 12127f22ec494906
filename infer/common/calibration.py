"""Probability calibration: temperature scaling, NLL, expected calibration error (ECE).

A net trained with cross-entropy, label noise and heavy dropout gives softmax scores that are
not the frequencies they claim. Temperature scaling divides the logits by one scalar T, fitted
on held-out labelled rows to minimise the negative log-likelihood; it never changes a label
(argmax is invariant), only how sure the probabilities say the model is. `fcls-export` fits T
on the validation split and records it in the model's profile; the predictor applies it to
`--proba`; fcls-eval reports ECE before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ECE_BINS = 15
# NLL(logits / T) is convex in 1/T, so a golden-section search over this bracket of 1/T
# finds its minimum; the bracket spans any temperature a sane model needs.
INVERSE_T_BRACKET = (0.02, 20.0)
SEARCH_STEPS = 80


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (n, k) logits in float64 (no overflow)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    if not len(labels):
        return float("nan")
    logp = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises nll(logits, labels, T) (golden-section search on 1/T)."""
    if not len(labels):
        raise ValueError("fit_temperature needs at least one labelled row")
    lo, hi = INVERSE_T_BRACKET
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, 1 / a), nll(logits, labels, 1 / b)
    for _ in range(SEARCH_STEPS):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, 1 / a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, 1 / b)
    return float(1 / ((lo + hi) / 2))


@dataclass
class Reliability:
    """Confidence vs accuracy in ECE_BINS equal-width confidence bins, in constant memory:
    add batches of logits and true labels, read ECE, NLL and the per-bin figures of
    softmax(logits / temperature)."""

    temperature: float = 1.0
    bins: int = ECE_BINS
    rows: np.ndarray = field(init=False)  # (bins,) rows whose top probability falls in the bin
    confidence: np.ndarray = field(init=False)  # (bins,) sum of top probabilities
    correct: np.ndarray = field(init=False)  # (bins,) rows whose top class is the true one
    log_loss: float = field(init=False, default=0.0)  # sum of -log p(true class)

    def __post_init__(self) -> None:
        self.rows = np.zeros(self.bins, np.int64)
        self.confidence = np.zeros(self.bins, np.float64)
        self.correct = np.zeros(self.bins, np.int64)

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        """Count one batch: (n, k) logits and (n,) true labels."""
        logp = log_softmax(np.asarray(logits, np.float64) / self.temperature)
        top = np.exp(logp.max(axis=1))
        hit = logp.argmax(axis=1) == labels
        # bin b holds confidences in (b/bins, (b+1)/bins]; 0 joins the first bin
        where = np.clip(np.ceil(top * self.bins).astype(np.int64) - 1, 0, self.bins - 1)
        self.rows += np.bincount(where, minlength=self.bins)
        self.confidence += np.bincount(where, weights=top, minlength=self.bins)
        self.correct += np.bincount(where, weights=hit, minlength=self.bins).astype(np.int64)
        self.log_loss += float(-logp[np.arange(len(labels)), labels].sum())

    @property
    def total(self) -> int:
        return int(self.rows.sum())

    def ece(self) -> float:
        """Expected calibration error: sum over bins of (rows share) x |accuracy - confidence|."""
        if not self.total:
            return float("nan")
        gap = np.abs(self.correct - self.confidence)  # per bin, in rows
        return float(gap.sum() / self.total)

    def nll(self) -> float:
        """Mean negative log-likelihood of the true labels."""
        return self.log_loss / self.total if self.total else float("nan")

    def to_dict(self) -> dict[str, object]:
        """ECE, NLL and the reliability diagram's bins as plain types."""
        seen = np.maximum(self.rows, 1)
        return {
            "bins": self.bins,
            "ece": self.ece(),
            "nll": self.nll(),
            "bin_rows": self.rows.tolist(),
            "bin_confidence": (self.confidence / seen).tolist(),
            "bin_accuracy": (self.correct / seen).tolist(),
        }


def reliability(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> Reliability:
    """The reliability tally of softmax(logits / temperature) against `labels`."""
    tally = Reliability(temperature)
    tally.add(logits, labels)
    return tally
