"""One benchmark run: every backend x batch size, then end to end.

The driver process plans, checks and reports; each backend and each end-to-end pipeline is
measured in its own freshly spawned process (its peak RSS is its own, no backend warms
another).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fcls.infer.common.spec import DEFAULT_BATCH_SIZE, DEFAULT_SPEC

from ._defaults import BATCH_SIZES
from .artifacts import (
    BenchImages,
    Models,
    bench_images,
    build_models,
    eval_csv,
    flops_per_image,
    models_from,
    real_looking_images,
)
from .backends import (
    INT8_AGREEMENT,
    MIN_AGREEMENT,
    PEERS,
    openvino_missing,
    ort_backend,
    ov_backend,
    torch_backend,
)
from .core import (
    Timing,
    gemm_kernels,
    machine_info,
    matmul_ceiling,
    time_calls,
)
from .e2e import E2E, fcls_pipeline, notebook_pipeline, script_pipeline
from .errors import AgreementError, BenchError
from .ingest import PARSERS, Parsed, labels_digest, near_free_model, parse_with, parser_missing
from .rss import peak_rss_mb

Log = Callable[[str], None]

KNOWN = ("torch", "ort", "ort-opt", "ort-int8", "cuda", "cuda-fp16", *PEERS)
# fcls / OpenVINO pairs: (precision label, fcls backend, OpenVINO backend)
PAIRS = (
    ("fp32", "ort", "ov-f32"),
    ("fp32 vs OV default", "ort", "ov-default"),
    ("int8", "ort-int8", "ov-int8"),
)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and for how long."""

    workdir: Path = Path(".fcls-bench")
    model: Path | None = None
    checkpoint: Path | None = None
    backends: tuple[str, ...] | None = None  # None: the reference and every variant present
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    rows: int = 50_000
    seconds: float = 2.0  # timed per backend and batch size, after warm-up
    threads: int | None = None
    e2e: bool = True
    # alternating rounds of fcls-infer and the script per precision (medians are reported)
    e2e_rounds: int = 3
    # images for the checks and the e2e file; None: the model's recorded training data
    data: Path | None = None
    # ingest section: parsers on the larger file, the ceiling on both (peak RSS growth); () skips
    ingest_rows: tuple[int, ...] = (20_000, 200_000)

    @classmethod
    def quick(cls, **kw: Any) -> BenchConfig:
        """Settings that finish in under a minute once the models are built."""
        quick = {"rows": 3_000, "seconds": 0.25, "ingest_rows": (1_000, 3_000), "e2e_rounds": 1}
        return cls(**{**quick, **kw})


def _backend(name: str, path: Path, threads: int | None) -> Any:
    if name == "torch":
        return torch_backend(path)
    if name in PEERS:
        return ov_backend(name, path, threads)
    return ort_backend(name, path, threads)


def _measure(
    name: str,
    path: Path,
    batch_sizes: tuple[int, ...],
    seconds: float,
    threads: int | None,
    timing_set: np.ndarray,  # (M, P) uint8, M >= the largest batch
    check_set: np.ndarray | None,  # (C, P) uint8 rows agreement is measured on, or None
    flops: float | None,  # per image
) -> tuple[list[Timing], np.ndarray | None, str, int, float]:
    """In a fresh process: timings per batch size, labels of the check set (None without one),
    provider, threads, peak RSS."""
    backend = _backend(name, path, threads)
    labels = None if check_set is None else backend.predict(check_set)
    timings = []
    for batch in batch_sizes:
        x = backend.prepare(timing_set[:batch])
        timings.append(Timing(name, batch, time_calls(partial(backend.run, x), seconds), flops))
    return timings, labels, backend.provider, backend.threads, peak_rss_mb()


def _unavailable(name: str, models: Models) -> str:
    """Why backend `name` is not in this run (one line)."""
    if name not in KNOWN:
        return f"unknown backend (known: {', '.join(KNOWN)})"
    if name == "torch":
        return models.no_torch or "no checkpoint"
    if name in PEERS:
        return openvino_missing() or f"needs the {PEERS[name]} variant of the model"
    if name.startswith("cuda"):
        return "needs onnxruntime with CUDA, a GPU (and, for cuda-fp16, a .fp16.onnx sibling)"
    return f"no .{name.removeprefix('ort-')}.onnx sibling of the model"


