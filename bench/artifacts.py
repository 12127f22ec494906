"""What the benchmarks run on: a checkpoint, its ONNX variants and a CSV of real-looking images.

Built once into a work directory and reused: throughput does not depend on the weights, but
the int8 agreement check needs a model with confident logits, so the checkpoint is a short
Adam run on scikit-learn's digits rather than random weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcls.infer.common.errors import CheckpointError, DataError, ModelError, ParityError
from fcls.infer.common.modelfile import variant_path
from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec
from fcls.infer.common.system import file_sha256
from fcls.infer.engine.runtimes import native_bf16, read_bf16_check
from fcls.infer.formats.csvfile import write_eval_csv
from fcls.infer.formats.sources import input_kind, read_pixels

from .backends import bf16_missing, openvino_missing, openvino_models
from .errors import BenchError

if TYPE_CHECKING:
    from fcls.export import ExportConfig
    from fcls.train.config import TrainConfig


@dataclass(frozen=True)
class Models:
    """A checkpoint and the ONNX files exported from it (backend name -> path).

    `checkpoint` is None when the PyTorch baseline cannot be measured; `no_torch` says why.
    """

    checkpoint: Path | None
    onnx: dict[str, Path] = field(default_factory=dict)
    no_torch: str | None = None
    # the training run's data record (source, sha256, limit, split_seed): agreement is checked
    # on these rows (fcls.export.gatedata.recorded_data), never on another dataset
    recorded: dict[str, Any] | None = None
    spec: ImageSpec = DEFAULT_SPEC  # the images the models take (from the fp32 model)
    architecture: str | None = None  # the network, as fcls-export recorded it
    flops_per_image: float | None = None  # from the checkpoint's network; None without one
    # the bf16 check fcls-export recorded in the fp32 model (None: none); see bf16_missing
    bf16_check: dict[str, Any] | None = None


def flops_per_image(architecture: str, spec: ImageSpec) -> float:
    """2 x the multiply-adds of one image through `architecture` built for `spec`."""
    from fcls.train.registry import model_info

    return 2.0 * model_info(architecture, spec).multiply_adds


def _described(models: Models) -> Models:
    """`models` with the spec, network and FLOP/image of its fp32 model filled in."""
    from fcls.infer.engine.predictor import Predictor

    fp32 = models.onnx["ort"]
    with Predictor(fp32, "cpu", 1) as model:
        spec = model.spec
    arch = _model_metadata(fp32).get("architecture")
    flops = None
    if models.checkpoint is not None:
        from fcls.train.checkpoint import Checkpoint

        ckpt = Checkpoint.load(models.checkpoint)
        arch = ckpt.architecture
        flops = flops_per_image(arch, ckpt.spec)
    return replace(models, spec=spec, architecture=arch, flops_per_image=flops)


def bench_training(out: Path) -> TrainConfig:
    """The benchmark model's training: Adam at 3e-3 on the digits, up to 12 epochs.

    fcls-export's int8 gate (>= 99% agreement, <= 0.5 points accuracy drop) needs a confident
    model; weaker ones (4 epochs at 1e-3, val accuracy 86%) are rightly refused.
    """
    from fcls.train.config import Recipe, Stage, TrainConfig

    recipe = Recipe("bench", (Stage("adam", "adam", lr=3e-3),))
    return TrainConfig(out=out, max_epochs=12, recipe=recipe, device="cpu")


def build_models(workdir: Path, log: Callable[[str], None] = print) -> Models:
    """Train (see bench_training) and export fp32/opt/int8 (+fp16, +the bf16 check) once
    into `workdir`."""
    from fcls.export import ExportConfig
    from fcls.export.variants import cuda_available
    from fcls.train.trainer import train

    workdir.mkdir(parents=True, exist_ok=True)
    run = workdir / "run"
    ckpt = run / "model.pt"
    if not ckpt.is_file():
        log(f"bench: training a digits model into {run} (once)")
        train(bench_training(run), log=lambda s: None)
    fp32 = workdir / "model.onnx"
    wanted = {
        "ort": fp32,
        "ort-opt": variant_path(fp32, "opt"),
        "ort-int8": variant_path(fp32, "int8"),
    }
    fp16 = variant_path(fp32, "fp16")
    cuda = cuda_available()
    # the bf16 rows run only on a model whose bf16 check passed; the check itself needs
    # openvino and a CPU with native bf16, so elsewhere it is not asked for
    bf16 = openvino_missing() is None and native_bf16()
    stale = not all(p.is_file() for p in wanted.values()) or (cuda and not fp16.is_file())
    if stale or (bf16 and read_bf16_check(_model_metadata(fp32)) is None):
        made = ["fp32", "optimized", "int8"] + ["fp16"] * cuda + ["the bf16 check"] * bf16
        log(f"bench: exporting {', '.join(made)} into {workdir} (once)")
        _export(ckpt, fp32, ExportConfig(optimize=True, int8=True, fp16=cuda, bf16=bf16))
    onnx: dict[str, Path] = dict(wanted)
    if cuda:
        onnx["cuda"] = fp32
        onnx["cuda-fp16"] = fp16
    meta = _model_metadata(fp32)
    return _with_openvino(
        Models(ckpt, onnx, recorded=recorded_training(meta, ckpt)), read_bf16_check(meta)
    )


def _export(ckpt: Path, fp32: Path, config: ExportConfig) -> None:
    """fcls-export's own gates, unchanged: the bench runs what a user would ship. A failed
    bf16 check is recorded in the model and leaves every file in place: its bf16 rows are
    then skipped with their reason (bf16_missing), the rest run."""
    from fcls.export import export_onnx

    try:
        export_onnx(ckpt, fp32, config, log=lambda s: None)
    except ParityError:
        check = read_bf16_check(_model_metadata(fp32)) if fp32.is_file() else None
        if not config.bf16 or check is None or check.get("passed"):
            raise


def _with_openvino(models: Models, bf16_check: dict[str, Any] | None) -> Models:
    """`models` described (see _described), with the OpenVINO rows its files allow added."""
    fp32 = models.onnx["ort"]
    onnx = dict(models.onnx)
    onnx.update(openvino_models(onnx, bf16_missing(fp32, bf16_check) is None))
    return _described(replace(models, onnx=onnx, bf16_check=bf16_check))


def _model_metadata(model: Path) -> dict[str, str]:
    from fcls.export.graph import read_metadata

    try:
        return read_metadata(model)
    except Exception as e:  # onnx raises its own DecodeError / ValidationError types
        raise ModelError(f"{model}: not a readable ONNX model ({type(e).__name__})") from None


def find_checkpoint(model: Path, meta: dict[str, str]) -> tuple[Path | None, str | None]:
    """The checkpoint beside `model` whose sha256 its metadata records, else (None, why not)."""
    want = meta.get("source_sha256")
    if meta.get("architecture", "").startswith("onnx:"):  # fcls-export wrapped a user's graph
        return (
            None,
            f"PyTorch not measured: {model.name} wraps {meta['architecture'][5:]}, no checkpoint",
        )
    if not want:
        return None, (
            f"PyTorch not measured: {model.name} records no source_sha256 (not written by "
            "fcls-export); pass --checkpoint"
        )
    # only file names beside the model: metadata never points elsewhere on disk
    names = dict.fromkeys([Path(meta.get("source_checkpoint", "model.pt")).name, "model.pt"])
    seen = []
    for name in names:
        candidate = model.parent / name
        if candidate.is_file():
            got = file_sha256(candidate)
            if got == want:
                return candidate, None
            seen.append(f"{name} has sha256 {got[:12]}")
    found = "; ".join(seen) if seen else f"no {' or '.join(names)} there"
    return None, (
        f"PyTorch not measured: no checkpoint beside {model} has the source_sha256 "
        f"{want[:12]} its metadata records ({found}); pass --checkpoint"
    )


def models_from(model: Path, checkpoint: Path | None) -> Models:
    """Use an existing ONNX model (its .opt/.int8/.fp16 siblings too) and its checkpoint: the
    given one, else the matching one beside the model, else none (PyTorch not measured)."""
    from fcls.export.variants import cuda_available

    if not model.is_file():
        raise ModelError(f"{model}: no such model file")
    meta = _model_metadata(model)
    no_torch = None
    if checkpoint is None:
        checkpoint, no_torch = find_checkpoint(model, meta)
    elif not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint")
    elif meta.get("source_sha256") and file_sha256(checkpoint) != meta["source_sha256"]:
        raise BenchError(
            f"{checkpoint}: sha256 {file_sha256(checkpoint)[:12]} is not the source_sha256 "
            f"{meta['source_sha256'][:12]} recorded in {model}: not the checkpoint it was "
            "exported from"
        )
    onnx = {"ort": model}
    for tag, name in (("opt", "ort-opt"), ("int8", "ort-int8")):
        sibling = variant_path(model, tag)
        if sibling.is_file():
            onnx[name] = sibling
    if cuda_available():
        onnx["cuda"] = model
        fp16 = variant_path(model, "fp16")
        if fp16.is_file():
            onnx["cuda-fp16"] = fp16
    return _with_openvino(
        Models(checkpoint, onnx, no_torch, recorded_training(meta, checkpoint)),
        read_bf16_check(meta),
    )


def recorded_training(meta: dict[str, str], checkpoint: Path | None) -> dict[str, Any] | None:
    """The training data a model records: in its checkpoint (when there is one), else in the
    `training_data` of its ONNX metadata (fcls-export writes it); None when neither has it."""
    if checkpoint is not None:
        from fcls.train.checkpoint import Checkpoint

        data = Checkpoint.load(checkpoint).data
        if data:
            return data
    try:
        found = json.loads(meta.get("training_data") or "null")
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def image_pool(
    data: Path | None = None, rows: int = 5_000, spec: ImageSpec = DEFAULT_SPEC
) -> np.ndarray:
    """(m, P) uint8 source images of `spec`: the first rows of any fcls input (labelled or
    not, CSV, Parquet or Arrow IPC), else the digits (32x32 grayscale)."""
    if data is None:
        from fcls.train.data import load_digits_32

        if spec.n_pixels != DEFAULT_SPEC.n_pixels:
            raise DataError("digits", f"no digits images of {spec.describe()}: pass --data")
        return load_digits_32()[0]
    pixels = read_pixels(data, input_kind(data), limit=rows, pixels=spec)
    if not len(pixels):
        raise DataError(str(data), "no data rows to draw benchmark images from")
    return pixels


@dataclass(frozen=True)
class BenchImages:
    """What the benchmark runs on: a pool to draw timing and end-to-end images from, and the
    rows agreement is checked on (None: not measured, `note` says why)."""

    pool: np.ndarray  # (m, P) uint8
    check: np.ndarray | None  # (c, P) uint8 held-out rows of the model's own data
    tag: str  # names the generated CSVs: one per image source
    note: str  # one line for the report
    spec: ImageSpec = DEFAULT_SPEC  # the model's images


AGREEMENT_ROWS = 5000  # rows of the data read for the agreement check (its test split is used)


def bench_images(
    data: Path | None, recorded: dict[str, Any] | None, spec: ImageSpec = DEFAULT_SPEC
) -> BenchImages:
    """Images from `data`, else from the model's recorded training data (found as the exporter
    finds it: fcls.export.gatedata); agreement is checked on their held-out rows. Without
    either, timings run on the digits and agreement is not measured: a model is never
    checked on another dataset."""
    from fcls.export.gatedata import gate_data
    from fcls.train.data import DIGITS_SOURCE

    gate = gate_data(data, recorded, AGREEMENT_ROWS, spec)
    if not gate.real:
        return BenchImages(
            image_pool(spec=spec),
            None,
            "digits",
            f"agreement not measured: {gate.note}; pass --data with the model's data "
            "(timings use digits images)",
            spec,
        )
    pool = np.concatenate([gate.calibration, gate.heldout])
    name = "digits" if gate.source == DIGITS_SOURCE else Path(gate.source).name.split(".")[0]
    tag = f"{name}-{hashlib.sha256(pool.tobytes()).hexdigest()[:8]}"  # one CSV per pool
    note = f"agreement on {len(gate.heldout)} rows of {gate.source} ({gate.note})"
    return BenchImages(pool, gate.heldout, tag, note, spec)


def real_looking_images(
    n: int, seed: int = 0, pool: np.ndarray | None = None, spec: ImageSpec = DEFAULT_SPEC
) -> np.ndarray:
    """(n, P) uint8 images of `spec` drawn from `pool` (default the digits), randomly flipped
    and shifted by up to 2 pixels, so a generated file of any size looks like real data."""
    shape = (-1, spec.height, spec.width, spec.channels)
    base = (image_pool(spec=spec) if pool is None else pool).reshape(shape)
    rng = np.random.default_rng(seed)
    images = base[rng.integers(0, len(base), n)]
    flip = rng.random(n) < 0.5
    images[flip] = images[flip, :, ::-1]
    shifts = rng.integers(-2, 3, size=(n, 2))
    for dy in range(-2, 3):  # 25 shift classes, each one vectorized roll
        for dx in range(-2, 3):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            images[sel] = np.roll(images[sel], (dy, dx), axis=(1, 2))
    return images.reshape(n, spec.n_pixels)


def eval_csv(
    workdir: Path,
    rows: int,
    pool: np.ndarray | None = None,
    tag: str = "digits",
    spec: ImageSpec = DEFAULT_SPEC,
) -> Path:
    """The benchmark's evaluate-format CSV with `rows` rows, generated once per image source."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"evaluate_{tag}_{rows}.csv"
    if path.is_file():
        return path
    return write_eval_csv(path, real_looking_images(rows, pool=pool, spec=spec))
