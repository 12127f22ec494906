"""`fcls-study`: the reference notebook's comparison of its networks and optimizers."""

from __future__ import annotations

from pathlib import Path

import click

from fcls.infer.cli.kit import CONTEXT, Run, standard
from fcls.infer.common.errors import ConfigError
from fcls.infer.common.extras import require
from fcls.infer.common.spec import parse_image_size

from .cli import (
    BATCH_SIZE_OPTION,
    CLASS_NAMES_OPTION,
    DATA_OPTION,
    DEVICE_OPTION,
    IMAGE_SIZE_OPTION,
    LIMIT_OPTION,
    PRECISION_OPTION,
    parsed_option,
)
from .config import parse_class_names
from .study import OPTIMIZERS, SERIES, StudyConfig, StudyResult, plan_runs

DEFAULTS = StudyConfig(runs=())


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip()) if value else ()


@click.command(context_settings=CONTEXT)
@DATA_OPTION
@click.option(
    "--series",
    metavar="dense,cnn",
    default=None,
    help=f"The notebook's series to run ({', '.join(SERIES)}): each network of the series "
    "with Adam, and its base network with SGD and with Adam + L2. "
    "Default: both, unless --arch is given.",
)
@click.option(
    "--arch",
    metavar="A,B,...",
    default=None,
    help="Networks to compare (`fcls-train --arch list`, or package.module:Class), each "
    "trained with every optimizer of --optimizers.",
)
@click.option(
    "--optimizers",
    metavar=",".join(OPTIMIZERS),
    default="adam",
    show_default=True,
    help="For --arch: adam (torch's defaults), sgd (torch's defaults), l2 (Adam with "
    "weight decay 1e-2), as the notebook compared them.",
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    default=DEFAULTS.out,
    show_default=True,
    help="Directory for study.csv, study.md, the two pictures and runs/NAME/ (each an "
    "fcls-train output: model.pt for fcls-export).",
)
@click.option(
    "--max-epochs", type=click.IntRange(min=1), default=DEFAULTS.max_epochs, show_default=True
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=DEFAULTS.patience,
    show_default=True,
    help="Early stopping: epochs without a better validation accuracy.",
)
@BATCH_SIZE_OPTION
@LIMIT_OPTION
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@DEVICE_OPTION
@PRECISION_OPTION
@IMAGE_SIZE_OPTION
@CLASS_NAMES_OPTION
@click.option(
    "--restart", is_flag=True, help="Train every run again instead of keeping those done."
)
@standard("fcls-study", torch=True)
def main(
    data: Path | None,
    series: str | None,
    arch: str | None,
    optimizers: str,
    out: Path,
    max_epochs: int,
    patience: int,
    batch_size: int,
    limit: int | None,
    seed: int,
    device: str,
    precision: str | None,
    image_size: str | None,
    class_names: str | None,
    restart: bool,
    run: Run,
) -> None:
    """Train the notebook's networks on one split with its early stopping, and compare them in
    a table (study.csv, study.md) and two pictures (validation loss per epoch, best validation
    accuracy). A study started again continues with the runs it had not finished."""
    names = parsed_option(parse_class_names, class_names, "--class-names")
    parsed_option(parse_image_size, image_size, "--image-size")
    require("fcls-study", "torch", "scipy", "sklearn", "matplotlib")
    try:
        runs = plan_runs(_names(series), _names(arch), _names(optimizers))
    except ConfigError as e:  # a bad --series, --arch or --optimizers: a usage error
        raise click.UsageError(str(e)) from None
    config = StudyConfig(
        runs=runs,
        out=out,
        data=data,
        limit=limit,
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        seed=seed,
        device=device,
        precision=precision or "auto",
        image_size=image_size,
        class_names=names,
        restart=restart,
        progress=not run.quiet,
    )
    run.log(f"{len(runs)} runs: {', '.join(r.label for r in runs)}")
    from .study import run_study

    _summarise(run, run_study(config, log=run.echo))


def _summarise(run: Run, result: StudyResult) -> None:
    best = max(result.results, key=lambda r: r.best_val_accuracy)
    run.summary(
        {
            "output": str(result.out),
            "runs": [r.row() for r in result.results],
            "trained": result.trained,
            "seconds": round(result.seconds, 3),
            "files": [str(p) for p in result.files],
        },
        f"{len(result.results)} runs ({result.trained} trained now) | best validation accuracy "
        f"{best.best_val_accuracy:.4f} ({best.run}) | {result.seconds:.0f}s | "
        f"{result.out / 'study.md'}",
    )


if __name__ == "__main__":  # python -m fcls.train.study_cli
    main()
