"""`export_onnx`: checkpoint -> ONNX behind a parity gate, plus gated variants."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fcls.infer.common.drift import PROFILE_KEY, Profile
from fcls.infer.common.errors import ConfigError, FclsError, ParityError, ProviderError
from fcls.infer.common.modelfile import VARIANT_TAGS, variant_path
from fcls.infer.common.output import OutputSet, atomic_write_text, output_errors
from fcls.infer.common.spec import SPEC_KEY, ImageSpec
from fcls.infer.common.system import fcls_version
from fcls.infer.engine.runtimes import BF16_CHECK_KEY
from fcls.train.checkpoint import Checkpoint

from .bf16 import Bf16Check, check_bf16, require_openvino, skip_notice
from .config import DYNAMIC_BATCHES, PARITY_BATCHES, ExportConfig
from .gatedata import GateData, gate_data
from .graph import ServingModel, default_opset, export_graph, lint, set_metadata
from .parity import ParityResult, check_parity, reference_logits
from .profile import build_profile
from .variants import (
    check_fp16_initializers,
    check_fp16_ranges,
    cuda_available,
    optimize_for_cpu,
    quantize_int8,
)

Log = Callable[[str], None]


@dataclass
class ExportResult:
    """Paths written and the figures of every gate."""

    path: Path
    exporter: str
    opset: int
    parity: ParityResult
    dynamic_batch: ParityResult
    variants: dict[str, Path] = field(default_factory=dict)
    variant_parity: dict[str, ParityResult] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # held-out accuracy per variant
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    profile: Profile | None = None  # the reference profile recorded in every model written
    bf16: dict[str, Any] | None = None  # the bf16 check recorded in the fp32 model, if one ran


VARIANTS = tuple(VARIANT_TAGS.values())
# every sibling an export may leave: the variants and the models kept by --keep-failed
SIBLING_TAGS = (*VARIANTS, "failed", *(f"{v}.failed" for v in VARIANTS))


class Source(Protocol):
    """What an export starts from: a PyTorch checkpoint (`TorchSource`) or a user's own ONNX
    classifier (`fcls.export.wrap`). Every gate, variant, profile and publish step is shared."""

    spec: ImageSpec
    recorded: dict[str, Any] | None  # the data the gates read when --data is not given
    exporters: tuple[str, ...]  # ways to write the fp32 graph, tried in order

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """The reference: (N, K) float32 logits of the source model for (N, P) uint8 rows."""
        ...

    def write(self, path: Path, opset: int, exporter: str) -> int:
        """Write the fp32 serving graph to `path`; return the opset written."""
        ...

    def metadata(self) -> dict[str, Any]:
        """What the ONNX metadata records of the source (architecture, sha256, data)."""
        ...

    def check_fp16(self, calibration: np.ndarray) -> None:
        """Refuse (Fp16RangeError) a model whose fp16 graph would overflow."""
        ...

    def write_fp16(self, path: Path, opset: int, exporter: str) -> None:
        """Write the fp16 serving graph to `path`."""
        ...


class TorchSource:
    """A checkpoint's network, exported by torch (dynamo first, then TorchScript)."""

    exporters: tuple[str, ...] = ("dynamo", "torchscript")

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt, self.spec = ckpt, ckpt.spec
        self.recorded: dict[str, Any] | None = ckpt.data

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return reference_logits(self.ckpt.model, self.spec, pixels)

    def write(self, path: Path, opset: int, exporter: str) -> int:
        return export_graph(ServingModel(self.ckpt.model, self.spec), path, opset, exporter)

    def metadata(self) -> dict[str, Any]:
        ckpt = self.ckpt
        return {
            "architecture": ckpt.architecture,
            "source_checkpoint": ckpt.path.name if ckpt.path else None,
            "source_sha256": ckpt.sha256,
            "test_accuracy": ckpt.test_accuracy,
            # the run's data (source, sha256, limit, split_seed): fcls-bench checks agreement on it
            "training_data": ckpt.data,
        }

    def check_fp16(self, calibration: np.ndarray) -> None:
        check_fp16_ranges(self.ckpt.model, self.spec, calibration)

    def write_fp16(self, path: Path, opset: int, exporter: str) -> None:
        serving = ServingModel(self.ckpt.model, self.spec, dtype=torch.float16)  # BN folded in fp32
        export_graph(serving, path, opset, exporter)


