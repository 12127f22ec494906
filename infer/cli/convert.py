"""`fcls-convert IN OUT`: fcls data between CSV (.csv, .csv.gz), Parquet and Arrow IPC."""

from __future__ import annotations

from pathlib import Path

import click

from .kit import CONTEXT, Run, standard


@click.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--layout",
    type=click.Choice(["binary", "columns", "list"]),
    default="binary",
    show_default=True,
    help="Pixels of a Parquet/Arrow output: one `pixels` column of one byte per pixel (fastest "
    "to read), pix1..pixP uint8 columns, or one fixed-size list column. P is the input's.",
)
@click.option(
    "--compression",
    type=click.Choice(["zstd", "snappy", "lz4", "gzip", "none"]),
    default="zstd",
    show_default=True,
    help="Parquet compression codec (Arrow IPC outputs are written uncompressed).",
)
@standard("fcls-convert")
def main(source: Path, dest: Path, layout: str, compression: str, run: Run) -> None:
    """Convert SOURCE to DEST, the formats given by the extensions (.csv, .csv.gz, .parquet,
    .pq, .arrow, .feather, .ipc), unlabelled (ID) or labelled (label) form, pixel count and
    labels kept, every cell validated."""
    from ..convert import convert

    run.interrupt_note = f"nothing written to {dest}"
    summary = convert(source, dest, layout=layout, compression=compression)  # type: ignore[arg-type]
    run.summary(
        {
            "rows": summary.rows,
            "kind": summary.kind,
            "seconds": summary.seconds,
            "rows_per_s": summary.rows / summary.seconds if summary.seconds > 0 else 0.0,
            "input": summary.source,
            "output": summary.dest,
            "bytes_in": summary.bytes_in,
            "bytes_out": summary.bytes_out,
        },
        f"fcls-convert: {summary.line()}",
        err=True,
    )


if __name__ == "__main__":  # python -m fcls.infer.cli.convert
    main()
