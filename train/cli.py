"""`fcls-train`: the notebook's staged training of any of its networks (FinalCNNet by default)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from fcls.infer.cli.kit import CONTEXT, Run, standard
from fcls.infer.common.errors import FclsError
from fcls.infer.common.extras import require
from fcls.infer.common.spec import parse_image_size

from .config import (
    FAST,
    NOTEBOOK,
    PRECISION_REQUESTS,
    RECIPES,
    Stage,
    TrainConfig,
    parse_class_names,
)
from .registry import DEFAULT_ARCH, canonical_name

if TYPE_CHECKING:
    from .trainer import TrainResult

T = TypeVar("T")
LIST = "list"  # --arch list: print the networks instead of training


# the options fcls-train shares with fcls-study (one spelling, one help text)
DATA_OPTION = click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Train file: CSV, .csv.gz, Parquet or Arrow (pixel columns, then label); or a folder "
    "of PNG/JPEG images in one sub-folder per class (the label its name). "
    "Default: scikit-learn's bundled digits (8x8, scaled to 32x32).",
)
IMAGE_SIZE_OPTION = click.option(
    "--image-size",
    metavar="HxW|HxWxC",
    default=None,
    help="The images' height, width and channels (pixels HWC, e.g. 32x32x3 for RGB). "
    "Default: square grayscale from the number of pixel columns; for a folder of images, "
    "the first image's size (others are resized to it).",
)
DEVICE_OPTION = click.option(
    "--device",
    type=click.Choice(["auto", "cuda", "mps", "cpu"]),
    default=TrainConfig.device,
    show_default=True,
)
BATCH_SIZE_OPTION = click.option(
    "--batch-size", type=click.IntRange(min=2), default=TrainConfig.batch_size, show_default=True
)
LIMIT_OPTION = click.option(
    "--limit", type=click.IntRange(min=10), default=None, help="Read only the first N rows."
)
PRECISION_OPTION = click.option(
    "--precision",
    type=click.Choice(PRECISION_REQUESTS),
    default=None,
    help="auto (default): bf16 autocast on CUDA GPUs with bf16 and on CPUs with AVX512-BF16 "
    "or AMX, fp32 elsewhere (bf16 there is emulated, many times slower, and refused). Weights "
    "and exported models stay fp32.",
)
CLASS_NAMES_OPTION = click.option(
    "--class-names",
    metavar="A,B,...|@FILE",
    default=None,
    help="Names of the integer classes 0..K-1 (exactly K), comma-separated or one per line "
    "in FILE. Default: their numbers; text labels name themselves.",
)


OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six")


def stage_words(stage: Stage) -> str:
    """A stage as --help names it: `Adam+L2`, `Nesterov SGD+L2`, `SGD`."""
    name = OPTIMIZER_NAMES.get(stage.optimizer, stage.optimizer)
    return ("Nesterov " if stage.nesterov else "") + name + ("+L2" if stage.weight_decay else "")


def _count(n: int, what: str) -> str:
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    return f"{word} {what}" + ("s" if n != 1 else "")


def recipe_help() -> str:
    """--recipe's help, its figures formatted from train/config.py (the one source of truth
    for them: --help, README and config must agree, as tests/test_config.py checks)."""
    stages = ", ".join(stage_words(s) for s in NOTEBOOK.stages)
    fast_stages = " then ".join(stage_words(s) for s in FAST.stages)
    return (
        f"notebook: the reference notebook's {_count(len(NOTEBOOK.stages), 'stage')} "
        f"({stages}; patience {NOTEBOOK.patience}) on x4-augmented copies. "
        f"fast: {_count(len(FAST.stages), 'stage')} of {fast_stages} on a warm-up + cosine "
        f"schedule ({FAST.epochs} epochs), augmentation drawn per batch (views, shifts, "
        f"erasing), label smoothing {FAST.label_smoothing:g}, and validation, early stopping "
        f"(patience {FAST.patience}) and model.pt on the weights' moving average."
    )


@click.command(context_settings=CONTEXT)
@DATA_OPTION
@click.option(
    "--arch",
    metavar="NAME|module:Class|list",
    default=DEFAULT_ARCH,
    show_default=True,
    help="The network: one of the notebook's (case-insensitive; `--arch list` prints them "
    "with their parameters and multiply-adds, then exits) or your own torch module "
    "package.module:ClassName, whose constructor takes an ImageSpec.",
)
@IMAGE_SIZE_OPTION
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
    help=recipe_help(),
)
@DEVICE_OPTION
@click.option(
    "--max-epochs",
    type=click.IntRange(min=1),
    default=TrainConfig.max_epochs,
    show_default=True,
    help=f"Per stage (the fast recipe's {FAST.epochs}-epoch schedule shrinks to fit).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Early stopping: epochs without a better validation accuracy. Default: the recipe's "
    f"({', '.join(f'{r.name} {r.patience}' for r in RECIPES.values())}).",
)
@BATCH_SIZE_OPTION
@click.option(
    "--seed",
    type=int,
    default=TrainConfig.seed,
    show_default=True,
    help="Weights, dropout and shuffling.",
)
@LIMIT_OPTION
@PRECISION_OPTION
@click.option("--amp", is_flag=True, help="Same as --precision bf16.")
@click.option(
    "--no-shuffle", is_flag=True, help="Keep file order every epoch, as the notebook did."
)
@click.option(
    "--restart", is_flag=True, help="Discard a previous run in --out instead of resuming it."
)
@click.option(
    "--write-test-csv",
    is_flag=True,
    help="Also write the held-out test split as OUTPUT/test.csv (ID,pix1..pixN) for "
    "fcls-infer and OUTPUT/test_labelled.csv (pix1..pixN,label) for fcls-eval.",
)
@CLASS_NAMES_OPTION
@standard("fcls-train", torch=True)
def main(
    data: Path | None,
    arch: str,
    image_size: str | None,
    out: Path,
    recipe: str,
    device: str,
    max_epochs: int,
    patience: int | None,
    batch_size: int,
    seed: int,
    limit: int | None,
    precision: str | None,
    amp: bool,
    no_shuffle: bool,
    restart: bool,
    write_test_csv: bool,
    class_names: str | None,
    run: Run,
) -> None:
    """Train a network (FinalCNNet unless --arch): the notebook's staged recipe, or --recipe
    fast."""
    names = parsed_option(parse_class_names, class_names, "--class-names")
    parsed_option(parse_image_size, image_size, "--image-size")
    require("fcls-train", "torch", "scipy", "sklearn", "matplotlib")
    if arch.strip().lower() == LIST:
        _list_networks(run, data, image_size, names)
        return
    arch = parsed_option(canonical_name, arch, "--arch") or arch  # as the registry spells it
    if data is not None and data.exists():
        from fcls.infer.formats.sources import check_header

        # the data's layout before --out is made: a file without a header, or a folder
        # without class folders of images, is refused with no empty output folder left behind
        check_header(data, "labelled")
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
        precision=_precision(precision, amp),
        restart=restart,
        write_test_csv=write_test_csv,
        class_names=names,
        arch=arch,
        image_size=image_size,
        progress=not run.quiet,
    )
    from .trainer import train

    _summarise(run, train(config, log=run.echo))


def _precision(precision: str | None, amp: bool) -> str:
    """--precision, with --amp as another name for bf16 (both given: they must agree)."""
    if amp and precision not in (None, "bf16"):
        raise click.UsageError(
            f"--amp means --precision bf16; it contradicts --precision {precision}"
        )
    return "bf16" if amp else precision or "auto"


def _summarise(run: Run, result: TrainResult) -> None:
    """The run's summary line (or JSON object): accuracy, epochs, time, where model.pt is."""
    from fcls.infer.common.system import file_sha256

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
            "architecture": result.architecture,
            "precision": result.precision.to_dict(),
            "image_spec": result.spec.to_dict(),
            "resumed_from": result.resumed_from,
        },
        f"test accuracy {result.test_accuracy:.4f} on {result.split['test']} rows | "
        f"epochs {epochs} | {result.seconds:.0f}s on {result.device}, "
        f"{result.precision.precision} | {model}",
    )