def _remove_stale_variants(dest: Path, log: Log) -> None:
    """A new fp32 model was published: variants of the model it replaced no longer belong."""
    for tag in SIBLING_TAGS:
        stale = variant_path(dest, tag)
        if stale.is_file():
            with output_errors(stale, "cannot remove the stale variant"):
                stale.unlink()
            log(f"removed {stale.name}: a variant of the model {dest.name} replaced")


def _discard(staging: OutputSet, dest: Path, keep_failed: bool) -> Path | None:
    """Drop a model that failed its gate; with keep_failed move it to `<stem>.failed.onnx`."""
    kept = variant_path(dest, "failed") if keep_failed else None
    return staging.discard(dest, keep_as=kept)


def export_onnx(
    checkpoint: Path | Checkpoint,
    dest: Path,
    config: ExportConfig | None = None,
    log: Log = print,
) -> ExportResult:
    """Export a checkpoint (any registered network, or the user's own) to `dest` only if it passes the parity gate.

    `checkpoint` is a `model.pt` path (any checkpoint format, or a bare state_dict) or a loaded
    `Checkpoint`; `dest` is the fp32 ONNX file; `config` picks the variants (`.opt`, `.int8`,
    `.fp16` beside `dest`), the gate data and tolerances; `log` receives each gate's figures.
    Variants of a model `dest` replaces are removed. Returns the paths and every gate's figures.

    Raises CheckpointError (unreadable, or weights that do not fit its network), ParityError (a gate failed: nothing
    of that model is written; or the bf16 check failed: the model is written, the failed
    check recorded in it), ConfigError (int8 or bf16 without real gate images), ProviderError
    (require_fp16_check without CUDA), MissingExtraError (bf16 without openvino), DataError
    (bad --data) and OutputError.
    """
    config = config or ExportConfig()
    _check_fp16_checkable(config)  # before the checkpoint is read
    _check_bf16_checkable(config)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    return export_source(TorchSource(ckpt), dest, config, log)


def export_source(
    source: Source, dest: Path, config: ExportConfig, log: Log = print
) -> ExportResult:
    """Write `source`'s fp32 graph to `dest` behind the parity gate, with the drift profile,
    parity.json and the variants `config` asks for, each gated and published atomically.
    The one export path: `export_onnx` (checkpoints) and `wrap_onnx` (user ONNX) call it."""
    t0 = time.perf_counter()
    _check_fp16_checkable(config)
    _check_bf16_checkable(config)
    bf16 = config.bf16 and _bf16_here(log)
    with OutputSet() as staging:
        staging.stage(dest)  # proves the destination writable before any work
        gate = gate_data(config.data, source.recorded, config.eval_rows, source.spec)
        if not gate.real:
            if config.int8 or bf16:  # calibrating or gating on noise says nothing: refuse
                what = "--int8 needs real images to calibrate and gate on"
                raise ConfigError(
                    f"{what if config.int8 else '--bf16 needs real images to gate on'}, and "
                    f"{gate.note}: pass --data with the training CSV (or any labelled CSV of "
                    "the same kind)"
                )
            log(
                f"notice: {gate.note}; fp32 parity is checked on random images (--data adds real ones)"
            )
        if config.builds_fp16:  # refuse an fp16 overflow before anything is written
            source.check_fp16(gate.calibration[: config.calibration_rows])
        parity_pixels = gate.parity_set(config.parity_real)  # (2R, P) uint8: real + random
        reference = source.logits(parity_pixels)
        heldout_ref = source.logits(gate.heldout)
        profile = _profile(source, gate, heldout_ref, log)
        opset = config.opset or default_opset()
        result = _export_fp32(
            source, dest, opset, config, parity_pixels, reference, staging, log, profile
        )
        _remove_stale_variants(dest, log)
        result.notices.append(f"gate images: {gate.source} ({gate.note})")
        _write_parity_json(dest, result)
        build = _Build(source, dest, config, gate, heldout_ref, result, staging, log)
        _variants(build)
        if bf16:  # last: a failed check leaves the fp32 model and every variant in place
            _bf16_check(build)
        _write_parity_json(dest, result)
    result.seconds = time.perf_counter() - t0
    return result


