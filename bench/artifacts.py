"""What the benchmarks run on: a checkpoint, its ONNX variants and a CSV of real-looking images.

Built once into a work directory and reused: throughput does not depend on the weights, but
the int8 agreement check needs a model with confident logits, so the checkpoint is a short
Adam run on scikit-learn's digits rather than random weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcls.infer.csvio import CsvReader, write_eval_csv
from fcls.infer.errors import DataError, FclsError


@dataclass(frozen=True)
class Models:
    """A checkpoint and the ONNX files exported from it (variant name -> path)."""

    checkpoint: Path
    onnx: dict[str, Path] = field(default_factory=dict)


def build_models(workdir: Path, log: Callable[[str], None] = print) -> Models:
    """Train (digits, Adam, 4 epochs) and export fp32/opt/int8 (+fp16) once into `workdir`."""
    from fcls.export import ExportConfig, export_onnx
    from fcls.export.variants import cuda_available
    from fcls.train.config import DEFAULT_STAGES, TrainConfig
    from fcls.train.trainer import train

    workdir.mkdir(parents=True, exist_ok=True)
    run = workdir / "run"
    ckpt = run / "model.pt"
    if not ckpt.is_file():
        log(f"bench: training a digits model into {run} (once)")
        config = TrainConfig(out=run, max_epochs=4, stages=DEFAULT_STAGES[:1], device="cpu")
        train(config, log=lambda s: None)
    fp32 = workdir / "model.onnx"
    wanted = {
        "ort": fp32,
        "ort-opt": workdir / "model.opt.onnx",
        "ort-int8": workdir / "model.int8.onnx",
    }
    fp16 = workdir / "model.fp16.onnx"
    cuda = cuda_available()
    if not all(p.is_file() for p in wanted.values()) or (cuda and not fp16.is_file()):
        log(
            f"bench: exporting fp32, optimized, int8{' and fp16' if cuda else ''} into {workdir} (once)"
        )
        config = ExportConfig(optimize=True, int8=True, fp16=cuda)
        export_onnx(ckpt, fp32, config, log=lambda s: None)
    onnx = dict(wanted)
    if cuda:
        onnx["cuda"] = fp32
        onnx["cuda-fp16"] = fp16
    return Models(ckpt, onnx)


def models_from(model: Path, checkpoint: Path | None) -> Models:
    """Use an existing ONNX model (and its .opt/.int8/.fp16 siblings) and its checkpoint."""
    from fcls.export.graph import read_metadata
    from fcls.export.variants import cuda_available

    if not model.is_file():
        raise FclsError(f"{model}: no such model file")
    if checkpoint is None:
        meta = read_metadata(model)
        guess = model.parent / meta.get("source_checkpoint", "model.pt")
        if not guess.is_file():
            raise FclsError(
                f"{model}: the PyTorch baseline needs the source checkpoint; pass --checkpoint"
            )
        checkpoint = guess
    onnx = {"ort": model}
    for tag, name in (("opt", "ort-opt"), ("int8", "ort-int8")):
        sibling = model.with_name(f"{model.stem}.{tag}.onnx")
        if sibling.is_file():
            onnx[name] = sibling
    if cuda_available():
        onnx["cuda"] = model
        fp16 = model.with_name(f"{model.stem}.fp16.onnx")
        if fp16.is_file():
            onnx["cuda-fp16"] = fp16
    return Models(checkpoint, onnx)


def image_pool(data: Path | None = None, rows: int = 5_000) -> np.ndarray:
    """(m, 1024) uint8 source images: the first rows of a train or evaluate CSV, else the digits."""
    if data is None:
        from fcls.train.data import load_digits_32

        return load_digits_32()[0]
    try:
        chunks = list(CsvReader(data, "train", limit=rows))
    except DataError:
        chunks = list(CsvReader(data, "eval", limit=rows))
    if not chunks:
        raise DataError(str(data), "no data rows to draw benchmark images from")
    return np.concatenate([c.pixels for c in chunks])


def real_looking_images(n: int, seed: int = 0, pool: np.ndarray | None = None) -> np.ndarray:
    """(n, 1024) uint8: images drawn from `pool` (default the digits), randomly flipped and
    shifted by up to 2 pixels, so a generated file of any size looks like real data."""
    base = (image_pool() if pool is None else pool).reshape(-1, 32, 32)
    rng = np.random.default_rng(seed)
    images = base[rng.integers(0, len(base), n)]
    flip = rng.random(n) < 0.5
    images[flip] = images[flip, :, ::-1]
    shifts = rng.integers(-2, 3, size=(n, 2))
    for dy in range(-2, 3):  # 25 shift classes, each one vectorized roll
        for dx in range(-2, 3):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            images[sel] = np.roll(images[sel], (dy, dx), axis=(1, 2))
    return images.reshape(n, 1024)


def eval_csv(workdir: Path, rows: int, pool: np.ndarray | None = None, tag: str = "digits") -> Path:
    """The benchmark's evaluate-format CSV with `rows` rows, generated once per image source."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"evaluate_{tag}_{rows}.csv"
    return path if path.is_file() else write_eval_csv(path, real_looking_images(rows, pool=pool))