def plan_backends(models: Models, wanted: tuple[str, ...] | None) -> list[tuple[str, Path]]:
    """(name, path) to measure, the reference first: PyTorch eager when there is a checkpoint,
    else onnxruntime fp32 ('ort'); it is always measured, asked for or not."""
    available: dict[str, Path] = {}
    if models.checkpoint is not None:
        available["torch"] = models.checkpoint
    available.update(models.onnx)
    reference = "torch" if models.checkpoint is not None else "ort"
    if reference not in available:
        raise BenchError(f"no reference backend: {_unavailable(reference, models)}")
    for name in wanted or ():
        if name not in available:
            raise BenchError(f"--backends {name}: {_unavailable(name, models)}")
    names = [n for n in available if n != reference and (not wanted or n in wanted)]
    return [(reference, available[reference])] + [(n, available[n]) for n in names]


def peer_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fcls / OpenVINO per precision and batch size: img/s ratio (>1: fcls faster) and
    p50 latency ratio OpenVINO / fcls (>1: fcls answers sooner), from rows of one run."""
    by = {(r["backend"], r["batch"]): r for r in rows}
    out = []
    for precision, ours, peer in PAIRS:
        for (name, batch), r in by.items():
            if name != peer or (ours, batch) not in by:
                continue
            mine = by[(ours, batch)]
            out.append(
                {
                    "precision": precision,
                    "fcls": ours,
                    "peer": peer,
                    "peer_provider": r["provider"],
                    "batch": batch,
                    "throughput_ratio": mine["throughput"] / r["throughput"],
                    "p50_ratio": r["p50_ms"] / mine["p50_ms"],
                }
            )
    return out


def run_bench(config: BenchConfig, log: Log = print) -> dict[str, Any]:
    """Measure; return a JSON-ready report (see `format_report`).

    A backend or pipeline whose labels miss its agreement bar is marked in its row
    (`agreement_ok` false) and listed in `agreement_failures`; the report is still whole.
    `check_agreement(report)` raises AgreementError for them (fcls-bench does, after printing).
    """
    t0 = time.perf_counter()
    models = (
        models_from(config.model, config.checkpoint)
        if config.model
        else build_models(config.workdir, log)
    )
    plan = plan_backends(models, config.backends)  # bad input fails before anything is timed
    info = machine_info()
    ceiling, ceiling_how = matmul_ceiling(seconds=min(1.5, 6 * config.seconds))
    reference = plan[0][0]
    notes = [models.no_torch] if models.no_torch else []
    missing = openvino_missing()
    if missing:
        notes.append(missing)
    images = bench_images(config.data, models.recorded, models.spec)
    notes.append(images.note)
    rows = _model_rows(config, plan, images, ceiling, log, models.flops_per_image)
    report: dict[str, Any] = {
        "machine": info,
        "ceiling_gflops": ceiling,
        "ceiling_how": ceiling_how,
        "gemm_kernels": gemm_kernels(),
        "architecture": models.architecture,
        "flops_per_image": models.flops_per_image,
        "models": {k: str(v) for k, v in models.onnx.items()},
        "checkpoint": None if models.checkpoint is None else str(models.checkpoint),
        "reference": reference,
        "agreement_rows": None if images.check is None else len(images.check),
        "notes": notes,
        "seconds_per_point": config.seconds,
        "rows": rows,
        "peers": peer_ratios(rows),
    }
    if config.e2e:
        report["e2e"] = _end_to_end(config, models, images, log, rows)
    if config.ingest_rows:
        report["ingest"] = _ingest(config, images, log)
    report["agreement_failures"] = _failures(report, reference)
    report["wall_seconds"] = time.perf_counter() - t0
    return report


def run_train_bench(config: BenchConfig, log: Log = print) -> dict[str, Any]:
    """fcls-bench --train: the machine, its ceiling and the training section, nothing else."""
    from fcls.train.registry import DEFAULT_ARCH

    from .training import measure_training

    t0 = time.perf_counter()
    info = machine_info()
    ceiling, ceiling_how = matmul_ceiling(seconds=min(1.5, 6 * config.seconds))
    images = bench_images(config.data, None)
    log(f"training: {images.note}")
    quick = config.seconds < 1  # --quick, or --seconds under 1: one short round
    rounds, rows = (1, 512) if quick else (3, 2560)
    return {
        "machine": info,
        "ceiling_gflops": ceiling,
        "ceiling_how": ceiling_how,
        "gemm_kernels": gemm_kernels(),
        "architecture": DEFAULT_ARCH,
        "flops_per_image": flops_per_image(DEFAULT_ARCH, DEFAULT_SPEC),
        "notes": [images.note],
        "seconds_per_point": config.seconds,
        "rows": [],
        "training": measure_training(images.pool, ceiling, rounds=rounds, rows=rows),
        "agreement_failures": [],
        "wall_seconds": time.perf_counter() - t0,
    }


def _model_rows(
    config: BenchConfig,
    plan: list[tuple[str, Path]],
    images: BenchImages,
    ceiling: float,
    log: Log,
    flops: float | None,
) -> list[dict[str, Any]]:
    """Every backend x batch size, each backend in its own process; agreement with the first
    (the reference) on the check rows, when there are any."""
    largest = max(config.batch_sizes)
    timing_set = real_looking_images(largest, seed=1, pool=images.pool, spec=images.spec)
    rows: list[dict[str, Any]] = []
    baseline: dict[int, Timing] = {}
    expected: np.ndarray | None = None
    for name, path in plan:
        measured = _isolated(
            _measure,
            name,
            path,
            config.batch_sizes,
            config.seconds,
            config.threads,
            timing_set,
            images.check,
            flops,
        )
        timings, labels, provider, threads, peak = measured
        agreement = None
        if labels is not None:
            expected = labels if expected is None else expected
            agreement = float((labels == expected).mean())
        bar = MIN_AGREEMENT.get(name, 1.0)
        for timing in timings:
            if name == "torch":
                baseline[timing.batch] = timing
            row = timing.row(baseline.get(timing.batch))
            row.update(
                agreement=agreement,
                agreement_bar=bar,
                agreement_ok=None if agreement is None else agreement >= bar,
                pct_ceiling=None if timing.gflops is None else 100 * timing.gflops / ceiling,
                peak_rss_mb=peak,
                provider=provider,
                threads=threads,
            )
            rows.append(row)
            log(f"  {name:10s} batch {timing.batch:5d}: {timing.throughput:9.0f} img/s")
    return rows


def _failures(report: dict[str, Any], reference: str) -> list[str]:
    """One line per backend and per pipeline below its agreement bar."""
    out: list[str] = []
    n = report["agreement_rows"]
    for r in report["rows"]:
        if r["agreement_ok"] is not False:
            continue
        line = (
            f"{r['backend']}: top-1 agreement {r['agreement']:.4f} < {r['agreement_bar']} with "
            f"{reference} on {n} images"
        )
        if line not in out:  # one line per backend, not per batch size
            out.append(line)
    for e in report.get("e2e", []):
        if e["agreement_ok"] is False:
            out.append(
                f"{e['pipeline']}: labels agree with {report['e2e'][0]['pipeline']} on "
                f"{e['agreement']:.4f} < {e['agreement_bar']} of {e['rows']} rows"
            )
    return out


def check_agreement(report: dict[str, Any]) -> None:
    """Raise AgreementError naming every backend and pipeline below its agreement bar."""
    failures = report.get("agreement_failures") or []
    if failures:
        raise AgreementError(
            f"{len(failures)} below the agreement bar (marked in the report): "
            + " | ".join(failures)
        )


def _isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a fresh spawned process: no backend warms, or steals from, another."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as workers:
        return workers.submit(fn, *args).result()


E2E_BATCH = DEFAULT_BATCH_SIZE  # fcls-infer's: the model-only row it is compared with


def _end_to_end(
    config: BenchConfig,
    models: Models,
    images: BenchImages,
    log: Log,
    model_rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The notebook's pipeline (when there is a checkpoint), fcls-infer and the polars +
    onnxruntime script, fp32 and int8, on one generated CSV; labels checked against the first
    run. Ratios: fcls over the script of the same precision, and end to end over the same
    model alone at fcls-infer's batch size (from this run's table)."""
    src = eval_csv(config.workdir, config.rows, images.pool, images.tag, images.spec)
    out = config.workdir / "out"
    out.mkdir(exist_ok=True)
    log(f"  end to end on {config.rows} rows ({src})")
    rounds = _e2e_rounds(config, models, src, out)
    runs = [_median_run(r) for r in rounds]
    base = runs[0]
    notebook = models.checkpoint is not None
    alone = {(r["backend"], r["batch"]): r["throughput"] for r in model_rows}
    speed = {run.name: run.rows_per_s for run in runs}
    results: list[dict[str, Any]] = []
    for run, tries in zip(runs, rounds):
        # images not drawn from the model's own data: labels are not compared (see notes)
        agreement = None if images.check is None else float((run.labels == base.labels).mean())
        bar = INT8_AGREEMENT if "int8" in run.name else 1.0
        precision = run.name.rsplit(" ", 1)[-1]
        fcls = run.name.startswith("fcls-infer")
        model_only = alone.get(("ort-int8" if precision == "int8" else "ort", E2E_BATCH))
        script_speed = speed.get(f"polars+ort script {precision}")
        results.append(
            {
                "pipeline": run.name,
                "rows": run.rows,
                "seconds": run.seconds,
                "rows_per_s": run.rows_per_s,
                "vs_notebook": run.rows_per_s / base.rows_per_s if notebook else None,
                "vs_script": run.rows_per_s / script_speed if fcls and script_speed else None,
                "vs_model_only": run.rows_per_s / model_only if fcls and model_only else None,
                "agreement": agreement,
                "agreement_bar": bar,
                "agreement_ok": None if agreement is None else agreement >= bar,
                "peak_rss_mb": run.peak_rss_mb,
                "cpu_seconds": run.cpu_seconds,
                "cores_busy": run.cores_busy,
                "round_seconds": [r.seconds for r in tries],
            }
        )
    return results


