"""`fcls-bench`: latency/throughput per backend and batch size, and end to end, vs the notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fcls.infer.errors import FclsError
from fcls.infer.extras import require


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter("batch sizes must be positive")
    return values


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="ONNX model (its .opt/.int8/.fp16 siblings are used too). Default: build one.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Source model.pt for the PyTorch baseline (default: the one beside --model whose "
    "sha256 its metadata records; without one, PyTorch is not measured).",
)
@click.option(
    "--backends",
    default=None,
    help="Comma list from torch,ort,ort-opt,ort-int8,cuda,cuda-fp16,ov-f32,ov-default,ov-int8 "
    "(default: all present; the reference, torch or else ort, is always measured).",
)
@click.option("--batch-sizes", default="1,64,256,1024", show_default=True)
@click.option(
    "--rows", type=click.IntRange(min=100), default=None, help="End-to-end CSV rows [50000]."
)
@click.option(
    "--seconds", type=click.FloatRange(min=0.05), default=None, help="Timed seconds per point [2]."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path(".fcls-bench"),
    show_default=True,
    help="Where built models and generated CSVs are cached.",
)
@click.option("--no-e2e", is_flag=True, help="Skip the end-to-end comparison.")
@click.option(
    "--ingest-rows",
    default=None,
    help="Rows of the ingest section's files, e.g. 20000,200000 (parsers on the largest, "
    "the near-free ceiling and its peak RSS on each); 0 skips it. Default: 20000,200000 "
    "(--quick: 1000,3000).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV (train or evaluate format) to draw benchmark images from. Default: the digits.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the figures here.",
)
@click.option(
    "--quick", is_flag=True, help="0.25 s per point and 3,000 rows: under a minute once built."
)
def main(
    model: Path | None,
    checkpoint: Path | None,
    backends: str | None,
    batch_sizes: str,
    rows: int | None,
    seconds: float | None,
    threads: int | None,
    workdir: Path,
    no_e2e: bool,
    ingest_rows: str | None,
    data: Path | None,
    json_path: Path | None,
    quick: bool,
) -> None:
    """Benchmark FinalCNNet backends side by side with the notebook's PyTorch way and, when
    openvino is installed (pip install "fcls[peers]"), with OpenVINO on the same files."""

    settings: dict[str, Any] = {
        "workdir": workdir,
        "model": model,
        "checkpoint": checkpoint,
        "backends": tuple(b.strip() for b in backends.split(",")) if backends else None,
        "batch_sizes": _ints(batch_sizes),
        "threads": threads,
        "e2e": not no_e2e,
        "data": data,
    }
    if ingest_rows is not None:
        settings["ingest_rows"] = () if ingest_rows.strip() == "0" else _ints(ingest_rows)
    if rows is not None:
        settings["rows"] = rows
    if seconds is not None:
        settings["seconds"] = seconds
    try:
        require("fcls-bench", "torch", "onnx")
        from .runner import BenchConfig, format_report, run_bench, write_json

        config = BenchConfig.quick(**settings) if quick else BenchConfig(**settings)
        report = run_bench(config, log=lambda s: click.echo(s, err=True))
    except FclsError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_report(report))
    if json_path:
        write_json(report, json_path)