def _check_fp16_checkable(config: ExportConfig) -> None:
    if config.require_fp16_check and not cuda_available():
        raise ProviderError(
            "--require-fp16-check: onnxruntime cannot run a CUDA session here (no "
            "CUDAExecutionProvider, or no usable GPU); fp16 parity cannot be checked"
        )


def _check_bf16_checkable(config: ExportConfig) -> None:
    if config.bf16:
        require_openvino()


def _bf16_here(log: Log) -> bool:
    """Whether this CPU computes bf16 natively; else says, in one line, that --bf16 is skipped."""
    notice = skip_notice()
    if notice is not None:
        log(notice)
    return notice is None


def _export_fp32(
    source: Source,
    dest: Path,
    opset: int,
    config: ExportConfig,
    pixels: np.ndarray,
    reference: np.ndarray,
    staging: OutputSet,
    log: Log,
    profile: Profile | None = None,
) -> ExportResult:
    """Try each of the source's exporters; keep the first that lints and passes parity."""
    failures: list[str] = []
    tmp = staging.temp(dest)  # staged by export_source
    for exporter in source.exporters:
        try:
            written = source.write(tmp, opset, exporter)
            lint(tmp)
        except FclsError as e:
            failures.append(f"{exporter}: {e}")
            continue
        except Exception as e:  # exporter internals: record and try the next one
            failures.append(f"{exporter} exporter failed: {type(e).__name__}: {str(e)[:200]}")
            continue
        parity = check_parity(reference, tmp, pixels, batch_sizes=PARITY_BATCHES, atol=config.atol)
        log(f"parity ({exporter}, opset {written}): {parity.summary()}")
        if not parity.passed:
            failures.append(f"{exporter}: {parity.summary()}")
            continue
        shape = (DYNAMIC_BATCHES[-1], source.spec.n_pixels)
        noise = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
        dynamic = check_parity(
            source.logits(noise),
            tmp,
            noise,
            variant="fp32 dynamic batch",
            batch_sizes=DYNAMIC_BATCHES,
            atol=config.atol,
        )
        if not dynamic.passed:
            failures.append(f"{exporter}: {dynamic.summary()}")
            continue
        result = ExportResult(dest, exporter, written, parity, dynamic, profile=profile)
        set_metadata(tmp, _metadata(source, result, "fp32"))
        staging.commit(dest)
        return result
    kept = _discard(staging, dest, config.keep_failed)
    where = f"; failed model kept at {kept}" if kept else f"; nothing written to {dest}"
    raise ParityError("export refused: " + " | ".join(failures) + where)


def _metadata(
    source: Source, result: ExportResult, variant: str, parity: ParityResult | None = None
) -> dict[str, Any]:
    parity = parity or result.parity
    spec = source.spec
    return {
        "fcls_version": fcls_version(),
        "variant": variant,
        "class_names": list(spec.class_names),
        SPEC_KEY: spec.to_json(),
        "input_layout": (
            f"pixels: uint8 [batch, {spec.n_pixels}] = {spec.describe()}, "
            f"row-major with channels interleaved, raw 0..255"
        ),
        "outputs": (
            f"logits: float32 [batch, {spec.n_classes}]; label: int64 [batch] = argmax(logits)"
        ),
        **source.metadata(),
        "opset": result.opset,
        "exporter": result.exporter,
        "parity": parity.to_dict(),
        **({PROFILE_KEY: result.profile.to_json()} if result.profile else {}),
    }


