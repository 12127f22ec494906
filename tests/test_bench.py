"""fcls.bench and fcls-bench: figures, correctness checks and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fcls.bench.cli import main
from fcls.bench.core import Timing
from fcls.bench.runner import BenchConfig, run_bench


def test_timing_figures():
    t = Timing("x", 10, [0.01] * 98 + [0.02, 0.03])
    assert t.pct(50) == pytest.approx(10.0)
    assert t.pct(99) > 19.0
    assert t.throughput == pytest.approx(10 * 100 / 1.03)
    base = Timing("torch", 10, [0.04] * 100)
    row = t.row(base)
    assert row["vs_torch"] == pytest.approx(4 / 1.03, rel=1e-6)


@pytest.mark.slow
def test_fcls_bench_cli_small_run(tmp_path: Path, exported: Path, trained: Path):
    out = tmp_path / "bench.json"
    args = [
        "--model", str(exported), "--checkpoint", str(trained / "model.pt"),
        "--backends", "ort", "--batch-sizes", "1,8", "--seconds", "0.05", "--rows", "200",
        "--workdir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "ceiling: fp32 matmul" in result.output and "notebook (pandas + torch)" in result.output
    report = json.loads(out.read_text())
    assert [(r["backend"], r["batch"]) for r in report["rows"]] == [
        ("torch", 1), ("torch", 8), ("ort", 1), ("ort", 8)
    ]  # fmt: skip
    assert all(r["agreement"] == 1.0 and r["peak_rss_mb"] > 0 for r in report["rows"])
    assert [e["pipeline"] for e in report["e2e"]] == [
        "notebook (pandas + torch)",
        "fcls-infer fp32",
    ]
    assert report["e2e"][1]["agreement"] == 1.0 and report["e2e"][1]["rows"] == 200


def test_wrong_backend_is_caught(monkeypatch, tmp_path: Path, exported: Path, trained: Path):
    from fcls.bench import runner

    real = runner._measure

    def lying(name, *args):
        timings, labels, provider, threads, peak = real(name, *args)
        return timings, (labels + 1) % 10 if name == "ort" else labels, provider, threads, peak

    monkeypatch.setattr(runner, "ProcessPoolExecutor", _Inline)
    monkeypatch.setattr(runner, "_measure", lying)
    config = BenchConfig(
        model=exported, checkpoint=trained / "model.pt", backends=("torch", "ort"),
        batch_sizes=(4,), seconds=0.01, e2e=False, workdir=tmp_path,
    )  # fmt: skip
    with pytest.raises(AssertionError, match=r"ort: top-1 agreement 0\.0000"):
        run_bench(config, log=lambda s: None)


class _Inline:
    """A stand-in for ProcessPoolExecutor that runs in this process (for monkeypatching)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args):
        from concurrent.futures import Future

        f: Future = Future()
        f.set_result(fn(*args))
        return f
