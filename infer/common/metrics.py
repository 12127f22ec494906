"""Classification metrics from a confusion matrix, and the confusion-matrix PNG: one owner for
fcls-train's and fcls-eval's reports.

Metrics follow scikit-learn's definitions and its `zero_division=0` convention: the precision
of a class never predicted, the recall of a class absent from the data, and the F1 of a class
that is neither are 0 (not NaN), and they count as 0 in the macro average. Torch-free and
sklearn-free (numpy only; matplotlib is imported only to draw, without pyplot's global state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """Scikit-learn's classification metrics, computed from one confusion matrix."""

    confusion: np.ndarray  # (k, k) int64: rows true class, columns predicted class
    precision: np.ndarray  # (k,) float64
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # (k,) int64 rows per true class

    @property
    def rows(self) -> int:
        """Rows counted."""
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        """Fraction of rows whose predicted label is the true one."""
        return float(np.trace(self.confusion) / self.rows) if self.rows else 0.0

    def average(self, how: str) -> dict[str, float]:
        """'macro' (every class weighs the same) or 'weighted' (by support) P/R/F1."""
        weights = np.ones(len(self.support)) if how == "macro" else self.support.astype(float)
        total = weights.sum()
        return {
            name: float((values * weights).sum() / total) if total else 0.0
            for name, values in (
                ("precision", self.precision),
                ("recall", self.recall),
                ("f1", self.f1),
            )
        }

    def per_class(self, class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{name: {precision, recall, f1, support}} as plain floats and ints."""
        return {
            name: {
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i, name in enumerate(class_names)
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(len(num), dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_confusion(confusion: np.ndarray) -> Metrics:
    """Per-class precision, recall, F1 and support from a (k, k) confusion matrix."""
    cm = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    # F1 as 2tp / (2tp + fp + fn), which is 0/0 only when the class is neither true nor predicted
    return Metrics(
        confusion=cm,
        precision=_ratio(tp, predicted),
        recall=_ratio(tp, support),
        f1=_ratio(2 * tp, support + predicted),
        support=support,
    )


def label_matrix(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int64 counts of (a[i], b[i]) pairs: a confusion matrix with a as rows."""
    return np.bincount(a * k + b, minlength=k * k).reshape(k, k)


def metrics_from_labels(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> Metrics:
    """Metrics of predicted labels against true ones, classes 0..k-1."""
    return metrics_from_confusion(label_matrix(y_true, y_pred, k))


def confusion_png(
    target: Path | IO[bytes], confusion: np.ndarray, class_names: Sequence[str], title: str
) -> None:
    """Draw a confusion matrix as a heat map with counts and save it as PNG to `target` (a path
    or a binary file); atomicity and error wording are the caller's."""
    from matplotlib.figure import Figure

    cm = np.asarray(confusion)  # (k, k) int64
    k = len(class_names)
    fig = Figure(figsize=(8, 8), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ticks = np.arange(k)
    ax.set_xticks(ticks, list(class_names), rotation=90)
    ax.set_yticks(ticks, list(class_names))
    ax.set(xlabel="predicted label", ylabel="true label")
    ax.set_title(title)
    dark = cm.max() / 2 if cm.size else 0
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > dark else "black")
    fig.savefig(target, format="png", dpi=100)


def reliability_png(
    target: Path | IO[bytes], calibrated: dict[str, Any], raw: dict[str, Any], title: str
) -> None:
    """Draw a reliability diagram (accuracy against confidence per bin, calibrated and raw,
    from `Reliability.to_dict`) and save it as PNG to `target`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 7), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for tally, name, style in ((raw, "softmax", "s--"), (calibrated, "calibrated", "o-")):
        seen = np.asarray(tally["bin_rows"]) > 0
        conf = np.asarray(tally["bin_confidence"])[seen]
        acc = np.asarray(tally["bin_accuracy"])[seen]
        ax.plot(conf, acc, style, label=f"{name} (ECE {tally['ece']:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.savefig(target, format="png", dpi=100)
