"""`fcls-export`: checkpoint -> ONNX, refused when outputs differ from PyTorch's."""

from __future__ import annotations

from pathlib import Path

import click

from fcls.infer.errors import FclsError
from fcls.infer.extras import require

from .config import ExportConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_pt", type=click.Path(path_type=Path))
@click.argument("model_onnx", type=click.Path(path_type=Path))
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
def main(
    model_pt: Path,
    model_onnx: Path,
    opset: int | None,
    data: Path | None,
    atol: float,
    optimize: bool,
    int8: bool,
    calibration_rows: int,
    fp16: bool,
    require_fp16_check: bool,
    keep_failed: bool,
) -> None:
    """Export MODEL_PT (fcls model.pt or a bare FinalCNNet state_dict) to MODEL_ONNX."""
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
    try:
        require("fcls-export", "torch", "onnx", "onnxscript")
        from .api import export_onnx

        result = export_onnx(model_pt, model_onnx, config, log=lambda s: click.echo(s, err=True))
    except FclsError as e:
        raise click.ClickException(str(e)) from None
    extra = "".join(f", {k} -> {p}" for k, p in result.variants.items())
    click.echo(
        f"{model_onnx} ({result.exporter}, opset {result.opset}): max |dlogit| "
        f"{result.parity.max_abs_dlogit:.1e}, top-1 {100 * result.parity.top1_agreement:.1f}%{extra} "
        f"| {result.seconds:.0f}s"
    )
