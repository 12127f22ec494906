"""fcls.infer: the torch-free deployment half of fcls, in layers that import one way.

    common   errors, data spec, atomic output, system facts, extras, model-file sniffing
    formats  CSV / Parquet / Arrow IPC readers, the input dispatcher, -o rule, results format
    engine   onnxruntime sessions, Predictor, the local pipeline and resume, Ray
    evaluate, convert   labelled evaluation and format conversion
    cli      the command kit and fcls-infer, fcls-eval, fcls-convert

`Predictor`, `ScoringOptions`, `predict_csv` and `Summary` load lazily so that training, which reuses `common`
and `formats`, does not pull in onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine.options import ScoringOptions
    from .engine.pipeline import Summary, predict_csv
    from .engine.predictor import Predictor

__all__ = ["Predictor", "ScoringOptions", "Summary", "predict_csv"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from .engine.predictor import Predictor

        return Predictor
    if name == "ScoringOptions":
        from .engine.options import ScoringOptions

        return ScoringOptions
    if name in ("predict_csv", "Summary"):
        from .engine import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'fcls.infer' has no attribute {name!r}")