def _e2e_rounds(config: BenchConfig, models: Models, src: Path, out: Path) -> list[list[E2E]]:
    """Every end-to-end pipeline's runs: the notebook's once (it is the slow baseline), then
    `config.e2e_rounds` rounds of fcls-infer and the script alternating per precision, so a
    drift in the machine's speed reaches both sides alike."""
    runs: dict[str, list[E2E]] = {}
    if models.checkpoint is not None:
        runs["notebook"] = [
            _isolated(notebook_pipeline, src, out / "notebook.csv", models.checkpoint)
        ]
    script = parser_missing("polars") is None
    for _ in range(config.e2e_rounds):
        for precision, variant in (("fp32", "ort"), ("int8", "ort-int8")):
            if variant not in models.onnx:
                continue
            model, name = models.onnx[variant], f"fcls-infer {precision}"
            dst = out / f"{variant}.csv"
            runs.setdefault(name, []).append(
                _isolated(fcls_pipeline, name, src, dst, model, config.threads)
            )
            if script:
                name, dst = f"polars+ort script {precision}", out / f"script-{variant}.csv"
                runs.setdefault(name, []).append(
                    _isolated(script_pipeline, name, src, dst, model, config.threads)
                )
    return list(runs.values())


def _median_run(runs: list[E2E]) -> E2E:
    """The run of median wall time (the lower middle of an even count)."""
    return sorted(runs, key=lambda r: r.seconds)[(len(runs) - 1) // 2]


def _ingest(config: BenchConfig, images: BenchImages, log: Log) -> dict[str, Any]:
    """Parsers side by side on the largest file (pixels checked against fcls's), then
    fcls-infer with a near-free model on every size: the ingest ceiling and its peak RSS."""
    sizes = sorted(config.ingest_rows)
    files = {n: eval_csv(config.workdir, n, images.pool, images.tag, images.spec) for n in sizes}
    big = files[sizes[-1]]
    log(f"  ingest: parsers on {sizes[-1]} rows ({big})")
    parsed, notes = _parse_side_by_side(big, log)
    reference = parsed[0]  # fcls
    ceiling = _ingest_ceiling(config, images, files, reference, log)
    default = [c for c in ceiling if c["parse_threads"] == 1]
    polars = [p.rows_per_s for p in parsed if p.parser.startswith("polars")]
    return {
        "file": str(big),
        "rows": sizes[-1],
        "parse": [
            {
                "parser": p.parser,
                "rows": p.rows,
                "seconds": p.seconds,
                "rows_per_s": p.rows_per_s,
                "vs_fcls": p.rows_per_s / reference.rows_per_s,
                "peak_rss_mb": p.peak_rss_mb,
            }
            for p in parsed
        ],
        "ceiling": ceiling,
        "ceiling_vs_best_polars": default[-1]["rows_per_s"] / max(polars) if polars else None,
        "ceiling_2_threads_vs_best_polars": (
            ceiling[-1]["rows_per_s"] / max(polars) if polars else None
        ),
        "rss_growth": default[-1]["peak_rss_mb"] / default[0]["peak_rss_mb"],
        "notes": notes,
    }


def _parse_side_by_side(big: Path, log: Log) -> tuple[list[Parsed], list[str]]:
    """Each installed parser on `big` (fcls's first), their pixels checked against fcls's;
    returns the parse runs and a note per parser that is not installed."""
    notes: list[str] = []
    parsed: list[Parsed] = []
    for parser in PARSERS:
        missing = parser_missing(parser)
        if missing:
            notes.append(missing)
            continue
        parsed.append(_isolated(parse_with, parser, big))
        log(f"    {parser:13s} {parsed[-1].rows_per_s:9.0f} rows/s")
    reference = parsed[0]  # fcls
    for p in parsed[1:]:
        if (p.rows, p.digest) != (reference.rows, reference.digest):
            raise AgreementError(f"{p.parser}: pixels of {big} differ from the fcls reader's")
    return parsed, notes


def _ingest_ceiling(
    config: BenchConfig,
    images: BenchImages,
    files: dict[int, Path],
    reference: Parsed,
    log: Log,
) -> list[dict[str, Any]]:
    """fcls-infer with a near-free model, so parsing is nearly all it does: one row of figures
    per run. `reference` is fcls's parse of the largest file, whose labels it checks."""
    largest = max(files)
    big = files[largest]
    model = near_free_model(
        config.workdir / f"near_free_{images.spec.n_pixels}.onnx", images.spec.n_pixels
    )
    out = config.workdir / "out"
    out.mkdir(exist_ok=True)
    ceiling = []
    # the CPU default (1 parse thread) on every size, then the CUDA default (2) on the largest
    runs = [(n, src, None) for n, src in files.items()] + [(largest, big, 2)]
    for n, src, parse_threads in runs:
        expected = reference if src == big else _isolated(parse_with, "fcls", src)
        dst = out / "near_free.csv"
        run = _isolated(fcls_pipeline, "near-free", src, dst, model, config.threads, parse_threads)
        if labels_digest(run.labels) != expected.near_free_digest:
            raise AgreementError(f"fcls-infer near-free model: wrong labels on {src}")
        ceiling.append(
            {
                "rows": n,
                "parse_threads": parse_threads or 1,
                "seconds": run.seconds,
                "rows_per_s": run.rows_per_s,
                "peak_rss_mb": run.peak_rss_mb,
            }
        )
        log(
            f"    fcls-infer near-free model, {n} rows, {parse_threads or 1} parse thread(s): "
            f"{run.rows_per_s:9.0f} rows/s"
        )
    return ceiling


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _network(report: dict[str, Any]) -> str:
    """`FinalCNNet 65.6 MFLOP/image`, from what the report recorded of the model."""
    flops = report.get("flops_per_image")
    size = "FLOP/image unknown" if flops is None else f"{flops / 1e6:.1f} MFLOP/image"
    return f"{report.get('architecture') or 'network'} {size}"


def _agree(row: dict[str, Any]) -> str:
    """The agree column: the figure, '-' when not measured, '!' when below its bar."""
    mark = "!" if row.get("agreement_ok") is False else " "
    return f"{_fmt(row.get('agreement'), '6.3f'):>6s}{mark}"


def _below(row: dict[str, Any]) -> str:
    if row.get("agreement_ok") is not False:
        return ""
    return f"  <- BELOW the agreement bar {row['agreement_bar']}"


def format_gemm(kernels: dict[str, Any]) -> str:
    """One line: which fp32 GEMM kernels numpy's BLAS and torch run here (they set the ceiling)."""
    blas = kernels.get("numpy_blas")
    if blas:
        numpy_part = (
            f"numpy BLAS {blas['internal_api']} {blas['version']} "
            f"({blas['architecture'] or 'unknown'} kernels, {blas['num_threads']} threads)"
        )
    else:
        numpy_part = f"numpy BLAS {kernels.get('numpy_blas_unknown', 'unknown')}"
    coretype = kernels.get("openblas_coretype")
    return (
        f"gemm kernels: {numpy_part}, OPENBLAS_CORETYPE="
        f"{coretype if coretype is not None else 'unset'} | torch CPU capability "
        f"{kernels.get('torch_cpu_capability') or 'unknown'}"
    )


def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables of a report."""
    lines = _header_lines(report)
    lines += _row_lines(report)
    if report.get("peers"):
        lines += _peer_lines(report["peers"])
    if "e2e" in report:
        lines += _e2e_lines(report["e2e"])
    if "ingest" in report:
        lines += _ingest_lines(report["ingest"])
    if "training" in report:
        from .training import format_training

        lines += format_training(report["training"])
    failures = report.get("agreement_failures") or []
    if failures:
        lines += ["", f"FAILED: {len(failures)} below the agreement bar:", *failures]
    lines.append(f"\n(wall {report['wall_seconds']:.0f}s)")
    return "\n".join(lines)


def _header_lines(report: dict[str, Any]) -> list[str]:
    """The machine, the versions, the fp32 ceiling, the GEMM kernels and the run's notes."""
    m = report["machine"]
    v = m["versions"]
    peers = f", openvino {v['openvino']}" if v.get("openvino") else ""
    return [
        f"fcls-bench | CPU {m['cpu']} ({' '.join(m.get('cpu_features') or ['no AVX2'])}) | "
        f"{m['cpus_available']} CPUs available ({m['cpus_host']} on host) | "
        f"GPU {m['gpu'] or 'none'}",
        f"python {v['python']}, torch {v['torch']} ({m['torch_threads']} threads), onnxruntime "
        f"{v['onnxruntime']}, numpy {v['numpy']}, pyarrow {v['pyarrow']}{peers}",
        f"ceiling: fp32 matmul {report['ceiling_gflops']:.1f} GFLOP/s (best: {report['ceiling_how']}) | "
        f"{_network(report)} | {report['seconds_per_point']} s per point",
        format_gemm(report.get("gemm_kernels", {})),
        *report.get("notes", []),
    ]


def _row_lines(report: dict[str, Any]) -> list[str]:
    """The table of backends by batch size (nothing when no backend was measured)."""
    reference = report.get("reference", "torch")
    lines = []
    if report["rows"]:
        lines += [
            f"agree: top-1 agreement with "
            f"{'PyTorch eager' if reference == 'torch' else reference + ' (onnxruntime fp32)'}"
            " on the check set",
            "",
            f"{'backend':10s} {'batch':>5s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} "
            f"{'img/s':>9s} {'GFLOP/s':>8s} {'%ceil':>6s} {'x torch':>7s} {'p99/t':>6s} "
            f"{'agree':>6s}  {'peak MB':>7s}  provider",
        ]
    for r in report["rows"]:
        lines.append(
            f"{r['backend']:10s} {r['batch']:5d} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['throughput']:9.0f} {_fmt(r['gflops'], '8.1f')} {_fmt(r['pct_ceiling'], '6.1f')} {_fmt(r['vs_torch'], '7.2f')} "
            f"{_fmt(r['p99_vs_torch'], '6.2f')} {_agree(r)} {r['peak_rss_mb']:7.0f}  "
            f"{r['provider']} x{r['threads']}{_below(r)}"
        )
    return lines


def _peer_lines(peers: list[dict[str, Any]]) -> list[str]:
    """fcls against OpenVINO at the same precision and batch, from the same run."""
    lines = [
        "",
        "fcls / OpenVINO, same run (img/s ratio: >1 means fcls faster; p50: OpenVINO p50 / fcls p50)",
        f"{'precision':20s} {'fcls':9s} {'OpenVINO':11s} {'batch':>5s} {'img/s':>6s} {'p50':>6s}  OpenVINO ran",
    ]
    for q in peers:
        lines.append(
            f"{q['precision']:20s} {q['fcls']:9s} {q['peer']:11s} {q['batch']:5d} "
            f"{q['throughput_ratio']:6.2f} {q['p50_ratio']:6.2f}  {q['peer_provider']}"
        )
    return lines


def _e2e_lines(e2e: list[dict[str, Any]]) -> list[str]:
    """The end-to-end pipelines (CSV in, labels out), with how their medians were taken."""
    lines = [
        "",
        f"{'end to end':28s} {'rows':>7s} {'seconds':>8s} {'CPU s':>7s} {'cores':>5s} "
        f"{'rows/s':>8s} {'x notebook':>10s} {'x script':>8s} {'/model':>6s} {'agree':>6s}  "
        f"{'peak MB':>7s}",
    ]
    for e in e2e:
        lines.append(
            f"{e['pipeline']:28s} {e['rows']:7d} {e['seconds']:8.2f} "
            f"{e.get('cpu_seconds', 0):7.1f} {e.get('cores_busy', 0):5.2f} {e['rows_per_s']:8.0f} "
            f"{_fmt(e['vs_notebook'], '10.2f')} {_fmt(e.get('vs_script'), '8.2f')} "
            f"{_fmt(e.get('vs_model_only'), '6.2f')} {_agree(e)} "
            f"{e.get('peak_rss_mb', 0):7.0f}{_below(e)}"
        )
    rounds = max(len(e.get("round_seconds", [])) for e in e2e)
    lines.append(
        f"(medians of {rounds} alternating rounds; "
        f"x script: fcls-infer / the polars + onnxruntime script, same precision; /model: "
        f"end to end / the same model alone at batch {E2E_BATCH}, from the table above; "
        f"cores: CPU seconds / wall seconds, the cores the run kept busy)"
    )
    return lines


def _ingest_lines(g: dict[str, Any]) -> list[str]:
    """The parsers side by side, then fcls-infer's ingest ceiling and its RSS growth."""
    lines = [
        "",
        f"ingest: parse to a (n, P) uint8 matrix, {g['rows']} rows ({g['file']})",
        f"{'parser':28s} {'rows/s':>9s} {'x fcls':>7s} {'peak MB':>7s}",
    ]
    for p in g["parse"]:
        lines.append(
            f"{p['parser']:28s} {p['rows_per_s']:9.0f} {p['vs_fcls']:7.2f} {p['peak_rss_mb']:7.0f}"
        )
    for c in g["ceiling"]:
        lines.append(
            f"{'fcls-infer, near-free model':28s} {c['rows_per_s']:9.0f} {'':7s} "
            f"{c['peak_rss_mb']:7.0f}  ({c['rows']} rows end to end, "
            f"{c['parse_threads']} parse thread{'s' if c['parse_threads'] > 1 else ''})"
        )
    lines.append(
        f"ceiling / best polars: {_fmt(g['ceiling_vs_best_polars'], '.2f')} (1 parse thread, "
        f"the CPU default), {_fmt(g['ceiling_2_threads_vs_best_polars'], '.2f')} (2, the "
        f"CUDA default) | fcls-infer peak RSS {g['ceiling'][1]['rows']} / "
        f"{g['ceiling'][0]['rows']} rows: {g['rss_growth']:.2f}x"
    )
    lines += g["notes"]
    return lines


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report for tracking."""
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


__all__ = [
    "BenchConfig",
    "check_agreement",
    "format_report",
    "run_bench",
    "run_train_bench",
    "write_json",
]
