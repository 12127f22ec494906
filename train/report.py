"""Test-split evaluation and the run's artefacts: model.pt, report.json and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcls.infer.common.metrics import confusion_png, metrics_from_labels
from fcls.infer.common.output import atomic_file, atomic_write_text
from fcls.infer.common.spec import ImageSpec

from .checkpoint import Checkpoint
from .config import TrainConfig
from .data import Split
from .precision import PrecisionChoice
from .predict import predict_logits
from .registry import canonical_name


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support/AUC and the confusion matrix.

    Everything but AUC comes from fcls.infer.common.metrics, the owner fcls-eval shares (its
    numbers equal scikit-learn's, zero_division=0); AUC is scikit-learn's roc_auc_score.
    """
    from sklearn.metrics import roc_auc_score

    m = metrics_from_labels(y_true, proba.argmax(1), len(class_names))
    per_class = m.per_class(class_names)
    for i, name in enumerate(class_names):
        positives = y_true == i
        per_class[name]["auc"] = (
            float(roc_auc_score(positives, proba[:, i]))
            if 0 < positives.sum() < len(y_true)
            else None
        )
    return {
        "accuracy": m.accuracy,
        "per_class": per_class,
        "confusion_matrix": m.confusion.tolist(),
    }


def write_outputs(
    *,
    config: TrainConfig,
    model: nn.Module,
    parts: Split,
    spec: ImageSpec,
    data_id: dict[str, Any],
    history: list[dict[str, Any]],
    device: torch.device,
    version: str,
    precision: PrecisionChoice,
) -> float:
    """Evaluate the final model on the test split and write model.pt, report.json and plots."""
    x_test = torch.from_numpy(parts.x_test).to(device)
    class_names = spec.class_names
    logits = predict_logits(model, x_test, spec=spec).cpu()
    proba = torch.softmax(logits, dim=1).numpy()  # (n_test, K) float32
    metrics = classification_metrics(parts.y_test, proba, class_names)
    out = config.out
    report = {
        "data": data_id,
        "split": parts.sizes(),
        "test_accuracy": metrics["accuracy"],
        "per_class": metrics["per_class"],
        "confusion_matrix": metrics["confusion_matrix"],
        "class_names": list(class_names),
        "architecture": canonical_name(config.arch),
        "image_spec": spec.to_dict(),
        "recipe": config.recipe.to_dict(),
        "precision": precision.to_dict(),
    }
    best_val = max(
        (h["val_accuracy"] for h in history if h["stage"] == config.stages[-1].name), default=None
    )
    Checkpoint(
        weights={k: v.detach().cpu() for k, v in model.state_dict().items()},
        architecture=canonical_name(config.arch),
        spec=spec,
        config=config.to_dict(),
        data={**data_id, "limit": config.limit, "split_seed": config.split_seed},
        split=parts.sizes(),
        metrics={"test_accuracy": metrics["accuracy"], "best_val_accuracy": best_val},
        epochs=len(history),
        fcls_version=version,
        precision=precision.to_dict(),
    ).save(out / "model.pt")
    _write_json(report, out / "report.json")
    _plots(history, metrics, parts.y_test, proba, class_names, out)
    return float(metrics["accuracy"])


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _save_png(fig: Any, path: Path) -> None:
    with atomic_file(path, durable=False) as f:
        fig.savefig(f.raw, format="png", dpi=100)


def _plots(
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    y_test: np.ndarray,
    proba: np.ndarray,
    class_names: tuple[str, ...],
    out: Path,
) -> None:
    """Learning curves, the confusion matrix and ROC curves as PNGs (no pyplot state)."""
    _learning_curves(history, out / "learning_curves.png")
    title = f"Confusion matrix (test, accuracy {metrics['accuracy']:.3f})"
    with atomic_file(out / "confusion_matrix.png", durable=False) as f:
        confusion_png(f.raw, np.array(metrics["confusion_matrix"]), class_names, title)
    _roc_curves(y_test, proba, class_names, out / "roc.png")


def _learning_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy over the global epoch index, stage boundaries dotted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    fig.suptitle("Learning curves")
    x = np.arange(1, len(history) + 1)
    for ax, what in zip(axes, ("loss", "accuracy")):
        ax.plot(x, [h[f"train_{what}"] for h in history], "--", label="train")
        ax.plot(x, [h[f"val_{what}"] for h in history], label="validation")
        for i in range(1, len(history)):
            if history[i]["stage"] != history[i - 1]["stage"]:
                ax.axvline(i + 0.5, color="grey", lw=0.8, ls=":")
        ax.set(title=what.capitalize(), xlabel="epoch", ylabel=what)
        ax.legend()
    _save_png(fig, path)


ROC_PANELS_MAX = 24  # more classes than this share one panel (a grid would be unreadable)


def _roc_curves(
    y_test: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...], path: Path
) -> None:
    """One-vs-rest ROC per class on the test split: a panel per class, up to
    ROC_PANELS_MAX classes, else every class's curve in one panel."""
    from matplotlib.figure import Figure
    from sklearn.metrics import RocCurveDisplay

    k = len(class_names)
    shared = k > ROC_PANELS_MAX
    cols = 1 if shared else min(k, 3)
    rows = 1 if shared else -(-k // cols)
    fig = Figure(
        figsize=(10 if shared else 10 * cols / 3, 10 if shared else 2.5 * rows + 1),
        layout="constrained",
    )
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    fig.suptitle(f"ROC per class (one vs rest, test split, {k} classes)")
    for i, name in enumerate(class_names):
        ax = axes[0] if shared else axes[i]
        positives = y_test == i
        if 0 < positives.sum() < len(y_test):
            RocCurveDisplay.from_predictions(positives, proba[:, i], ax=ax, name=f"{name} v rest")
        ax.set(xlabel="false positive rate", ylabel="true positive rate")
    if shared and axes[0].get_legend() is not None:
        axes[0].get_legend().remove()  # one entry per class: more legend than plot
    for ax in list(axes)[1 if shared else k :]:
        ax.remove()
    _save_png(fig, path)