def _profile(source: Source, gate: GateData, heldout: np.ndarray, log: Log) -> Profile | None:
    """The reference profile of the held-out rows (None without real ones), said in one line."""
    profile = build_profile(source.logits, source.spec, gate, heldout)
    if profile is None:
        log("notice: no drift profile: the gates have no real images (--data adds them)")
        return None
    cal = profile.calibration or {}
    held = cal.get("heldout")
    figures = (
        f"; held-out ECE {held['ece']['before']:.4f} -> {held['ece']['after']:.4f}, "
        f"NLL {held['nll']['before']:.4f} -> {held['nll']['after']:.4f}"
        if held
        else ""
    )
    fitted = (
        f"temperature {profile.temperature:.3f} fitted on {cal['fitted_on']}{figures}"
        if cal
        else "no labelled rows: probabilities left uncalibrated"
    )
    log(f"profile: {profile.rows} held-out rows of {gate.source}; {fitted}")
    return profile


def _write_parity_json(dest: Path, result: ExportResult) -> None:
    report = {
        "model": dest.name,
        "exporter": result.exporter,
        "opset": result.opset,
        "fp32": result.parity.to_dict(),
        "fp32_dynamic_batch": result.dynamic_batch.to_dict(),
        "variants": {k: v.to_dict() for k, v in result.variant_parity.items()},
        "heldout_accuracy": result.accuracy,
        "calibration": result.profile.calibration if result.profile else None,
        "drift_profile": (
            {"rows": result.profile.rows, "source": result.profile.source}
            if result.profile
            else None
        ),
        "notices": result.notices,
        **({"bf16": result.bf16} if result.bf16 is not None else {}),
    }
    atomic_write_text(
        dest.with_name(f"{dest.stem}.parity.json"), json.dumps(report, indent=2) + "\n"
    )


def _accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None or not len(labels) else float((logits.argmax(1) == labels).mean())


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class _Build:
    """What every variant of one export shares: the source, the published fp32 model, the
    gates' rows and the fp32 reference on them, the figures so far and the staging area."""

    source: Source
    dest: Path
    config: ExportConfig
    gate: GateData
    heldout_ref: np.ndarray  # the source's logits of gate.heldout
    result: ExportResult
    staging: OutputSet
    log: Log


def _variants(build: _Build) -> None:
    """Build, gate and publish each requested variant; a failed gate raises after cleanup."""
    config, result = build.config, build.result
    acc = _accuracy(build.heldout_ref, build.gate.heldout_labels)
    if acc is not None:
        result.accuracy["fp32"] = acc
    if config.optimize:
        _optimized_variant(build)
    if config.int8:
        _int8_variant(build)
    if config.builds_fp16:
        _fp16_variant(build)


def _optimized_variant(build: _Build) -> None:
    """`<stem>.opt.onnx`: ORT's offline CPU optimization, gated on fp32's tolerance."""
    path = variant_path(build.dest, "opt")
    tmp = build.staging.stage(path)
    optimize_for_cpu(build.dest, tmp)
    parity = check_parity(
        build.heldout_ref,
        tmp,
        build.gate.heldout,
        variant="optimized",
        batch_sizes=(256,),
        atol=build.config.atol,
    )
    _publish(build, "optimized", path, tmp, parity)


def _int8_variant(build: _Build) -> None:
    """`<stem>.int8.onnx`: gated on top-1 agreement and on the held-out accuracy drop."""
    config, gate = build.config, build.gate
    path = variant_path(build.dest, "int8")
    tmp = build.staging.stage(path)
    quantize_int8(build.dest, tmp, gate.calibration[: config.calibration_rows])
    parity = check_parity(
        build.heldout_ref,
        tmp,
        gate.heldout,
        variant="int8",
        batch_sizes=(256,),
        atol=None,
        min_agreement=config.int8_min_agreement,
        truth=gate.heldout_labels,
    )
    _publish(build, "int8", path, tmp, parity, config.int8_max_accuracy_drop)


