"""`fcls-eval`: score a labelled file (pix1..pixN,label; CSV, Parquet or Arrow IPC) with one or
more exported models."""

from __future__ import annotations

from pathlib import Path

import click

from .kit import CONTEXT, Run, scoring_options, standard


@click.command(context_settings=CONTEXT)
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
@scoring_options("onnxruntime threads per model. Default: the CPUs this process may use.")
@standard("fcls-eval")
def main(
    data: str,
    models: tuple[Path, ...],
    output: Path,
    provider: str,
    batch_size: int,
    threads: int | None,
    runtime: str,
    precision: str,
    run: Run,
) -> None:
    """Score DATA (a labelled file: train-format CSV, .gz, '-', Parquet or Arrow IPC; or a
    folder of PNG/JPEG images in one sub-folder per class) and write an evaluation report.

    Accuracy, per-class precision/recall/F1/support, macro and weighted averages and the
    confusion matrix per model; with several models, how often each pair gives the same label.
    Models must share their class names (fcls-export writes them into the ONNX metadata).
    """
    from ..evaluate import EvalConfig, evaluate

    config = EvalConfig(
        data=data,
        models=models or (Path("model.onnx"),),
        out=output,
        provider=provider,
        batch_size=batch_size,
        threads=threads,
        runtime=runtime,
        precision=precision,
    )
    run.interrupt_note = "no report written"
    result = evaluate(config, log=run.log)
    report = result.report
    if run.verbose:
        for model in report["models"]:
            run.echo(f"fcls-eval: {model['path']} ({model['provider']})")
            run.echo(f"  {'class':<16} precision  recall      f1  support")
            for name, m in model["per_class"].items():
                run.echo(
                    f"  {name[:16]:<16} {m['precision']:9.4f} {m['recall']:7.4f} "
                    f"{m['f1']:7.4f} {m['support']:8d}"
                )
    run.summary(
        {
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
        },
        f"fcls-eval: {result.line()}",
        err=True,
    )


if __name__ == "__main__":  # python -m fcls.infer.cli.eval
    main()
