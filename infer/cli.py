"""`fcls-infer`: score CSV files of ID,pix1..pix1024 rows into results.csv (ID,label)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .errors import ConfigError, FclsError
from .extras import require


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--model",
    "model",
    type=click.Path(path_type=Path),
    default=Path("model.onnx"),
    show_default=True,
    help="ONNX model written by fcls-export.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Output file [results.csv]; a directory when there are several inputs.",
)
@click.option(
    "--provider", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="onnxruntime threads. Default: the CPUs this process may use.",
)
@click.option("--proba", is_flag=True, help="Add one probability column per class.")
@click.option("--class-names", is_flag=True, help="Write class names instead of indices.")
@click.option("--quiet", is_flag=True, help="No summary line.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a killed run of the same command after its last checkpoint (not for stdin).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: one pipelined process; ray: Ray Data over many files and workers.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster (auto, ray://host:port). Default: a private local one.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ray actors."
)
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True)
def main(
    inputs: tuple[str, ...],
    model: Path,
    output: Path | None,
    provider: str,
    batch_size: int,
    threads: int | None,
    proba: bool,
    class_names: bool,
    quiet: bool,
    resume: bool,
    engine: str,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
) -> None:
    """Predict a label for every row of each INPUT ('-' for stdin; .gz, directories, globs)."""
    from .inputs import expand_inputs, output_paths
    from .pipeline import predict_csv, predict_files

    progress = False if quiet else None  # None: a bar when stderr is a terminal

    def log(message: str) -> None:
        if not quiet:
            click.echo(f"fcls-infer: {message}", err=True)

    options: dict[str, Any] = {
        "provider": provider,
        "batch_size": batch_size,
        "threads": threads,
        "proba": proba,
        "class_names": class_names,
    }
    try:
        if engine == "ray" and resume:
            raise ConfigError("--resume works with --engine local only")
        if engine == "ray":
            require("fcls-infer --engine ray", "ray")
            from .ray_engine import predict_csv_ray

            summaries = predict_csv_ray(
                list(inputs),
                output,
                model,
                address=address,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                **options,
            )
        elif inputs == ("-",):
            summaries = [
                predict_csv(
                    "-",
                    output or Path("results.csv"),
                    model,
                    progress=progress,
                    resume=resume,
                    log=log,
                    **options,
                )
            ]
        else:
            paths = expand_inputs(list(inputs))
            dests = output_paths(paths, output)
            summaries = predict_files(
                paths, dests, model, progress=progress, resume=resume, log=log, **options
            )
    except FclsError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        kept = "; --resume continues from the last checkpoint" if resume else ""
        click.echo(f"fcls-infer: interrupted; no output written{kept}", err=True)
        sys.exit(130)
    if not quiet:
        for summary in summaries:
            click.echo(summary.line(), err=True)
        if provider == "auto" and summaries:
            from .predictor import auto_choice

            # the Ray engine's label is "<provider> (ray xN)"
            click.echo(f"fcls-infer: {auto_choice(summaries[0].provider.split()[0])}", err=True)


if __name__ == "__main__":  # python -m fcls.infer.cli
    main()