def _bf16_check(build: _Build) -> None:
    """Check OpenVINO bf16 against onnxruntime fp32 on the published fp32 model and record
    the figures in its metadata and parity.json, passed or not. A failed check raises
    ParityError after recording it: the fp32 model and its variants are sound and stay, and
    the record is what keeps fcls-infer from scoring it at --precision bf16."""
    t0 = time.perf_counter()
    result, dest = build.result, build.dest
    check = check_bf16(dest, build.gate.heldout, build.gate.heldout_labels)
    _record_bf16(build, check)
    result.bf16 = check.to_dict()
    build.log(f"{check.summary()} | {time.perf_counter() - t0:.1f}s")
    if check.passed:
        return
    _write_parity_json(dest, result)
    raise ParityError(
        f"bf16 check failed: {'; '.join(check.problems())}; recorded in {dest.name} and its "
        f"parity.json, so fcls-infer refuses --precision bf16 for it (fp32 is unaffected)"
    )


def _record_bf16(build: _Build, check: Bf16Check) -> None:
    """Republish the fp32 model with the check as one more metadata entry, staged and
    committed like every output of the export. The graph and the other entries are copied
    unchanged, so the variants built from it still match it."""
    dest = build.dest
    tmp = build.staging.stage(dest)
    with output_errors(dest):
        shutil.copyfile(dest, tmp)
    set_metadata(tmp, {BF16_CHECK_KEY: check.to_dict()})
    build.staging.commit(dest)


def _fp16_variant(build: _Build) -> None:
    """`<stem>.fp16.onnx`: gated on CUDA; without CUDA written unchecked, with a notice."""
    result = build.result
    path = variant_path(build.dest, "fp16")
    tmp = build.staging.stage(path)
    build.source.write_fp16(tmp, result.opset, result.exporter)
    lint(tmp)
    check_fp16_initializers(tmp)
    if cuda_available():
        parity = check_parity(
            build.heldout_ref,
            tmp,
            build.gate.heldout,
            variant="fp16",
            batch_sizes=(256,),
            atol=None,
            min_agreement=build.config.fp16_min_agreement,
            provider="cuda",
        )
        _publish(build, "fp16", path, tmp, parity)
    else:
        unchecked = {**_metadata(build.source, result, "fp16"), "parity": "not checked: no CUDA"}
        set_metadata(tmp, unchecked)
        build.staging.commit(path)
        result.variants["fp16"] = path
        notice = f"{path.name}: NOT parity-checked (onnxruntime cannot run a CUDA session here)"
        result.notices.append(notice)
        build.log(f"notice: {notice}")


def _publish(
    build: _Build,
    variant: str,
    path: Path,
    tmp: Path,
    parity: ParityResult,
    max_accuracy_drop: float | None = None,
) -> None:
    """Gate a variant (agreement, and the accuracy drop where asked and labels are known)
    and rename it into place."""
    result, log = build.result, build.log
    result.variant_parity[variant] = parity
    log(f"parity ({variant}): {parity.summary()}")
    problems = [] if parity.passed else [parity.summary()]
    if max_accuracy_drop is not None and parity.accuracy is not None:
        result.accuracy[variant] = parity.accuracy
        drop = result.accuracy["fp32"] - parity.accuracy
        log(
            f"held-out accuracy: fp32 {result.accuracy['fp32']:.4f}, {variant} "
            f"{parity.accuracy:.4f} (drop {100 * drop:.2f} points)"
        )
        if drop > max_accuracy_drop:
            problems.append(
                f"accuracy drop {100 * drop:.2f} points > {100 * max_accuracy_drop:.2f}"
            )
    if problems:
        kept = _discard(build.staging, path, build.config.keep_failed)
        _write_parity_json(result.path, result)
        where = f"; kept at {kept}" if kept else f"; no {path.name} written"
        raise ParityError(f"{variant} variant refused: {'; '.join(problems)}{where}")
    set_metadata(tmp, _metadata(build.source, result, variant, parity))
    build.staging.commit(path)
    result.variants[variant] = path


__all__ = ["ExportResult", "Source", "TorchSource", "export_onnx", "export_source"]
