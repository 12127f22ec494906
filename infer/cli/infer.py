"""`fcls-infer`: score CSV files of ID,pix1..pixN rows into results.csv (ID,label)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from ..common.errors import ConfigError, OutputError
from ..common.extras import require
from .kit import CONTEXT, PIPE, Run, scoring_options, standard, version_line


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-m",
    "--model",
    "model",
    type=click.Path(path_type=Path),
    default=None,
    help="ONNX model written by fcls-export. Default: model.onnx, else artifacts/model.onnx.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=None,
    help="Output: a file [results.csv]; DIR/ or an existing directory for "
    "DIR/<stem>.results.csv per input; '-' for stdout (one input).",
)
@scoring_options("onnxruntime threads. Default: the CPUs this process may use.")
@click.option(
    "--parse-threads",
    type=click.IntRange(min=1),
    default=None,
    help="CSV blocks parsed (or batches of a folder's images decoded) at once. "
    "Default: 1 on CPU (the model holds the cores), 2 on CUDA.",
)
@click.option(
    "--proba",
    is_flag=True,
    help="Add one probability column per class, calibrated by the model's temperature.",
)
@click.option(
    "--proba-raw",
    is_flag=True,
    help="With --proba: plain softmax probabilities, not calibrated.",
)
@click.option("--class-names", is_flag=True, help="Write class names instead of indices.")
@click.option(
    "--drift/--no-drift",
    default=None,
    help="Compare the rows with the model's reference profile: a one-line verdict (ok, "
    "drift, out-of-distribution) and a JSON report. Default: on when the model has a profile.",
)
@click.option(
    "--drift-report",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the drift report goes. Default: <output stem>.drift.json beside one output, "
    "DIR/drift.json for several, none with -o -.",
)
@click.option(
    "--flag-ood",
    is_flag=True,
    help="Add an ood column: 1 where the row looks unlike the model's reference rows.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a killed run of the same command after its last checkpoint (not for stdin).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: one pipelined process; ray: Ray Data over many files and workers.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster (auto, ray://host:port). Default: a private local one.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ray actors."
)
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True)
@standard("fcls-infer")
def main(
    inputs: tuple[str, ...],
    model: Path | None,
    output: str | None,
    drift_report: Path | None,
    resume: bool,
    engine: str,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    run: Run,
    **scoring: Any,
) -> None:
    """Label every row of each INPUT ('-' for stdin; .gz, directories, globs, image folders)."""
    # `scoring`: the options named as ScoringOptions' fields (--provider, --batch-size,
    # --threads, --runtime, --precision, --parse-threads, --proba, ..., --flag-ood)
    from ..engine.options import ScoringOptions
    from ..formats.paths import drift_report_path

    run.interrupt_note = "no output written" + (
        "; --resume continues from the last checkpoint" if resume else ""
    )
    proba, drift = scoring["proba"], scoring["drift"]
    _check_flags(
        proba, scoring["proba_raw"], drift, drift_report, engine, resume, scoring["parse_threads"]
    )
    model_path, sources, dests, to_stdout = _resolve_files(run, inputs, model, output, resume)
    model_sha = _model_sha(run, model_path)
    run.detail(version_line("fcls-infer"))
    options = ScoringOptions(**scoring, progress=run.progress, durable=not to_stdout)
    report = None if drift is False else drift_report or drift_report_path(dests, to_stdout)
    plan = _Plan(
        sources,
        dests,
        model_path,
        options,
        engine,
        resume,
        report,
        address,
        workers,
        gpus_per_worker,
    )
    _score_and_report(plan, run, model_sha, output, options.provider)


def _score_and_report(
    plan: _Plan, run: Run, model_sha: str | None, output: str | None, provider: str
) -> None:
    """Score the plan, print its summary, and with --provider auto say what was chosen: with
    -v, or when CUDA looks half-installed (`cuda_half_installed`)."""
    summaries, seconds = _score(plan, run)
    used = _report(run, plan.sources, summaries, seconds, plan.model, model_sha, output, provider)
    if summaries and run.verbose:
        from ..engine.runtimes import fastest_note

        run.detail(f"the model ran on {summaries[0].runtime}")
        run.detail(fastest_note(plan.model, plan.options.runtime, plan.options.precision))
    if provider == "auto" and summaries:
        from ..engine.session import auto_choice, cuda_half_installed

        chosen = used.split()[0]  # the Ray engine's label is "<provider> (ray xN)"
        say = run.log if chosen == "cpu" and cuda_half_installed() else run.detail
        say(auto_choice(chosen))


@dataclass(frozen=True)
class _Plan:
    """What one fcls-infer run scores, where it writes, and on which engine."""

    sources: list[Any]
    dests: list[Path]
    model: Path
    options: Any  # ScoringOptions (imported lazily: --help stays light)
    engine: str
    resume: bool
    drift_report: Path | None
    address: str | None  # --engine ray: the cluster, its workers and their GPUs
    workers: int
    gpus_per_worker: float


def _score(plan: _Plan, run: Run) -> tuple[list[Any], float]:
    """Run the engine; with -o - (`run.stdout_taken`) into a temp file that is streamed to
    stdout once the whole run succeeded. Returns the summaries and the seconds it took."""
    t0 = time.perf_counter()
    # -o -: the run writes a temp file, streamed to stdout only once the whole run succeeded
    scratch = tempfile.TemporaryDirectory(prefix="fcls-infer-") if run.stdout_taken else None
    with scratch or contextlib.nullcontext():
        if scratch is not None:
            plan = replace(plan, dests=[Path(scratch.name) / "results.csv"])
        summaries = _predict(plan, run)
        seconds = time.perf_counter() - t0
        if scratch is not None:
            _stream_to_stdout(plan.dests[0])
            summaries = [replace(s, output="<stdout>") for s in summaries]
    return summaries, seconds


def _check_flags(
    proba: bool,
    proba_raw: bool,
    drift: bool | None,
    drift_report: Path | None,
    engine: str,
    resume: bool,
    parse_threads: int | None,
) -> None:
    """Refuse options that contradict each other, before any file is looked at."""
    if proba_raw and not proba:
        raise ConfigError("--proba-raw changes the --proba columns: give --proba too")
    if drift is False and drift_report is not None:
        raise ConfigError("--drift-report with --no-drift: there is no report to write")
    if engine == "ray":
        _check_ray_options(resume, parse_threads)


def _resolve_files(
    run: Run, inputs: tuple[str, ...], model: Path | None, output: str | None, resume: bool
) -> tuple[Path, list[Any], list[Path], bool]:
    """The model, the sources to score, their destinations, and whether results take stdout."""
    from ..common.modelfile import find_onnx
    from ..formats.paths import STDIN, STDOUT, check_stdin, expand_inputs, output_paths

    check_stdin(list(inputs))
    model_path = find_onnx(model)  # before -o creates any directory
    stdin = inputs == (STDIN,)
    paths = [Path(STDIN)] if stdin else expand_inputs(list(inputs))
    dests = output_paths(paths, output)
    to_stdout = dests == [Path(STDOUT)] and output == STDOUT
    if to_stdout:
        _check_stdout(run, resume)
    sources: list[Any] = [STDIN] if stdin else paths
    return model_path, sources, dests, to_stdout


def _check_ray_options(resume: bool, parse_threads: int | None) -> None:
    if resume:
        raise ConfigError("--resume works with --engine local only")
    if parse_threads is not None:
        raise ConfigError("--parse-threads works with --engine local only")
    require("fcls-infer --engine ray", "ray")  # a missing extra first: nothing else helps


def _check_stdout(run: Run, resume: bool) -> None:
    """-o -: the results take stdout."""
    if resume:
        raise ConfigError("--resume needs an output file, not -o - (stdout)")
    if run.json_stdout:
        raise ConfigError("-o - writes the results to stdout: use --summary-json FILE, not --json")
    run.stdout_taken = True


def _model_sha(run: Run, model_path: Path) -> str | None:
    """The model's sha256 when a summary or -v reports it (hashing costs a read)."""
    if not (run.verbose or run.json_stdout or run.summary_path is not None):
        return None
    from ..common.system import file_sha256

    model_sha = file_sha256(model_path)
    run.detail(f"model {model_path} sha256 {model_sha}")
    return model_sha


