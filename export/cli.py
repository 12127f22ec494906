"""`fcls-export`: checkpoint -> ONNX, refused when outputs differ from PyTorch's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from fcls.infer.cli.kit import CONTEXT, Run, standard
from fcls.infer.common.errors import ConfigError
from fcls.infer.common.extras import require
from fcls.infer.common.modelfile import CHECKPOINT, check_checkpoint

from .config import ExportConfig

if TYPE_CHECKING:  # the api module imports torch; the command imports it only after `require`
    from .api import ExportResult


@click.command(context_settings=CONTEXT)
@click.argument("model_pt", type=click.Path(path_type=Path), required=False)
@click.argument("model_onnx", type=click.Path(path_type=Path), required=False)
@click.option(
    "-m",
    "--model",
    "model",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Checkpoint to export (same as MODEL_PT). Default: {CHECKPOINT}, what fcls-train writes.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="ONNX file to write (same as MODEL_ONNX). Default: the checkpoint's path with .onnx.",
)
@click.option(
    "--opset",
    type=click.IntRange(min=17),
    default=None,
    help="ONNX opset. Default: newest supported by both torch's exporter and onnxruntime.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV whose rows feed the gates. Default: the checkpoint's own data, if unchanged.",
)
@click.option(
    "--atol",
    type=float,
    default=ExportConfig.atol,
    show_default=True,
    help="Max |dlogit| (times max(1, max |logit|)).",
)
@click.option(
    "--optimize", is_flag=True, help="Also write <stem>.opt.onnx (ORT offline optimization)."
)
@click.option("--int8", is_flag=True, help="Also write <stem>.int8.onnx (static per-channel QDQ).")
@click.option(
    "--calibration-rows",
    type=click.IntRange(min=16),
    default=ExportConfig.calibration_rows,
    show_default=True,
)
@click.option("--fp16", is_flag=True, help="Also write <stem>.fp16.onnx for the CUDA provider.")
@click.option(
    "--require-fp16-check",
    is_flag=True,
    help="Fail instead of writing an unchecked fp16 model when CUDA is absent.",
)
@click.option(
    "--keep-failed", is_flag=True, help="Keep a model that fails its gate as <stem>.failed.onnx."
)
@standard("fcls-export", torch=True)
def main(
    model_pt: Path | None,
    model_onnx: Path | None,
    model: Path | None,
    output: Path | None,
    opset: int | None,
    data: Path | None,
    atol: float,
    optimize: bool,
    int8: bool,
    calibration_rows: int,
    fp16: bool,
    require_fp16_check: bool,
    keep_failed: bool,
    run: Run,
) -> None:
    """Export MODEL_PT (fcls model.pt or a bare FinalCNNet state_dict) to MODEL_ONNX.

    Without arguments: artifacts/model.pt -> artifacts/model.onnx, where fcls-infer looks."""
    source = _one("MODEL_PT", model_pt, "-m/--model", model) or CHECKPOINT
    dest = _one("MODEL_ONNX", model_onnx, "-o/--output", output) or source.with_suffix(".onnx")
    config = ExportConfig(
        opset=opset,
        data=data,
        atol=atol,
        optimize=optimize,
        int8=int8,
        fp16=fp16,
        require_fp16_check=require_fp16_check,
        keep_failed=keep_failed,
        calibration_rows=calibration_rows,
    )
    require("fcls-export", "torch", "onnx", "onnxscript")
    check_checkpoint(source)  # a missing file or an ONNX model: one line naming the command
    from .api import export_onnx

    result = export_onnx(source, dest, config, log=run.echo)
    _summarize(run, source, dest, result)


def _summarize(run: Run, source: Path, dest: Path, result: ExportResult) -> None:
    """The run's summary: the JSON record and the one-line report."""
    from fcls.infer.common.system import file_sha256

    extra = "".join(f", {k} -> {p}" for k, p in result.variants.items())
    run.summary(
        {
            "checkpoint": str(source),
            "checkpoint_sha256": file_sha256(source),
            "output": str(result.path),
            "model_sha256": file_sha256(result.path),
            "exporter": result.exporter,
            "opset": result.opset,
            "max_abs_dlogit": result.parity.max_abs_dlogit,
            "top1_agreement": result.parity.top1_agreement,
            "variants": {k: str(p) for k, p in result.variants.items()},
            "variant_top1_agreement": {
                k: r.top1_agreement for k, r in result.variant_parity.items()
            },
            "accuracy": result.accuracy,
            "seconds": round(result.seconds, 3),
        },
        f"{dest} ({result.exporter}, opset {result.opset}): max |dlogit| "
        f"{result.parity.max_abs_dlogit:.1e}, top-1 {100 * result.parity.top1_agreement:.1f}%{extra} "
        f"| {result.seconds:.0f}s",
    )


def _one(argument: str, positional: Path | None, option: str, value: Path | None) -> Path | None:
    """A path given as a positional argument or as its option, not both."""
    if positional is not None and value is not None and positional != value:
        raise ConfigError(f"{argument} {positional} and {option} {value}: give one of them")
    return positional if positional is not None else value
