"""Small numeric helpers shared by the exporter's gate, the predictor and the benchmarks."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of (n, classes) logits / temperature as float32 (max subtracted first:
    no overflow). A temperature of 1 leaves the logits untouched, so its output is bit for bit
    the plain softmax."""
    if temperature != 1.0:
        logits = logits / np.float32(temperature)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(logits))) of (n, classes) logits, in float32 (no overflow)."""
    top = logits.max(axis=1)
    return (top + np.log(np.exp(logits - top[:, None]).sum(axis=1))).astype(np.float32)
