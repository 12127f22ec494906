"""`fcls-bench`: latency/throughput per backend and batch size, and end to end, vs the notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fcls.infer.cli.kit import CONTEXT, Run, standard
from fcls.infer.common.extras import require

from ._defaults import BATCH_SIZES, RUNTIME_CHOICES


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter("batch sizes must be positive")
    return values


def legacy_json(args: list[str]) -> list[str]:
    """fcls-bench's old `--json FILE` is `--summary-json FILE` now (`--json` alone prints the
    report as JSON on stdout); fcls-bench takes no positional argument, so a `--json` followed
    by a word that is not an option can only be the old spelling."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            out += ["--summary-json", args[i + 1]]
            i += 2
            continue
        out.append("--summary-json=" + arg[7:] if arg.startswith("--json=") else arg)
        i += 1
    return out


class BenchCommand(click.Command):
    """A click command that still understands `--json FILE`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, legacy_json(args))


@click.command(cls=BenchCommand, context_settings=CONTEXT)
@click.option(
    "-m",
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
    help="Comma list from torch,ort,ort-opt,ort-int8,cuda,cuda-fp16,fcls-ov,fcls-ov-bf16,"
    "fcls-ov-int8,ov-f32,ov-default,ov-bf16,ov-int8 (default: all present; the reference, "
    "torch or else ort, is always measured). fcls-ov*: fcls's OpenVINO runtime; ov-*: plain "
    "OpenVINO on the same files.",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIME_CHOICES),
    default="all",
    show_default=True,
    help="Which of fcls's runtimes to measure: onnxruntime (ort* rows, fcls-infer ort, the "
    "polars + onnxruntime script), openvino (fcls-ov* rows, the ov-* peers, fcls-infer ov, "
    "the polars + OpenVINO script; needs openvino) or all. The reference is measured either way.",
)
@click.option("--batch-sizes", default=",".join(map(str, BATCH_SIZES)), show_default=True)
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
    "--e2e-rounds",
    type=click.IntRange(min=1),
    default=None,
    help="Alternating rounds of fcls-infer and the script per runtime and precision; medians "
    "are reported [3] (--quick: 1).",
)
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
    help="Data (train or evaluate format; CSV, Parquet or Arrow IPC) to draw benchmark images "
    "and check agreement from. Default: the model's recorded training data; without it, "
    "agreement is not measured and timings use the digits.",
)
@click.option(
    "--train",
    is_flag=True,
    help="Measure training instead of inference: img/s per recipe and for the notebook's "
    "plain loop, the validation forward, and each layer's forward + backward (--data: real "
    "images; default: the digits).",
)
@click.option(
    "--quick", is_flag=True, help="0.25 s per point and 3,000 rows: under a minute once built."
)
@standard("fcls-bench", torch=True)
def main(
    model: Path | None,
    checkpoint: Path | None,
    backends: str | None,
    runtime: str,
    batch_sizes: str,
    rows: int | None,
    seconds: float | None,
    threads: int | None,
    workdir: Path,
    no_e2e: bool,
    e2e_rounds: int | None,
    ingest_rows: str | None,
    data: Path | None,
    train: bool,
    quick: bool,
    run: Run,
) -> None:
    """Benchmark a model's backends side by side with the notebook's PyTorch way and, when
    openvino is installed (pip install "fcls[openvino]"), fcls's OpenVINO runtime (fp32, bf16
    on CPUs with native bf16, int8) and plain OpenVINO on the same files. The report ends with
    the fastest of fcls's runtimes whose labels passed their checks.

    --summary-json FILE writes the figures (the old spelling --json FILE still works)."""

    settings: dict[str, Any] = {
        "workdir": workdir,
        "model": model,
        "checkpoint": checkpoint,
        "backends": tuple(b.strip() for b in backends.split(",")) if backends else None,
        "batch_sizes": _ints(batch_sizes),
        "threads": threads,
        "e2e": not no_e2e,
        "data": data,
        "runtime": runtime,
    }
    if ingest_rows is not None:
        settings["ingest_rows"] = () if ingest_rows.strip() == "0" else _ints(ingest_rows)
    if rows is not None:
        settings["rows"] = rows
    if e2e_rounds is not None:
        settings["e2e_rounds"] = e2e_rounds
    if seconds is not None:
        settings["seconds"] = seconds
    require("fcls-bench", "torch", "onnx")
    if runtime == "openvino":
        require("fcls-bench --runtime openvino", "openvino")
    from .runner import BenchConfig, check_agreement, format_report, run_bench, run_train_bench

    config = BenchConfig.quick(**settings) if quick else BenchConfig(**settings)
    report = (run_train_bench if train else run_bench)(config, log=run.echo)
    # the summary is the whole report (--json: on stdout; --summary-json FILE: in a file),
    # also when a backend missed its agreement bar: it is marked there, then the exit is 3
    run.summary(report, format_report(report))
    check_agreement(report)
