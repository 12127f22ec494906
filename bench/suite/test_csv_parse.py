"""CSV parsing rows/s: the fcls streaming reader against pandas.read_csv of the whole file."""

from __future__ import annotations

import numpy as np
import pytest
from suite_helpers import PARSE_ROWS, timings

from fcls.bench.artifacts import eval_csv
from fcls.infer.formats.csvfile import CsvReader


@pytest.fixture(scope="module")
def parse_csv(workdir):
    return eval_csv(workdir, PARSE_ROWS)


@pytest.fixture(scope="module")
def expected(parse_csv):
    import pandas as pd

    return pd.read_csv(parse_csv).drop("ID", axis=1).to_numpy(np.uint8)


def _record(benchmark) -> None:
    times = timings(benchmark)
    if times is not None:  # none with --benchmark-disable
        benchmark.extra_info["rows_per_s"] = PARSE_ROWS / times.mean()


def test_parse_fcls(benchmark, parse_csv, expected):
    benchmark.group = "csv parse"

    def read() -> np.ndarray:
        return np.concatenate([c.pixels for c in CsvReader(parse_csv)])

    pixels = benchmark.pedantic(read, rounds=3, warmup_rounds=1)
    _record(benchmark)
    np.testing.assert_array_equal(pixels, expected)


def test_parse_pandas(benchmark, parse_csv, expected):
    import pandas as pd

    benchmark.group = "csv parse"
    df = benchmark.pedantic(pd.read_csv, args=(parse_csv,), rounds=3, warmup_rounds=1)
    _record(benchmark)
    np.testing.assert_array_equal(df.drop("ID", axis=1).to_numpy(np.uint8), expected)
