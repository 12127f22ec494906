"""What the benchmark tests share besides fixtures: batch sizes, rounds, file sizes, timings.

FCLS_BENCH_ROWS sets the end-to-end file size (default 50,000 rows) and caps the CSV-parse file
(default 10,000 rows). Tests import from here, never from conftest.
"""

from __future__ import annotations

import os

import numpy as np

from fcls.bench._defaults import BATCH_SIZES

ROUNDS = dict(zip(BATCH_SIZES, (300, 30, 10, 4)))  # timed calls per batch size


E2E_ROWS = int(os.environ.get("FCLS_BENCH_ROWS", "50000"))


PARSE_ROWS = min(10_000, E2E_ROWS)


def timings(benchmark) -> np.ndarray | None:
    """Per-call seconds of a pedantic run, or None when benchmarking is disabled (no stats)."""
    if benchmark.stats is None:
        return None
    return np.asarray(benchmark.stats.stats.data)
