"""`fcls-train`: the notebook's staged FinalCNNet training."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from fcls.infer.cli.kit import CONTEXT, Run, standard
from fcls.infer.common.errors import FclsError
from fcls.infer.common.extras import require

from .config import RECIPES, TrainConfig, parse_class_names


@click.command(context_settings=CONTEXT)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Train CSV (pix1..pix1024,label). Default: scikit-learn's bundled digits.",
)
@click.option(
    "-o",
    "--output",
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=TrainConfig.out,
    show_default=True,
    help="Directory for model.pt (what fcls-export reads by default), history.csv, "
    "report.json and plots.",
)
@click.option(
    "--recipe",
    type=click.Choice(list(RECIPES)),
    default=TrainConfig.recipe.name,
    show_default=True,
    help="notebook: the reference notebook's staged Adam, SGD+L2, SGD on x4-augmented copies. "
    "fast: one stage of Nesterov SGD on a warm-up + cosine schedule (30 epochs), "
    "augmentation drawn per batch (views, shifts, erasing), label smoothing 0.1, and "
    "validation, early stopping and model.pt on the weights' moving average.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cuda", "mps", "cpu"]),
    default=TrainConfig.device,
    show_default=True,
)
@click.option(
    "--max-epochs",
    type=click.IntRange(min=1),
    default=TrainConfig.max_epochs,
    show_default=True,
    help="Per stage (the fast recipe's schedule shrinks to fit).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Early stopping: epochs without a better validation accuracy. "
    "Default: the recipe's (notebook 4, fast 8).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=2), default=TrainConfig.batch_size, show_default=True
)
@click.option(
    "--seed",
    type=int,
    default=TrainConfig.seed,
    show_default=True,
    help="Weights, dropout and shuffling.",
)
@click.option(
    "--limit", type=click.IntRange(min=10), default=None, help="Read only the first N rows."
)
@click.option("--amp", is_flag=True, help="bf16 autocast (fast on GPUs).")
@click.option(
    "--no-shuffle", is_flag=True, help="Keep file order every epoch, as the notebook did."
)
@click.option(
    "--restart", is_flag=True, help="Discard a previous run in --out instead of resuming it."
)
@click.option(
    "--write-test-csv",
    is_flag=True,
    help="Also write the held-out test split as OUTPUT/test.csv (ID,pix1..pix1024) for fcls-infer.",
)
@click.option(
    "--class-names",
    metavar="A,B,...|@FILE",
    default=None,
    help="The 10 class names, comma-separated or one per line in FILE. "
    "Default: Fashion-MNIST's for --data, 0..9 for the digits.",
)
@standard("fcls-train", torch=True)
def main(
    data: Path | None,
    out: Path,
    recipe: str,
    device: str,
    max_epochs: int,
    patience: int | None,
    batch_size: int,
    seed: int,
    limit: int | None,
    amp: bool,
    no_shuffle: bool,
    restart: bool,
    write_test_csv: bool,
    class_names: str | None,
    run: Run,
) -> None:
    """Train FinalCNNet: the notebook's staged recipe (Adam, SGD+L2, SGD), or --recipe fast."""
    try:
        names = None if class_names is None else parse_class_names(class_names)
    except FclsError as e:
        raise click.BadParameter(
            str(e).removeprefix("--class-names: "), param_hint="--class-names"
        ) from None
    config = TrainConfig(
        out=out,
        data=data,
        limit=limit,
        recipe=RECIPES[recipe],
        device=device,
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        seed=seed,
        shuffle=not no_shuffle,
        amp=amp,
        restart=restart,
        write_test_csv=write_test_csv,
        class_names=names,
        progress=not run.quiet,
    )
    if data is None:
        run.log("no --data given, training on scikit-learn's bundled digits (8x8 scaled to 32x32)")
    require("fcls-train", "torch", "scipy", "sklearn", "matplotlib")
    from fcls.infer.common.system import file_sha256

    from .trainer import train

    result = train(config, log=run.echo)
    epochs = "+".join(str(n) for n in result.epochs.values())
    model = result.out / "model.pt"
    run.summary(
        {
            "output": str(result.out),
            "model": str(model),
            "model_sha256": file_sha256(model),
            "test_accuracy": result.test_accuracy,
            "split": result.split,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 3),
            "seconds_per_epoch": _seconds_per_epoch(result.out / "history.csv"),
            "device": result.device,
            "resumed_from": result.resumed_from,
        },
        f"test accuracy {result.test_accuracy:.4f} on {result.split['test']} rows | "
        f"epochs {epochs} | {result.seconds:.0f}s on {result.device} | {model}",
    )


def _seconds_per_epoch(history: Path) -> float | None:
    """Mean wall time of the epochs in history.csv (also right for a resumed run)."""
    try:
        with history.open(newline="") as f:
            seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return None
    return round(sum(seconds) / len(seconds), 3) if seconds else None
