"""CSV parsing rows/s: the fcls streaming reader against pandas.read_csv of the whole file."""

from __future__ import annotations

import numpy as np
import pytest

from fcls.bench.artifacts import eval_csv
from fcls.infer.csvio import CsvReader

ROWS = 10_000


@pytest.fixture(scope="module")
def parse_csv(workdir):
    return eval_csv(workdir, ROWS)


@pytest.fixture(scope="module")
def expected(parse_csv):
    import pandas as pd

    return pd.read_csv(parse_csv).drop("ID", axis=1).to_numpy(np.uint8)


def test_parse_fcls(benchmark, parse_csv, expected):
    benchmark.group = "csv parse"

    def read() -> np.ndarray:
        return np.concatenate([c.pixels for c in CsvReader(parse_csv)])

    pixels = benchmark.pedantic(read, rounds=3, warmup_rounds=1)
    benchmark.extra_info["rows_per_s"] = ROWS / benchmark.stats.stats.mean
    np.testing.assert_array_equal(pixels, expected)


def test_parse_pandas(benchmark, parse_csv, expected):
    import pandas as pd

    benchmark.group = "csv parse"
    df = benchmark.pedantic(pd.read_csv, args=(parse_csv,), rounds=3, warmup_rounds=1)
    benchmark.extra_info["rows_per_s"] = ROWS / benchmark.stats.stats.mean
    np.testing.assert_array_equal(df.drop("ID", axis=1).to_numpy(np.uint8), expected)
