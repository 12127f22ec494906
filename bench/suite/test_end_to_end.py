"""End to end CSV -> results.csv: fcls-infer (fp32, int8) against the notebook's pipeline."""

from __future__ import annotations

import pytest

from fcls.bench.backends import INT8_AGREEMENT
from fcls.bench.e2e import E2E, fcls_pipeline, notebook_pipeline


@pytest.fixture(scope="module")
def notebook_labels(e2e_csv, models, tmp_path_factory):
    return notebook_pipeline(
        e2e_csv, tmp_path_factory.mktemp("nb") / "r.csv", models.checkpoint
    ).labels


def _record(benchmark, run: E2E) -> None:
    benchmark.extra_info.update(rows=run.rows, rows_per_s=run.rows_per_s)


def test_e2e_notebook(benchmark, e2e_csv, models, tmp_path):
    benchmark.group = "end to end"
    run = benchmark.pedantic(
        notebook_pipeline, args=(e2e_csv, tmp_path / "r.csv", models.checkpoint), rounds=1
    )
    _record(benchmark, run)
    assert run.rows == len(run.labels) > 0


@pytest.mark.parametrize(
    ("name", "variant", "bar"),
    [("fcls fp32", "ort", 1.0), ("fcls int8", "ort-int8", INT8_AGREEMENT)],
)
def test_e2e_fcls(benchmark, e2e_csv, models, tmp_path, notebook_labels, name, variant, bar):
    benchmark.group = "end to end"
    run = benchmark.pedantic(
        fcls_pipeline, args=(name, e2e_csv, tmp_path / "r.csv", models.onnx[variant]), rounds=1
    )
    _record(benchmark, run)
    assert (run.labels == notebook_labels).mean() >= bar
