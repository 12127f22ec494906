"""`model.pt`, the one checkpoint format: weights plus everything that describes them.

Written only by `Checkpoint.save` and read only by `Checkpoint.load`. Format versions:
0 is a bare FinalCNNet `state_dict` (as the notebook saves it), 1 is fcls 0.1's `model.pt`
(no `format` key), 2 adds `format` and records the data by content (sha256 and size), 3
records the network (`architecture`: a registered name or a user's `module:Class`) and the
image spec (`image_spec`: height, width, channels, pixel order, class names); format 3 files
written since may also record the precision the run trained at (`precision`), an optional
key older readers ignore. Versions 0..2 are FinalCNNet on 32x32 grayscale images, with their
recorded class names, else numbers.
Every version holds only plain types and tensors, so it loads with `weights_only=True`:
a checkpoint can never run code (a user's network class is imported by name).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcls.infer.common.errors import CheckpointError, FclsError
from fcls.infer.common.modelfile import check_checkpoint
from fcls.infer.common.output import atomic_file, output_errors
from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec, SpecError, number_names
from fcls.infer.common.system import fcls_version

from .registry import DEFAULT_ARCH, create_model

FORMAT = 3
# what formats 0..2 hold: the notebook's network on its 32x32 grayscale images
LEGACY_ARCHITECTURE = DEFAULT_ARCH


def input_description(spec: ImageSpec) -> dict[str, Any]:
    """The recorded description of a model's input row (for people reading model.pt)."""
    return {
        "name": "pixels",
        "dtype": "uint8",
        "shape": [spec.n_pixels],
        "layout": f"{spec.describe()}; values 0..255",
        "model_input": (
            f"float32 (N, {spec.channels}, {spec.height}, {spec.width}) of the raw 0..255 "
            "values (no scaling)"
        ),
    }


