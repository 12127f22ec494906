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
from fcls.infer.common.system import describe_cpu

from ._defaults import BATCH_SIZES, RUNTIME_CHOICES
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
    AGREES_WITH,
    BF16_NAMES,
    FCLS_OPENVINO,
    MIN_AGREEMENT,
    PEERS,
    ROUTE_OF,
    ROUTES,
    Route,
    bf16_missing,
    make_backend,
    openvino_missing,
    runtime_of,
)
from .core import (
    Timing,
    bf16_matmul_ceiling,
    gemm_kernels,
    machine_info,
    matmul_ceiling,
    time_calls,
)
from .e2e import E2E, fcls_pipeline, notebook_pipeline, openvino_script_pipeline, script_pipeline
from .errors import AgreementError, BenchError
from .fastest import fastest_path, format_fastest
from .ingest import PARSERS, Parsed, labels_digest, near_free_model, parse_with, parser_missing
from .rss import peak_rss_mb

Log = Callable[[str], None]

KNOWN = ("torch", "ort", "ort-opt", "ort-int8", "cuda", "cuda-fp16", *FCLS_OPENVINO, *PEERS)
# fcls / OpenVINO pairs: (precision label, fcls backend, OpenVINO backend); the "fcls OV" ones
# put fcls's own OpenVINO runtime beside plain OpenVINO: what fcls's call adds to it
PAIRS = (
    ("fp32", "ort", "ov-f32"),
    ("fp32 vs OV default", "ort", "ov-default"),
    ("int8", "ort-int8", "ov-int8"),
    ("fp32, fcls OV", "fcls-ov", "ov-f32"),
    ("bf16, fcls OV", "fcls-ov-bf16", "ov-bf16"),
    ("int8, fcls OV", "fcls-ov-int8", "ov-int8"),
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
    # which of fcls's runtimes run (their peers and scripts follow them): onnxruntime,
    # openvino or all; the reference is measured whatever it is
    runtime: str = "all"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise BenchError(f"runtime {self.runtime!r}: expected {', '.join(RUNTIME_CHOICES)}")

    @classmethod
    def quick(cls, **kw: Any) -> BenchConfig:
        """Settings that finish in under a minute once the models are built."""
        quick = {"rows": 3_000, "seconds": 0.25, "ingest_rows": (1_000, 3_000), "e2e_rounds": 1}
        return cls(**{**quick, **kw})


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
    backend = make_backend(name, path, threads)
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
    if name in FCLS_OPENVINO or name in PEERS:
        why = openvino_missing()
        if why is None and name in BF16_NAMES:
            why = bf16_missing(models.onnx["ort"], models.bf16_check)
        variant = FCLS_OPENVINO[name].variant if name in FCLS_OPENVINO else PEERS[name]
        return why or f"needs the {variant} variant of the model"
    if name.startswith("cuda"):
        return "needs onnxruntime with CUDA, a GPU (and, for cuda-fp16, a .fp16.onnx sibling)"
    return f"no .{name.removeprefix('ort-')}.onnx sibling of the model"


def runs_under(name: str, runtime: str) -> bool:
    """Whether backend `name` is one `--runtime runtime` runs."""
    return runtime == "all" or runtime_of(name) == runtime


def plan_backends(
    models: Models, wanted: tuple[str, ...] | None, runtime: str = "all"
) -> list[tuple[str, Path]]:
    """(name, path) to measure, the reference first: PyTorch eager when there is a checkpoint,
    else onnxruntime fp32 ('ort'); it is always measured, asked for or not. The others: those
    `wanted` (default all present) of the runtime asked for."""
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
        if not runs_under(name, runtime):
            raise BenchError(
                f"--backends {name}: an {runtime_of(name)} row, not run by --runtime {runtime}"
            )
    names = [
        n
        for n in available
        if n != reference and runs_under(n, runtime) and (not wanted or n in wanted)
    ]
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
    # bad input fails before anything is timed
    plan = plan_backends(models, config.backends, config.runtime)
    info = machine_info()
    ceiling, ceiling_how = matmul_ceiling(seconds=min(1.5, 6 * config.seconds))
    reference = plan[0][0]
    notes = [models.no_torch] if models.no_torch else []
    if config.runtime != "onnxruntime":
        missing = openvino_missing() or bf16_missing(models.onnx["ort"], models.bf16_check)
        notes += [missing] if missing else []
    images = bench_images(config.data, models.recorded, models.spec)
    notes.append(images.note)
    rows = _model_rows(config, plan, images, ceiling, log, models)
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
        "runtime": config.runtime,
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
    report["fastest"] = fastest_path(report, describe_cpu())
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
    ceilings = _training_ceilings(ceiling, config.seconds)
    notes = [images.note]
    if "bf16" not in ceilings:
        notes.append(
            "training: no bf16 rows: this CPU has no AVX512-BF16 or AMX (emulated bf16 is many "
            "times slower than fp32, and fcls-train never chooses it)"
        )
    return {
        "machine": info,
        "ceiling_gflops": ceiling,
        "ceiling_how": ceiling_how,
        "gemm_kernels": gemm_kernels(),
        "architecture": DEFAULT_ARCH,
        "flops_per_image": flops_per_image(DEFAULT_ARCH, DEFAULT_SPEC),
        "notes": notes,
        "seconds_per_point": config.seconds,
        "rows": [],
        "training": measure_training(images.pool, ceilings, rounds=rounds, rows=rows),
        "agreement_failures": [],
        "wall_seconds": time.perf_counter() - t0,
    }


def _training_ceilings(fp32: float, seconds: float) -> dict[str, float]:
    """GFLOP/s per precision the training section measures: fp32 (measured already), and
    bf16 only where the CPU computes it natively (its rows are skipped elsewhere)."""
    from fcls.infer.engine.runtimes import native_bf16

    if not native_bf16():
        return {"fp32": fp32}
    return {"fp32": fp32, "bf16": bf16_matmul_ceiling(seconds=min(1.5, 6 * seconds))}


def _model_rows(
    config: BenchConfig,
    plan: list[tuple[str, Path]],
    images: BenchImages,
    ceiling: float,
    log: Log,
    models: Models,
) -> list[dict[str, Any]]:
    """Every backend x batch size, each backend in its own process; agreement (see
    `_agreement`) on the check rows, when there are any."""
    largest = max(config.batch_sizes)
    timing_set = real_looking_images(largest, seed=1, pool=images.pool, spec=images.spec)
    rows: list[dict[str, Any]] = []
    baseline: dict[int, Timing] = {}
    seen: dict[str, np.ndarray] = {}  # labels of the check set per backend measured

    def measure(name: str, path: Path, batch_sizes: tuple[int, ...]) -> Any:
        args = (config.seconds, config.threads, timing_set, images.check, models.flops_per_image)
        return _isolated(_measure, name, path, batch_sizes, *args)

    for name, path in plan:
        timings, labels, provider, threads, peak = measure(name, path, config.batch_sizes)
        partner = AGREES_WITH.get(name)
        if labels is not None and partner and partner not in seen:
            # its partner is not in this run (--backends, --runtime): its labels alone
            seen[partner] = measure(partner, models.onnx[partner], ())[1]
        checked = _agreement(name, labels, seen, plan[0][0])
        for timing in timings:
            if name == "torch":
                baseline[timing.batch] = timing
            row = timing.row(baseline.get(timing.batch))
            row.update(
                checked,
                pct_ceiling=None if timing.gflops is None else 100 * timing.gflops / ceiling,
                peak_rss_mb=peak,
                provider=provider,
                threads=threads,
            )
            rows.append(row)
            log(f"  {name:12s} batch {timing.batch:5d}: {timing.throughput:9.0f} img/s")
    return rows


def _agreement(
    name: str, labels: np.ndarray | None, seen: dict[str, np.ndarray], reference: str
) -> dict[str, Any]:
    """Backend `name`'s agreement figures: its labels against its AGREES_WITH partner's
    (onnxruntime on the same file) when it has one, else against the reference's (the first
    measured); `seen` gains its labels. All None without a check set."""
    bar = MIN_AGREEMENT.get(name, 1.0)
    against = AGREES_WITH.get(name) or reference
    if labels is None:
        return dict(agreement=None, agreement_with=against, agreement_bar=bar, agreement_ok=None)
    seen.setdefault(name, labels)
    agreement = float((labels == seen[against]).mean())
    return dict(
        agreement=agreement,
        agreement_with=against,
        agreement_bar=bar,
        agreement_ok=agreement >= bar,
    )


def _failures(report: dict[str, Any], reference: str) -> list[str]:
    """One line per backend and per pipeline below its agreement bar."""
    out: list[str] = []
    n = report["agreement_rows"]
    for r in report["rows"]:
        if r["agreement_ok"] is not False:
            continue
        line = (
            f"{r['backend']}: top-1 agreement {r['agreement']:.4f} < {r['agreement_bar']} with "
            f"{r.get('agreement_with') or reference} on {n} images"
        )
        if line not in out:  # one line per backend, not per batch size
            out.append(line)
    for e in report.get("e2e", []):
        if e["agreement_ok"] is False:
            out.append(
                f"{e['pipeline']}: labels agree with "
                f"{e.get('agreement_with') or report['e2e'][0]['pipeline']} on "
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
    """The notebook's pipeline (when there is a checkpoint), then per route (runtime and
    precision, see backends.ROUTES) fcls-infer and the polars script of that runtime, on one
    generated CSV; labels checked (see `_e2e_base`). Ratios: fcls-infer over the script of
    the same route, fcls-infer over the same model alone at its batch size (from this run's
    table), and every run over fcls-infer onnxruntime fp32."""
    src = eval_csv(config.workdir, config.rows, images.pool, images.tag, images.spec)
    out = config.workdir / "out"
    out.mkdir(exist_ok=True)
    log(f"  end to end on {config.rows} rows ({src})")
    plan = _e2e_plan(config, models)
    rounds = _e2e_rounds(config, models, src, out, plan)
    runs = [_median_run(r) for r in rounds]
    by_name = {run.name: run for run in runs}
    route_of = {name: (route, fcls) for name, route, fcls in plan}
    notebook = runs[0] if models.checkpoint is not None else None
    alone = {(r["backend"], r["batch"]): r["throughput"] for r in model_rows}
    ort_fp32 = by_name.get(ROUTES[0].pipeline)
    results: list[dict[str, Any]] = []
    for run, tries in zip(runs, rounds):
        route, fcls = route_of.get(run.name, (None, False))
        base, bar = _e2e_base(route, by_name, runs[0])
        # images not drawn from the model's own data: labels are not compared (see notes)
        agreement = None if images.check is None else float((run.labels == base.labels).mean())
        script = by_name.get(route.script) if fcls and route else None
        model_only = alone.get((route.backend, E2E_BATCH)) if fcls and route else None
        results.append(
            {
                "pipeline": run.name,
                "kind": "notebook" if route is None else "fcls-infer" if fcls else "script",
                "runtime": route.runtime if route else None,
                "precision": route.precision if route else None,
                "rows": run.rows,
                "seconds": run.seconds,
                "rows_per_s": run.rows_per_s,
                "vs_notebook": _ratio(run, notebook),
                "vs_script": _ratio(run, script),
                "vs_model_only": run.rows_per_s / model_only if model_only else None,
                "vs_ort_fp32": _ratio(run, ort_fp32),
                "agreement": agreement,
                "agreement_with": base.name,
                "agreement_bar": bar,
                "agreement_ok": None if agreement is None else agreement >= bar,
                "peak_rss_mb": run.peak_rss_mb,
                "cpu_seconds": run.cpu_seconds,
                "cores_busy": run.cores_busy,
                "round_seconds": [r.seconds for r in tries],
            }
        )
    return results


def _ratio(run: E2E, other: E2E | None) -> float | None:
    return None if other is None else run.rows_per_s / other.rows_per_s


def _e2e_base(route: Route | None, by_name: dict[str, E2E], first: E2E) -> tuple[E2E, float]:
    """What a run's labels are checked against, and the bar: an OpenVINO route's runs against
    fcls-infer onnxruntime on the same file (its partner); the rest, and OpenVINO without its
    partner in the run, against the first run (the notebook when there is one): OpenVINO may
    miss its partner's labels by its bar's share and the partner the first run's by its own,
    so the two shares add up."""
    if route is None:
        return first, 1.0
    bar = MIN_AGREEMENT.get(route.backend, 1.0)
    partner = ROUTE_OF.get(route.partner or "")
    if partner is None:
        return first, bar
    base = by_name.get(partner.pipeline)
    if base is not None:
        return base, bar
    return first, bar - (1.0 - MIN_AGREEMENT.get(partner.backend, 1.0))


def _e2e_plan(config: BenchConfig, models: Models) -> list[tuple[str, Route, bool]]:
    """(pipeline name, route, whether it is fcls-infer, else its script) in the order a round
    runs them: per route that runs here (its model-alone backend is present) and that
    --runtime asks for, fcls-infer then the polars script of its runtime (with polars)."""
    script = parser_missing("polars") is None
    plan: list[tuple[str, Route, bool]] = []
    for route in ROUTES:
        if route.backend not in models.onnx or not runs_under(route.backend, config.runtime):
            continue
        plan.append((route.pipeline, route, True))
        if script:
            plan.append((route.script, route, False))
    return plan


def _e2e_rounds(
    config: BenchConfig,
    models: Models,
    src: Path,
    out: Path,
    plan: list[tuple[str, Route, bool]],
) -> list[list[E2E]]:
    """Every end-to-end pipeline's runs: the notebook's once (it is the slow baseline), then
    `config.e2e_rounds` rounds of the `plan` (fcls-infer and its script alternating per
    route), so a drift in the machine's speed reaches every side alike."""
    runs: dict[str, list[E2E]] = {}
    if models.checkpoint is not None:
        runs["notebook"] = [
            _isolated(notebook_pipeline, src, out / "notebook.csv", models.checkpoint)
        ]
    for _ in range(config.e2e_rounds):
        for name, route, fcls in plan:
            model, dst = models.onnx[route.variant], out / f"{name.replace(' ', '-')}.csv"
            if fcls:
                args: tuple[Any, ...] = (model, config.threads, None, route.runtime, route.hint)
                run = _isolated(fcls_pipeline, name, src, dst, *args)
            elif route.runtime == "openvino":
                run = _isolated(
                    openvino_script_pipeline, name, src, dst, model, route.hint, config.threads
                )
            else:
                run = _isolated(script_pipeline, name, src, dst, model, config.threads)
            runs.setdefault(name, []).append(run)
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
    """`value` in `spec`; '-' where it is None, as wide as the figure would be."""
    if value is None:
        width = spec.split(".")[0]
        return "-".rjust(int(width) if width.isdigit() else 1)
    return format(value, spec)


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
    if report.get("rows"):
        lines += ["", format_fastest(report.get("fastest"))]
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
            " on the check set; fcls-ov rows: with onnxruntime on the same file (ort, ort-int8)",
            "",
            f"{'backend':12s} {'batch':>5s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} "
            f"{'img/s':>9s} {'GFLOP/s':>8s} {'%ceil':>6s} {'x torch':>7s} {'p99/t':>6s} "
            f"{'agree':>6s}  {'peak MB':>7s}  provider",
        ]
    for r in report["rows"]:
        lines.append(
            f"{r['backend']:12s} {r['batch']:5d} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
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
        f"{'precision':20s} {'fcls':12s} {'OpenVINO':11s} {'batch':>5s} {'img/s':>6s} {'p50':>6s}  OpenVINO ran",
    ]
    for q in peers:
        lines.append(
            f"{q['precision']:20s} {q['fcls']:12s} {q['peer']:11s} {q['batch']:5d} "
            f"{q['throughput_ratio']:6.2f} {q['p50_ratio']:6.2f}  {q['peer_provider']}"
        )
    return lines


def _e2e_lines(e2e: list[dict[str, Any]]) -> list[str]:
    """The end-to-end pipelines (CSV in, labels out), with how their medians were taken."""
    lines = [
        "",
        f"{'end to end':28s} {'rows':>7s} {'seconds':>8s} {'CPU s':>7s} {'cores':>5s} "
        f"{'rows/s':>8s} {'x notebook':>10s} {'x script':>8s} {'/model':>6s} "
        f"{'x ort fp32':>10s} {'agree':>6s}  {'peak MB':>7s}",
    ]
    for e in e2e:
        lines.append(
            f"{e['pipeline']:28s} {e['rows']:7d} {e['seconds']:8.2f} "
            f"{e.get('cpu_seconds', 0):7.1f} {e.get('cores_busy', 0):5.2f} {e['rows_per_s']:8.0f} "
            f"{_fmt(e['vs_notebook'], '10.2f')} {_fmt(e.get('vs_script'), '8.2f')} "
            f"{_fmt(e.get('vs_model_only'), '6.2f')} {_fmt(e.get('vs_ort_fp32'), '10.2f')} "
            f"{_agree(e)} "
            f"{e.get('peak_rss_mb', 0):7.0f}{_below(e)}"
        )
    rounds = max(len(e.get("round_seconds", [])) for e in e2e)
    lines.append(
        f"(medians of {rounds} alternating rounds; "
        f"x script: fcls-infer / the polars script of the same runtime and precision; /model: "
        f"fcls-infer / the same model alone at batch {E2E_BATCH}, from the table above; "
        f"x ort fp32: each run / fcls-infer ort fp32; agree: labels against the first run, "
        f"OpenVINO's against fcls-infer ort on the same file; "
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
