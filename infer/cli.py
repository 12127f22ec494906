"""`fcls-infer`: score a CSV of ID,pix1..pix1024 rows into results.csv (ID,label)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import FclsError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_csv", type=str)
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
    default=Path("results.csv"),
    show_default=True,
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
def main(
    input_csv: str,
    model: Path,
    output: Path,
    provider: str,
    batch_size: int,
    threads: int | None,
    proba: bool,
    class_names: bool,
    quiet: bool,
) -> None:
    """Predict a label for every row of INPUT_CSV ('-' for stdin, .gz accepted)."""
    from .pipeline import predict_csv

    try:
        summary = predict_csv(
            input_csv,
            output,
            model,
            provider=provider,
            batch_size=batch_size,
            threads=threads,
            proba=proba,
            class_names=class_names,
            progress=None if not quiet else False,
        )
    except FclsError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo(f"fcls-infer: interrupted; {output} not written", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(summary.line(), err=True)
