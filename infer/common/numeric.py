"""Small numeric helpers shared by the exporter's gate, the predictor and the benchmarks."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, classes) logits as float32 (max subtracted first: no overflow)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
