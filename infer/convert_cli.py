"""`fcls-convert IN OUT`: fcls data between CSV (.csv, .csv.gz), Parquet and Arrow IPC."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import FclsError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--layout",
    type=click.Choice(["binary", "columns", "list"]),
    default="binary",
    show_default=True,
    help="Pixels of a Parquet/Arrow output: one 1024-byte `pixels` column (fastest to read), "
    "pix1..pix1024 uint8 columns, or one fixed-size list column.",
)
@click.option(
    "--compression",
    type=click.Choice(["zstd", "snappy", "lz4", "gzip", "none"]),
    default="zstd",
    show_default=True,
    help="Parquet compression codec (Arrow IPC outputs are written uncompressed).",
)
@click.option("--quiet", is_flag=True, help="No summary line.")
def main(source: Path, dest: Path, layout: str, compression: str, quiet: bool) -> None:
    """Convert SOURCE to DEST, the formats given by the extensions (.csv, .csv.gz, .parquet,
    .pq, .arrow, .feather, .ipc), eval (ID) or train (label) form kept, every cell validated."""
    from .convert import convert

    try:
        summary = convert(source, dest, layout=layout, compression=compression)  # type: ignore[arg-type]
    except FclsError as e:
        raise click.ClickException(str(e)) from None
    if not quiet:
        click.echo(f"fcls-convert: {summary.line()}", err=True)


if __name__ == "__main__":  # python -m fcls.infer.convert_cli
    main()
