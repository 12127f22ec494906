"""`model.pt`, the one checkpoint format: weights plus everything that describes them.

Written only by `Checkpoint.save` and read only by `Checkpoint.load`. Format versions:
0 is a bare FinalCNNet `state_dict` (as the notebook saves it), 1 is fcls 0.1's `model.pt`
(no `format` key), 2 adds `format` and records the data by content (sha256 and size).
Every version holds only plain types and tensors, so it loads with `weights_only=True`:
a checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from fcls.infer.common.errors import CheckpointError
from fcls.infer.common.modelfile import check_checkpoint
from fcls.infer.common.output import atomic_file, output_errors
from fcls.infer.common.system import fcls_version

from .data import FASHION_CLASSES
from .model import FinalCNNet

FORMAT = 2
ARCHITECTURE = "FinalCNNet"
INPUT_SPEC: dict[str, Any] = {
    "name": "pixels",
    "dtype": "uint8",
    "shape": [1024],
    "layout": "32x32 grayscale, row-major (pix1..pix1024), values 0..255",
    "model_input": "float32 (N, 1, 32, 32) of the raw 0..255 values (no scaling)",
}


@dataclass(frozen=True, eq=False)  # tensors have no truth value: compare to_dict() instead
class Checkpoint:
    """A FinalCNNet's weights and what the run that made them recorded."""

    weights: dict[str, torch.Tensor]
    class_names: tuple[str, ...] = FASHION_CLASSES
    config: dict[str, Any] | None = None  # TrainConfig.to_dict() of the run
    data: dict[str, Any] | None = None  # source, sha256, size, limit, split_seed
    split: dict[str, int] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    fcls_version: str = field(default_factory=fcls_version)
    format: int = FORMAT
    path: Path | None = field(default=None, compare=False)  # where it was loaded from
    sha256: str | None = field(default=None, compare=False)  # of the file it was loaded from

    @property
    def test_accuracy(self) -> float | None:
        """The test accuracy fcls-train recorded, if any."""
        return self.metrics.get("test_accuracy")

    @cached_property
    def model(self) -> FinalCNNet:
        """An eval-mode FinalCNNet holding these weights (built once)."""
        model = FinalCNNet()
        model.load_state_dict(self.weights, strict=True)
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        """The saved form: plain types and CPU tensors only."""
        return {
            "format": FORMAT,
            "architecture": ARCHITECTURE,
            "model": {k: v.detach().cpu() for k, v in self.weights.items()},
            "class_names": list(self.class_names),
            "input": INPUT_SPEC,
            "config": self.config,
            "data": self.data,
            "split": self.split,
            "metrics": self.metrics,
            "epochs": self.epochs,
            "fcls_version": self.fcls_version,
        }

    def save(self, path: Path) -> Path:
        """Write to `path` atomically (temp file, fsync, rename)."""
        with atomic_file(Path(path)) as f, output_errors(Path(path)):
            torch.save(self.to_dict(), f.raw)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read any checkpoint version (or a bare state_dict); refuse what is not a FinalCNNet."""
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
        _check_weights(obj, path)  # version 0: a bare state_dict
        return cls(weights=obj, fcls_version="unknown", format=0, path=path, sha256=sha)

    @classmethod
    def _from_saved(cls, obj: dict[str, Any], path: Path, sha: str) -> Checkpoint:
        version = obj.get("format", 1)
        if not isinstance(version, int) or not 1 <= version <= FORMAT:
            raise CheckpointError(
                f"{path}: checkpoint format {version!r} is unknown to fcls {fcls_version()} "
                f"(it reads formats 0..{FORMAT}); upgrade fcls"
            )
        _check_weights(obj["model"], path)
        data = obj.get("data")
        return cls(
            weights=obj["model"],
            class_names=tuple(obj.get("class_names") or FASHION_CLASSES),
            config=obj.get("config"),
            data=dict(data) if data else None,
            split=obj.get("split"),
            metrics=dict(obj.get("metrics") or {}),
            epochs=obj.get("epochs"),
            fcls_version=str(obj.get("fcls_version", "unknown")),
            format=version,
            path=path,
            sha256=sha,
        )


def _check_weights(state: dict[str, Any], path: Path) -> None:
    """Refuse a state_dict whose keys or shapes are not FinalCNNet's, naming the differences."""
    expected = {k: tuple(v.shape) for k, v in FinalCNNet().state_dict().items()}
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
        raise CheckpointError(f"{path}: not a FinalCNNet checkpoint ({'; '.join(parts)})")


__all__ = ["FORMAT", "INPUT_SPEC", "Checkpoint"]