def _report(
    run: Run,
    sources: list[Any],
    summaries: list[Any],
    seconds: float,
    model_path: Path,
    model_sha: str | None,
    output: str | None,
    provider: str,
) -> str:
    """Print the run's summary (line or JSON); returns the provider label used."""
    rows = sum(s.rows for s in summaries)
    fresh = rows - sum(s.resumed for s in summaries)
    used: str = summaries[0].provider if summaries else provider
    run.summary(
        {
            "rows": rows,
            "seconds": round(seconds, 4),
            "rows_per_s": round(fresh / seconds, 1) if seconds > 0 else None,
            "provider": used,
            "runtime": summaries[0].runtime if summaries else None,
            "model": str(model_path),
            "model_sha256": model_sha,
            "output": summaries[0].output if len(summaries) == 1 else str(output),
            "files": [
                {
                    "input": str(p),
                    "output": s.output,
                    "rows": s.rows,
                    "resumed": s.resumed,
                    "drift": s.drift["verdict"] if s.drift else None,
                    "seconds": round(s.seconds, 4),
                    "rows_per_s": round(s.rows_per_s, 1),
                }
                for p, s in zip(sources, summaries)
            ],
        },
        "\n".join(s.line() for s in summaries),
        err=True,
    )
    return used


def _predict(plan: _Plan, run: Run) -> list[Any]:
    """Run one engine over the inputs; returns its per-file Summary list."""
    if plan.engine == "ray":
        from ..engine.ray import predict_csv_ray

        # one input: the destination file itself; several: their common directory + '/'
        dests = plan.dests
        out = str(dests[0]) if len(dests) == 1 else f"{dests[0].parent}/"
        return predict_csv_ray(
            [str(s) for s in plan.sources],
            out,
            plan.model,
            plan.options,
            address=plan.address,
            workers=plan.workers,
            gpus_per_worker=plan.gpus_per_worker,
            drift_report=plan.drift_report,
            log=run.log,
        )
    from ..engine.pipeline import predict_files

    return predict_files(
        plan.sources,
        plan.dests,
        plan.model,
        plan.options,
        resume=plan.resume,
        log=run.log,
        drift_report=plan.drift_report,
    )


def _stdout() -> Any:
    """The binary stdout (click's test runner swaps sys.stdout, so look it up at call time)."""
    return sys.stdout.buffer


def _stream_to_stdout(path: Path) -> None:
    """Copy a finished results file to stdout; a reader that stops early (`| head`) ends the
    run quietly with 141, as a SIGPIPE would; any other write error is an OutputError."""
    out = _stdout()
    try:
        with path.open("rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):  # no second error at interpreter exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(PIPE.code)
    except OSError as e:
        raise OutputError(f"<stdout>: cannot write ({e.strerror or type(e).__name__})") from None


if __name__ == "__main__":  # python -m fcls.infer.cli.infer
    main()
