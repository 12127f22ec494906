"""`fcls-convert IN OUT`: fcls data between CSV (.csv, .csv.gz), Parquet and Arrow IPC, and a
folder of images into any of them."""

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
@click.option(
    "--image-size",
    metavar="HxW|HxWxC",
    default=None,
    help="A folder's images are converted to this size (resized, to 1 or 3 channels). "
    "Default: the first image's size and channels.",
)
@standard("fcls-convert")
def main(
    source: Path, dest: Path, layout: str, compression: str, image_size: str | None, run: Run
) -> None:
    """Convert SOURCE to DEST, the formats given by the extensions (.csv, .csv.gz, .parquet,
    .pq, .arrow, .feather, .ipc), unlabelled (ID) or labelled (label) form, pixel count and
    labels kept, every cell validated.

    SOURCE may be a folder of PNG/JPEG images: labelled when every image lies in a class
    sub-folder (the label its name), else unlabelled (the ID its path in the folder)."""
    from ..common.errors import FclsError
    from ..common.spec import parse_image_size
    from ..convert import convert

    if image_size is not None:
        try:
            parse_image_size(image_size)
        except FclsError as e:
            raise click.BadParameter(str(e), param_hint="--image-size") from None
    run.interrupt_note = f"nothing written to {dest}"
    summary = convert(
        source,
        dest,
        layout=layout,  # type: ignore[arg-type]
        compression=compression,
        image_size=image_size,
    )
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