def parsed_option(parse: Callable[[str], T], value: str | None, name: str) -> T | None:
    """`parse(value)`, an FclsError turned into click's usage error (exit 2, nothing done)."""
    if value is None:
        return None
    try:
        return parse(value)
    except FclsError as e:
        raise click.BadParameter(str(e).removeprefix(f"{name}: "), param_hint=name) from None


def _list_networks(
    run: Run,
    data: Path | None,
    image_size: str | None,
    names: tuple[str, ...] | None,
) -> None:
    """`--arch list`: one line per registered network at the data's geometry (read from the
    first row of --data, else the digits' 32x32 grayscale), then exit."""
    from fcls.infer.common.spec import ImageSpec, geometry_for, number_names

    from .networks import GeometryError
    from .registry import list_models, model_info

    if data is None:  # the bundled digits (32x32 grayscale), or the size given
        height, width, channels = parse_image_size(image_size) if image_size else (32, 32, 1)
    else:
        from fcls.infer.formats.sources import image_size_of, read_train

        size = image_size_of(data, image_size)  # a folder's: the first image's, if not given
        n_pixels = read_train(data, limit=1, image_size=size)[0].shape[1]  # one row's length
        height, width, channels = geometry_for(n_pixels, size)
    spec = ImageSpec(height, width, channels, names or number_names(10))
    rows: list[dict[str, object]] = []
    lines: list[str] = []
    for name in list_models():
        try:
            info = model_info(name, spec)
        except GeometryError as e:
            rows.append({"name": name, "error": str(e)})
            lines.append(f"{name:<18} {str(e).removeprefix(name + ' ')}")
            continue
        rows.append(
            {"name": name, "parameters": info.parameters, "multiply_adds": info.multiply_adds}
        )
        lines.append(
            f"{name:<18} {info.parameters:>12,} parameters {info.multiply_adds / 1e6:>10.2f} M "
            "multiply-adds per image"
        )
    assumed = "" if names else " (a 10-class head: the classes are counted when training)"
    run.log(f"networks for {spec.describe()}{assumed}")
    run.summary({"image_spec": spec.to_dict(), "networks": rows}, "\n".join(lines))


def _seconds_per_epoch(history: Path) -> float | None:
    """Mean wall time of the epochs in history.csv (also right for a resumed run)."""
    try:
        with history.open(newline="") as f:
            seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return None
    return round(sum(seconds) / len(seconds), 3) if seconds else None
