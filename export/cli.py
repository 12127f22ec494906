"""`fcls-export`: checkpoint -> ONNX, refused when outputs differ from PyTorch's; or a user's
own ONNX classifier wrapped as an fcls model, refused when it differs from the original."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from fcls.infer.cli.kit import CONTEXT, Run, standard
from fcls.infer.common.errors import ConfigError
from fcls.infer.common.extras import require
from fcls.infer.common.modelfile import CHECKPOINT, check_checkpoint, sniff
from fcls.infer.common.spec import parse_image_size

from .config import ExportConfig, WrapConfig, parse_number, parse_numbers

if TYPE_CHECKING:  # the api module imports torch; the command imports it only after `require`
    from .api import ExportResult


WRAP_OPTIONS = ("--image-size", "--input-scale", "--input-mean", "--input-std")


@click.command(context_settings=CONTEXT)
@click.argument("model_pt", type=click.Path(path_type=Path), required=False)
@click.argument("model_onnx", type=click.Path(path_type=Path), required=False)
@click.option(
    "-m",
    "--model",
    "model",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Checkpoint to export, or ONNX model to wrap (same as MODEL_PT). Default: {CHECKPOINT}.",
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
    "--bf16",
    is_flag=True,
    help="Check OpenVINO bf16 against fp32 on the held-out rows and record it; needs the "
    "openvino extra; skipped with a notice on CPUs without native bf16 (AVX512-BF16 or AMX).",
)
@click.option(
    "--keep-failed", is_flag=True, help="Keep a model that fails its gate as <stem>.failed.onnx."
)
@click.option(
    "--image-size",
    default=None,
    help="Wrapping an ONNX model: its images, HxW or HxWxC. Default: its input shape's.",
)
@click.option(
    "--input-scale",
    default=None,
    help="Wrapping an ONNX model: multiply the 0..255 pixels by this (e.g. 1/255). Default: 1.",
)
@click.option(
    "--input-mean",
    default=None,
    help="Wrapping an ONNX model: subtract after scaling; one value or one per channel (a,b,c).",
)
@click.option(
    "--input-std",
    default=None,
    help="Wrapping an ONNX model: divide by this after the mean; one value or one per channel.",
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
    bf16: bool,
    keep_failed: bool,
    image_size: str | None,
    input_scale: str | None,
    input_mean: str | None,
    input_std: str | None,
    run: Run,
) -> None:
    """Export MODEL_PT (fcls model.pt or a bare FinalCNNet state_dict) to MODEL_ONNX.

    Without arguments: artifacts/model.pt -> artifacts/model.onnx, where fcls-infer looks.

    MODEL_PT may also be your own ONNX classifier (float [N, C, H, W] or [N, H*W*C] input,
    first output [N, K] scores): `fcls-export user.onnx -o model.onnx --data train.csv
    --input-scale 1/255` wraps it to take fcls's uint8 rows, behind the same gates."""
    source = _one("MODEL_PT", model_pt, "-m/--model", model) or CHECKPOINT
    target = _one("MODEL_ONNX", model_onnx, "-o/--output", output)
    wrapping = _is_onnx(source)
    dest = _destination(source, target, wrapping)
    wrap_options = dict(zip(WRAP_OPTIONS, (image_size, input_scale, input_mean, input_std)))
    config = ExportConfig(
        opset=opset,
        data=data,
        atol=atol,
        optimize=optimize,
        int8=int8,
        fp16=fp16,
        require_fp16_check=require_fp16_check,
        bf16=bf16,
        keep_failed=keep_failed,
        calibration_rows=calibration_rows,
    )
    if bf16:  # a missing extra is said before any file is read
        from fcls.infer.engine.runtimes import import_openvino

        import_openvino("fcls-export --bf16")
    if wrapping:
        _wrap(run, source, dest, config, _wrap_config(wrap_options))
        return
    _checkpoint_only(source, wrap_options)
    require("fcls-export", "torch", "onnx", "onnxscript")
    check_checkpoint(source)  # a missing file or an ONNX model: one line naming the command
    from .api import export_onnx

    result = export_onnx(source, dest, config, log=run.echo)
    _summarize(run, source, dest, result)


def _wrap(run: Run, source: Path, dest: Path, config: ExportConfig, wrap: WrapConfig) -> None:
    """Wrap the user's ONNX model `source` as an fcls model at `dest`."""
    require("fcls-export", "torch", "onnx", "onnxscript")
    from .wrap import wrap_onnx

    _summarize(run, source, dest, wrap_onnx(source, dest, config, wrap, log=run.echo))


def _checkpoint_only(source: Path, wrap_options: dict[str, str | None]) -> None:
    """Refuse the wrapping options for a checkpoint: its own recorded spec is what it takes."""
    given = [name for name, value in wrap_options.items() if value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: only for wrapping an ONNX model (fcls-export user.onnx "
            f"-o model.onnx --data ...); {source} is a checkpoint, whose own spec is used"
        )


def _is_onnx(source: Path) -> bool:
    """Whether the model given is an ONNX file to wrap (by its bytes; a missing file by its
    name, so that the wrapping path says it is missing)."""
    if source.is_file():
        try:
            return sniff(source) == "onnx"
        except OSError:
            return False  # check_checkpoint says why it cannot be read
    return source.suffix.lower() == ".onnx"


def _takes_pixel_rows(source: Path) -> bool:
    """Whether the ONNX model takes uint8 rows, as the graphs fcls-export writes do."""
    require("fcls-export", "onnx")
    import onnx

    try:
        graph = onnx.load(str(source), load_external_data=False).graph
    except Exception:  # unreadable: the wrapping path says why, in one line
        return False
    uint8 = onnx.TensorProto.UINT8
    return any(v.type.tensor_type.elem_type == uint8 for v in graph.input)


def _destination(source: Path, target: Path | None, wrapping: bool) -> Path:
    """Where the model goes: as given, else beside a checkpoint; a wrapped model needs one."""
    if not wrapping:
        return target or source.with_suffix(".onnx")
    if not source.is_file():
        raise ConfigError(f"{source}: no such ONNX model to wrap")
    if _takes_pixel_rows(source):  # fcls's own graph: what fcls-infer takes, nothing to wrap
        check_checkpoint(source)
    if target is None:
        raise ConfigError(
            f"{source}: give where the wrapped model goes: fcls-export {source} -o model.onnx "
            "--data train.csv"
        )
    if target.resolve() == source.resolve():
        raise ConfigError(f"-o {target}: would overwrite the model being wrapped; pick another")
    return target


def _wrap_config(options: dict[str, str | None]) -> WrapConfig:
    """The wrapping options, each refused in one line naming it."""
    size, scale, mean, std = options.values()
    if size is not None:
        parse_image_size(size)  # SpecError: the size's own one line
    return WrapConfig(
        image_size=size,
        input_scale=1.0 if scale is None else parse_number("--input-scale", scale),
        input_mean=(0.0,) if mean is None else parse_numbers("--input-mean", mean),
        input_std=(1.0,) if std is None else parse_numbers("--input-std", std),
    )


def _summarize(run: Run, source: Path, dest: Path, result: ExportResult) -> None:
    """The run's summary: the JSON record and the one-line report."""
    from fcls.infer.common.system import file_sha256

    extra = "".join(f", {k} -> {p}" for k, p in result.variants.items())
    if result.bf16 is not None:
        extra += f", bf16 check passed (OpenVINO bf16 x{result.bf16['speed_ratio']:.2f})"
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
            "bf16_check": result.bf16,
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
