"""A study's files: `study.csv`, `study.md` and the notebook's two pictures of it."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcls.infer.common.output import atomic_file, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TABLE_CSV = "study.csv"
TABLE_MD = "study.md"
LOSS_PNG = "val_loss.png"
ACCURACY_PNG = "best_val_accuracy.png"
TABLE_FIELDS = (
    "run",
    "network",
    "optimizer",
    "parameters",
    "multiply_adds",
    "epochs",
    "stopped_by",
    "best_val_accuracy",
    "test_accuracy",
    "seconds",
    "images_per_second",
)


@dataclass(frozen=True)
class RunResult:
    """One row of the study's table, with the run's validation history for the pictures."""

    run: str
    network: str
    optimizer: str
    series: str
    parameters: int
    multiply_adds: int
    epochs: int
    stopped_by: str  # "early stopping" or "epoch limit", as the notebook tells them apart
    best_val_accuracy: float
    test_accuracy: float
    # what trained it and at which precision: `cpu: <model>, N CPUs, <flags>, bf16`
    hardware: str
    seconds: float  # the epochs' wall time: training and validation
    images_per_second: float  # training images per second of `seconds`
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TABLE_FIELDS}


def write_table(out: Path, heading: str, results: list[RunResult]) -> tuple[Path, Path]:
    """study.csv (one row per run, plain numbers) and study.md (the same for people, under
    `heading`: what the runs shared)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = r.row()
        for key in ("best_val_accuracy", "test_accuracy"):
            row[key] = f"{row[key]:.4f}"
        row["seconds"] = f"{r.seconds:.3f}"
        row["images_per_second"] = f"{r.images_per_second:.0f}"
        writer.writerow(row)
    csv_path = atomic_write_text(out / TABLE_CSV, buf.getvalue())
    md_path = atomic_write_text(out / TABLE_MD, _markdown(heading, results))
    return csv_path, md_path


def _markdown(heading: str, results: list[RunResult]) -> str:
    lines = [
        "# Study",
        "",
        heading,
        f"Hardware: {', '.join(sorted({r.hardware for r in results})) or 'none yet'}.",
        "",
        "| run | optimizer | parameters | M multiply-adds | epochs | stopped by "
        "| best val acc | test acc | seconds | img/s |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.run} | {r.optimizer} | {r.parameters:,} | {r.multiply_adds / 1e6:.2f} "
            f"| {r.epochs} | {r.stopped_by} | {r.best_val_accuracy:.4f} | {r.test_accuracy:.4f} "
            f"| {r.seconds:.0f} | {r.images_per_second:,.0f} |"
        )
    lines += [
        "",
        "Seconds: the epochs' wall time (training and validation); img/s: training images "
        "per second of it.",
        "",
        f"![validation loss per epoch]({LOSS_PNG})",
        f"![best validation accuracy per run]({ACCURACY_PNG})",
        "",
    ]
    return "\n".join(lines)


def write_pictures(results: list[RunResult], out: Path) -> tuple[Path, ...]:
    """The notebook's two pictures, one panel per series: validation loss per epoch of every
    run, and each run's best validation accuracy as a bar (the series' first run dashed)."""
    from matplotlib.figure import Figure

    series = list(dict.fromkeys(r.series for r in results))
    if not series:
        return ()
    paths = []
    for name, draw in ((LOSS_PNG, _loss_panel), (ACCURACY_PNG, _accuracy_panel)):
        fig = Figure(figsize=(10, 4.5 * len(series)), layout="constrained")
        axes = fig.subplots(len(series), 1, squeeze=False)[:, 0]
        for ax, group in zip(axes, series):
            draw(ax, [r for r in results if r.series == group], group)
        with atomic_file(out / name, durable=False) as f:
            fig.savefig(f.raw, format="png", dpi=100)
        paths.append(out / name)
    return tuple(paths)


SERIES_TITLES = {"dense": "dense networks", "cnn": "convolutional networks"}


def _title(series: str) -> str:
    return SERIES_TITLES.get(series, series)


def _loss_panel(ax: Axes, results: list[RunResult], series: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for r in results:
        epochs = range(1, len(r.val_loss) + 1)
        ax.plot(epochs, r.val_loss, marker="." if len(r.val_loss) < 3 else None, label=r.run)
    ax.set(title=f"Learning curve: {_title(series)}", xlabel="epoch", ylabel="validation loss")
    ax.legend(fontsize="small")


def _accuracy_panel(ax: Axes, results: list[RunResult], series: str) -> None:
    accuracies = [r.best_val_accuracy for r in results]
    bars = ax.bar([r.run for r in results], accuracies, alpha=0.7, color=_colours(len(results)))
    ax.bar_label(bars, fmt="%.4f", fontsize="small")
    # the notebook's broken axis, as one zoomed axis: the differences are a few points
    low, high = min(accuracies), max(accuracies)
    margin = max(0.01, (high - low) * 0.5)
    ax.set_ylim(max(0.0, low - margin), min(1.0, high + margin / 2))
    ax.axhline(accuracies[0], alpha=0.4, c="black", linestyle="--", linewidth=0.6)
    ax.set(title=f"Best accuracy: {_title(series)}", ylabel="validation accuracy")
    ax.tick_params(axis="x", labelrotation=20, labelsize="small")


def _colours(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]
