"""Load a FinalCNNet from an fcls `model.pt` or a bare notebook `state_dict`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fcls.infer.errors import CheckpointError
from fcls.train.data import FASHION_CLASSES
from fcls.train.model import FinalCNNet


@dataclass(frozen=True)
class Checkpoint:
    """An eval-mode model and what its checkpoint says about it."""

    model: FinalCNNet
    path: Path
    sha256: str
    class_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)  # the fcls checkpoint minus weights

    @property
    def test_accuracy(self) -> float | None:
        """The test accuracy fcls-train recorded, if any."""
        return self.meta.get("metrics", {}).get("test_accuracy")


def _mismatch(model: FinalCNNet, state: dict[str, Any]) -> str | None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shaped = sorted(
        f"{k} {got[k]} != {expected[k]}" for k in set(got) & set(expected) if got[k] != expected[k]
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shaped)):
        if items:
            parts.append(f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}")
    return "; ".join(parts) or None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read `path` (fcls model.pt or a bare state_dict) into an eval-mode FinalCNNet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
    try:
        import io

        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first[:200]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state, meta = obj["model"], {k: v for k, v in obj.items() if k != "model"}
    elif isinstance(obj, dict):
        state, meta = obj, {}
    else:
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    model = FinalCNNet()
    problem = _mismatch(model, state)
    if problem:
        raise CheckpointError(f"{path}: not a FinalCNNet checkpoint ({problem})")
    model.load_state_dict(state, strict=True)
    model.eval()
    names = tuple(meta.get("class_names") or FASHION_CLASSES)
    return Checkpoint(model, path, hashlib.sha256(raw).hexdigest(), names, meta)
