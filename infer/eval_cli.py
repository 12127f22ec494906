"""`fcls-eval`: score a labelled file (pix1..pix1024,label) with one or more exported models."""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from .errors import FclsError
from .files import fcls_version


def _versions() -> str:
    try:
        ort = version("onnxruntime")
    except PackageNotFoundError:
        ort = "not installed"
    return f"fcls-eval {fcls_version()} (onnxruntime {ort})"


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_versions())
        ctx.exit()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data")
@click.option(
    "-m",
    "--model",
    "models",
    type=click.Path(path_type=Path),
    multiple=True,
    help="ONNX model from fcls-export; repeat to compare models (e.g. m.onnx and m.int8.onnx). "
    "[default: model.onnx]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("eval-report"),
    show_default=True,
    help="Report directory: report.json and a confusion-matrix PNG per model.",
)
@click.option(
    "--provider", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="onnxruntime threads per model. Default: the CPUs this process may use.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary line or notices.")
@click.option("-v", "--verbose", is_flag=True, help="Also print per-class metrics per model.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the versions and exit.",
)
def main(
    data: str,
    models: tuple[Path, ...],
    output: Path,
    provider: str,
    batch_size: int,
    threads: int | None,
    quiet: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Score DATA (a train-format CSV with labels, .gz or '-') and write an evaluation report.

    Accuracy, per-class precision/recall/F1/support, macro and weighted averages and the
    confusion matrix per model; with several models, how often each pair gives the same label.
    Models must share their class names (fcls-export writes them into the ONNX metadata).
    """
    from .evaluate import EvalConfig, evaluate

    def log(message: str) -> None:
        if not quiet:
            click.echo(f"fcls-eval: {message}", err=True)

    config = EvalConfig(
        data=data,
        models=models or (Path("model.onnx"),),
        out=output,
        provider=provider,
        batch_size=batch_size,
        threads=threads,
    )
    try:
        result = evaluate(config, log=log)
    except FclsError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("fcls-eval: interrupted; no report written", err=True)
        sys.exit(130)
    report = result.report
    if verbose and not quiet:
        for model in report["models"]:
            click.echo(f"fcls-eval: {model['path']} ({model['provider']})", err=True)
            click.echo(f"  {'class':<16} precision  recall      f1  support", err=True)
            for name, m in model["per_class"].items():
                click.echo(
                    f"  {name[:16]:<16} {m['precision']:9.4f} {m['recall']:7.4f} "
                    f"{m['f1']:7.4f} {m['support']:8d}",
                    err=True,
                )
    if not quiet:
        click.echo(f"fcls-eval: {result.line()}", err=True)
    if as_json:
        summary = {
            "rows": report["rows"],
            "seconds": report["seconds"],
            "rows_per_s": report["rows"] / report["seconds"] if report["seconds"] else 0.0,
            "output": str(result.report_path),
            "models": [
                {k: m[k] for k in ("path", "sha256", "provider", "accuracy")}
                for m in report["models"]
            ],
            "agreement": [
                {"models": p["models"], "agreement": p["agreement"]} for p in report["agreement"]
            ],
        }
        click.echo(json.dumps(summary))


if __name__ == "__main__":  # python -m fcls.infer.eval_cli
    main()
