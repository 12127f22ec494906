"""fcls.infer: the torch-free deployment half of fcls (CSV reader, errors, ONNX inference).

Submodules load lazily so that `fcls.infer.csvio` and `fcls.infer.errors`, which training
reuses, do not pull in onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import Summary, predict_csv
    from .predictor import Predictor

__all__ = ["Predictor", "Summary", "predict_csv"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    if name in ("predict_csv", "Summary"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'fcls.infer' has no attribute {name!r}")