@dataclass(frozen=True, eq=False)  # tensors have no truth value: compare to_dict() instead
class Checkpoint:
    """A network's weights, what it is (architecture, image spec) and what the run recorded."""

    weights: dict[str, torch.Tensor]
    architecture: str = DEFAULT_ARCH  # registry name, or a user's module:Class
    spec: ImageSpec = DEFAULT_SPEC  # geometry and class names of the images it classifies
    config: dict[str, Any] | None = None  # TrainConfig.to_dict() of the run
    data: dict[str, Any] | None = None  # source, sha256, size, limit, split_seed
    split: dict[str, int] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    # what the run trained at (PrecisionChoice.to_dict()); None before it was recorded
    precision: dict[str, Any] | None = None
    fcls_version: str = field(default_factory=fcls_version)
    format: int = FORMAT
    path: Path | None = field(default=None, compare=False)  # where it was loaded from
    sha256: str | None = field(default=None, compare=False)  # of the file it was loaded from

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def test_accuracy(self) -> float | None:
        """The test accuracy fcls-train recorded, if any."""
        return self.metrics.get("test_accuracy")

    @cached_property
    def model(self) -> nn.Module:
        """An eval-mode network of `architecture` for `spec` holding these weights (built
        once); CheckpointError when it cannot be built or the weights do not fit it."""
        where = self.path or "checkpoint"
        try:
            model = create_model(self.architecture, self.spec)
        except FclsError as e:
            raise CheckpointError(f"{where}: cannot rebuild its network ({e})") from None
        _check_weights(self.weights, model, self.architecture, where)
        model.load_state_dict(self.weights, strict=True)
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        """The saved form: plain types and CPU tensors only."""
        return {
            "format": FORMAT,
            "architecture": self.architecture,
            "image_spec": self.spec.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.weights.items()},
            "input": input_description(self.spec),
            "config": self.config,
            "data": self.data,
            "split": self.split,
            "metrics": self.metrics,
            "epochs": self.epochs,
            "precision": self.precision,
            "fcls_version": self.fcls_version,
        }

    def save(self, path: Path) -> Path:
        """Write to `path` atomically (temp file, fsync, rename)."""
        with atomic_file(Path(path)) as f, output_errors(Path(path)):
            torch.save(self.to_dict(), f.raw)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read any checkpoint version (or a bare state_dict); refuse weights that do not fit
        the network it records."""
        path = Path(path)
        check_checkpoint(path)  # missing, a directory, or an ONNX model: says what to do
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such checkpoint") from None
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
        try:
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint ({first[:200]})"
            ) from None
        sha = hashlib.sha256(raw).hexdigest()
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
        if isinstance(obj.get("model"), dict):
            return cls._from_saved(obj, path, sha)
        spec = _legacy_spec(obj, None)  # version 0: a bare state_dict
        _check_shapes(obj, LEGACY_ARCHITECTURE, spec, path)
        return cls(weights=obj, spec=spec, fcls_version="unknown", format=0, path=path, sha256=sha)

    @classmethod
    def _from_saved(cls, obj: dict[str, Any], path: Path, sha: str) -> Checkpoint:
        version = obj.get("format", 1)
        if not isinstance(version, int) or not 1 <= version <= FORMAT:
            raise CheckpointError(
                f"{path}: checkpoint format {version!r} is unknown to fcls {fcls_version()} "
                f"(it reads formats 0..{FORMAT}); upgrade fcls"
            )
        architecture, spec = _described(obj, version, path)
        _check_shapes(obj["model"], architecture, spec, path)
        data = obj.get("data")
        return cls(
            weights=obj["model"],
            architecture=architecture,
            spec=spec,
            config=obj.get("config"),
            data=dict(data) if data else None,
            split=obj.get("split"),
            metrics=dict(obj.get("metrics") or {}),
            epochs=obj.get("epochs"),
            precision=obj.get("precision"),
            fcls_version=str(obj.get("fcls_version", "unknown")),
            format=version,
            path=path,
            sha256=sha,
        )


def _described(obj: dict[str, Any], version: int, path: Path) -> tuple[str, ImageSpec]:
    """(architecture, spec) a saved checkpoint records; formats 1 and 2 are FinalCNNet's."""
    if version < 3:
        return LEGACY_ARCHITECTURE, _legacy_spec(obj["model"], obj.get("class_names"))
    architecture = obj.get("architecture")
    if not isinstance(architecture, str) or not architecture.strip():
        raise CheckpointError(f"{path}: records no architecture (format {version})")
    try:
        return architecture, ImageSpec.from_dict(obj.get("image_spec"))  # type: ignore[arg-type]
    except SpecError as e:
        raise CheckpointError(f"{path}: recorded image spec is unusable ({e})") from None


def _legacy_spec(state: dict[str, Any], names: Any) -> ImageSpec:
    """The notebook's 32x32 grayscale images, with the recorded class names, else numbers
    for as many classes as the last layer has (nothing assumes a dataset)."""
    if names:
        return ImageSpec(class_names=tuple(names))
    fc5 = state.get("fc5.weight")
    k = int(fc5.shape[0]) if isinstance(fc5, torch.Tensor) and fc5.ndim == 2 else 10
    return ImageSpec(class_names=number_names(max(k, 2)))


def _check_shapes(state: dict[str, Any], architecture: str, spec: ImageSpec, path: Path) -> None:
    """Refuse a state_dict that does not fit `architecture` at `spec`, naming the differences.

    The network is built on the meta device: shapes only, no memory and no initialisation.
    A user's network that cannot be imported here is checked when its model is built."""
    try:
        with torch.device("meta"):
            expected = create_model(architecture, spec)
    except FclsError as e:
        if ":" in architecture:
            return  # Checkpoint.model says why, if it is ever built
        raise CheckpointError(f"{path}: cannot rebuild its network ({e})") from None
    _check_weights(state, expected, architecture, path)


def _check_weights(
    state: dict[str, Any], model: nn.Module, architecture: str, where: object
) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(state) - set(expected))
    shaped = sorted(
        f"{k} {got[k]} != {expected[k]}" for k in set(got) & set(expected) if got[k] != expected[k]
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shaped)):
        if items:
            parts.append(f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}")
    if parts:
        raise CheckpointError(f"{where}: not a {architecture} checkpoint ({'; '.join(parts)})")


__all__ = ["FORMAT", "Checkpoint", "input_description"]
