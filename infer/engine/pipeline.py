"""`predict_csv`: stream CSV rows through a `Predictor` into results.csv, pipelined.

A reader thread cuts the input into blocks of whole lines and parses each, the calling thread
runs the model, a writer thread formats and writes (`fcls.infer.engine.stages`); bounded
queues between them keep memory constant and let parsing and writing overlap inference. Any
failure in any of the three sets one stop event that every queue operation wakes on, so the
pipeline stops within a fraction of a second and the first error is raised. Output goes to a
temp file renamed into place only on success (`common.output`); with `resume`, to a stable
temp name with a journal, so a killed run continues where its output was last durably written
(`engine.resume`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..common.drift import DriftRule, drift_line, drift_report
from ..common.errors import ConfigError
from ..common.output import OutputSet, output_errors
from ..common.system import available_cpus, file_sha256
from ..formats.csvfile import source_name
from ..formats.paths import check_outputs, is_regular, is_stdin
from ..formats.results import header_line, results_schema
from ..formats.sources import check_header, id_type, is_folder, is_table
from ..formats.tables import table_format
from .options import CHECKPOINT_SECONDS, ScoringOptions
from .predictor import Predictor
from .resume import Journal, Position, input_identity, leftovers
from .stages import (
    DONE,
    CsvResultWriter,
    Halt,
    Parsed,
    Reader,
    Scored,
    Scorer,
    TableResultWriter,
    Worker,
    checks_drift,
    get,
    open_predictor,
    put,
    result,
)

__all__ = ["CHECKPOINT_SECONDS", "ScoringOptions", "Summary", "predict_csv", "predict_files"]

QUEUE_DEPTH = 2  # blocks in flight per queue: bounds memory at a few blocks of rows
# Blocks parsed at once. Parsing is numpy code that releases the GIL, so on CUDA, where the
# model is nearly free, a second thread raises the ceiling; on CPU the model holds the cores
# and a second thread only costs memory (figures: bench/README.md).
PARSE_THREADS = {"cpu": 1, "cuda": 2}
JOIN_TIMEOUT = 5.0  # a worker still busy this long after a stop is stuck in I/O: leave it

Log = Callable[[str], None]


@dataclass(frozen=True)
class Summary:
    """What one `predict_csv` call did."""

    rows: int
    seconds: float
    provider: str
    model: str
    output: str
    resumed: int = 0  # rows an interrupted run had already written (--resume)
    drift_counts: tuple[int, ...] | None = None  # when drift was checked (common.drift)
    drift: dict[str, Any] | None = None  # this file's drift verdict and figures
    runtime: str = ""  # what ran the model (`Predictor.runtime_line`)

    @property
    def rows_per_s(self) -> float:
        """Throughput of this run, end to end."""
        return (self.rows - self.resumed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        resumed = f", resumed after row {self.resumed}" if self.resumed else ""
        return (
            f"{self.rows} rows in {self.seconds:.2f}s ({self.rows_per_s:,.0f} rows/s{resumed}) "
            f"on {self.provider} with {self.model} -> {self.output}"
        )


def predict_csv(
    src: str | Path | BinaryIO,
    dst: str | Path,
    model: str | Path | Predictor = "model.onnx",
    options: ScoringOptions | None = None,
    *,
    resume: bool = False,
    log: Log | None = None,
    **fields: Any,
) -> Summary:
    """Score every row of `src` (ID and the model's pixel columns) into `dst` (ID,label[,probabilities]).

    `src`: a CSV path (`.gz` decompressed, '-' stdin), a Parquet/Arrow IPC path or a binary
    stream; `dst`: the output file (.csv, or .parquet/.arrow), written beside itself and
    renamed into place only on success; `model`: an ONNX path or a ready `Predictor`;
    `options`: a `ScoringOptions`, or its fields as keywords (provider, batch_size, threads,
    parse_threads, proba, class_names, progress, chunk_bytes, durable, checkpoint_seconds),
    which also change a given `options`; `resume`, `log`: see `predict_files`. Returns rows,
    seconds, provider, model and output.

    Raises DataError (bad input, with file:line column), ModelError, ProviderError,
    ConfigError (bad options, output is an input or the model, `resume` with stdin) and
    OutputError (every output-side OSError, naming `dst`). Nothing is left at `dst` on failure.
    """
    opts = ScoringOptions.of(options, **fields)
    return predict_files([src], [Path(dst)], model, opts, resume=resume, log=log)[0]


def _is_stream(src: Any) -> bool:
    return not isinstance(src, (str, Path)) or is_stdin(src)


def predict_files(
    sources: list[Any],
    destinations: list[Path],
    model: str | Path | Predictor,
    options: ScoringOptions | None = None,
    *,
    resume: bool = False,
    log: Log | None = None,
    drift_report: Path | None = None,
    **fields: Any,
) -> list[Summary]:
    """Score several files with one session; the outputs appear only if every file succeeded.

    With `resume`, each output is written to a stable temp name with a journal, a run that was
    killed continues after its last checkpoint, and a failed run leaves them for the next try.
    Without it, files that killed runs left for these destinations are removed first.
    `log` receives one-line notices (leftovers removed, resume position, the drift verdict).
    When drift is checked (`options.drift`), each Summary carries its file's verdict and
    `drift_report` (if given) receives the run's report (JSON), with the outputs.
    """
    opts = ScoringOptions.of(options, **fields)
    say = log or (lambda _: None)
    destinations = [Path(d) for d in destinations]
    model_path = model.path if isinstance(model, Predictor) else Path(model)
    files = [Path(s) for s in sources if not _is_stream(s)]
    extra = [Path(drift_report)] if drift_report is not None else []
    check_outputs(files, [*destinations, *extra], model_path)  # before anything is touched
    if resume:
        _check_resumable(sources, destinations)
    _remove_leftovers(destinations, resume, say)
    owned = not isinstance(model, Predictor)
    with OutputSet(opts.durable, log=say) as outputs:
        journals: list[Journal] = []
        try:
            if not isinstance(model, Predictor):
                model = open_predictor(model, opts)
            check_profile(model, opts, say)
            for src in files:  # every file's pixel count, before anything is scored
                if is_regular(src) or is_folder(src):  # a pipe's header is read once: by its reader
                    check_header(src, "unlabelled", pixels=model.spec)
            report = stage_drift_report(model, opts, drift_report, outputs)
            summaries = _score_sources(
                sources, destinations, model, opts, outputs, journals, resume, say
            )
            if checks_drift(model, opts):
                names = [source_name(s) for s in sources]
                summaries = report_drift(model, names, summaries, report, outputs, say)
            outputs.commit_all()
        except BaseException:
            for journal in journals:  # keep the partial outputs and journals for --resume
                if journal.dest in outputs.staged:
                    outputs.release(journal.dest)
                journal.unlock()
            raise
        finally:
            if owned and isinstance(model, Predictor):
                model.close()
    for journal in journals:
        journal.remove()
    return summaries


def _score_sources(
    sources: list[Any],
    destinations: list[Path],
    model: Predictor,
    opts: ScoringOptions,
    outputs: OutputSet,
    journals: list[Journal],
    resume: bool,
    say: Log,
) -> list[Summary]:
    """Score each source into its staged destination, in order.

    With `resume`, each file's journal is appended to `journals` as soon as it exists, so the
    caller's failure handling can keep it and its partial output for the next try."""
    model_sha = file_sha256(model.path) if resume else ""
    summaries = []
    for src, dst in zip(sources, destinations):
        journal = None
        if resume:
            journal = Journal(dst, _identity(Path(src), model, model_sha, opts))
            journals.append(journal)
        tmp = outputs.stage(dst, journal.temp if journal else None)
        summaries.append(_score_file(src, tmp, dst, model, opts, journal, say))
    return summaries


def _remove_leftovers(destinations: list[Path], resume: bool, say: Log) -> None:
    """Remove the resume files killed runs left for the destinations (not what --resume
    continues); every staged file's own temps and backups are cleared as it is staged."""
    for dst in destinations:
        found = leftovers(dst, keep_resumable=resume)
        if found:
            for path in found:
                path.unlink(missing_ok=True)
            say(f"removed {len(found)} leftover file(s) of killed runs beside {dst}")


def check_profile(model: Predictor, options: ScoringOptions, say: Log) -> None:
    """Say what scoring assumes for a float-input model fcls-export did not make; refuse
    --flag-ood for a model without a profile, and say --drift goes unchecked."""
    if model.notice:
        say(model.notice)
    if model.profile is not None:
        return
    if options.flag_ood:
        raise ConfigError(f"--flag-ood: {model.path}: {model.profile_note}")
    if options.drift:  # asked for; by default a model without a profile goes unmentioned
        say(f"drift: not checked: {model.path.name}: {model.profile_note}")


def stage_drift_report(
    model: Predictor, options: ScoringOptions, path: Path | None, outputs: OutputSet
) -> Path | None:
    """Stage the drift report before any row is scored (proving it writable), when a run
    checks drift and has somewhere to write it; returns its path, or None."""
    if path is None or not checks_drift(model, options):
        return None
    outputs.stage(path)
    return path


def report_drift(
    model: Predictor,
    names: list[str],
    summaries: list[Summary],
    report_path: Path | None,
    outputs: OutputSet,
    say: Log,
) -> list[Summary]:
    """Judge each file's and the run's drift counts, write the report to `report_path`
    (staged by `stage_drift_report`), say the verdict in one line; returns the summaries with
    their file's verdict."""
    profile = model.profile
    assert profile is not None
    files = []
    for name, summary in zip(names, summaries):
        counts = profile.check_counts(summary.drift_counts)
        files.append((name, counts if counts is not None else profile.empty()))
    report = drift_report(profile, model.path.name, files, DriftRule())
    if report_path is not None:
        with output_errors(report_path):
            outputs.temp(report_path).write_text(json.dumps(report, indent=2) + "\n")
    say(drift_line(report, str(report_path) if report_path else None))
    return [replace(s, drift=f) for s, f in zip(summaries, report["files"])]


def _check_resumable(sources: list[Any], destinations: list[Path]) -> None:
    """Refuse --resume for what cannot be read again at a byte offset."""
    streams = [source_name(s) for s in sources if _is_stream(s)]
    if streams:
        raise ConfigError(
            f"--resume: {streams[0]} cannot be resumed (a stream cannot be read again); "
            "give a file, or drop --resume"
        )
    folders = [str(s) for s in sources if not _is_stream(s) and is_folder(s)]
    if folders:
        raise ConfigError(
            f"--resume: {folders[0]} is a folder of images; a run resumes by byte offsets into "
            "CSV input only; convert it once (fcls-convert FOLDER data.csv), or drop --resume"
        )
    pipes = [str(s) for s in sources if not _is_stream(s) and not is_regular(s)]
    if pipes:
        raise ConfigError(
            f"--resume: {pipes[0]} is not a regular file (a pipe or device cannot be read "
            "again at an offset); give a file, or drop --resume"
        )
    tables = [str(s) for s in sources if is_table(s)]
    tables += [str(d) for d in destinations if table_format(d) != "csv"]
    if tables:
        raise ConfigError(
            f"--resume: {tables[0]} is a Parquet/Arrow file; a run resumes by byte offsets "
            "into CSV input and output only; convert to CSV, or drop --resume"
        )


def _identity(src: Path, model: Predictor, model_sha: str, options: ScoringOptions) -> dict:
    """What a resumed run must share with the interrupted one to give the same bytes: the
    input, the model and the options marked as changing output bytes (`ScoringOptions`)."""
    return {
        "input": input_identity(src),
        "model_sha256": model_sha,
        "options": options.identity(provider=model.provider),
    }


def _score_file(
    src: Any,
    tmp: Path,
    dst: Path,
    model: Predictor,
    options: ScoringOptions,
    journal: Journal | None,
    say: Log,
) -> Summary:
    """Score one input into `tmp` and say what was done."""
    start = None
    if journal is not None:
        journal.lock()  # before the journal is read: a live run's is its own
        start = journal.load()
        if start is None:
            say(f"nothing to resume for {dst}: starting from the first row")
        else:
            say(f"resuming {dst} after row {start.rows} (line {start.line} of {source_name(src)})")
    drift = _drift_start(model, options, start, say)
    t0 = time.perf_counter()
    rows, counts = _run(_Job(src, tmp, dst, model, options, journal, start), drift)
    seconds = time.perf_counter() - t0
    resumed = start.rows if start is not None else 0
    kept = None if counts is None else tuple(counts.tolist())
    return Summary(
        rows,
        seconds,
        model.provider,
        model.path.name,
        str(dst),
        resumed,
        kept,
        runtime=model.runtime_line,
    )


def _drift_start(
    model: Predictor, options: ScoringOptions, start: Position | None, say: Log
) -> np.ndarray | None:
    """The drift counts a resumed run starts from: the interrupted run's, from its journal."""
    if start is None or not checks_drift(model, options) or model.profile is None:
        return None
    counts = model.profile.check_counts(start.drift)
    if counts is None:
        say(
            f"drift: the interrupted run kept no drift counts: the report covers rows after {start.rows}"
        )
    return counts


@dataclass(frozen=True)
class _Job:
    """One input scored into one staged output: what the three stages share."""

    src: Any  # a path, '-' or a binary stream
    tmp: Path  # the staged temp file the writer fills
    dst: Path  # the destination the user named (messages, format)
    model: Predictor
    options: ScoringOptions
    journal: Journal | None  # with --resume
    start: Position | None  # where an interrupted run got to (None: from the first row)


def _writer(job: _Job) -> CsvResultWriter | TableResultWriter:
    """The writer stage for the destination's format."""
    classes = job.model.class_names
    proba, class_names = job.options.proba, job.options.class_names
    names = classes if class_names else None
    if table_format(job.dst) != "csv":
        schema = results_schema(id_type(job.src), proba, class_names, classes, job.options.flag_ood)
        return TableResultWriter(job.tmp, job.dst, schema, names)
    header = header_line(proba, class_names, classes, job.options.flag_ood)
    seconds = job.options.checkpoint_seconds
    return CsvResultWriter(job.tmp, job.dst, header, names, job.journal, job.start, seconds)


def _run(job: _Job, drift: np.ndarray | None) -> tuple[int, np.ndarray | None]:
    """Run reader, scorer and writer over one input, the drift counts starting at `drift`;
    returns the rows in the output and the drift counts (None when drift is not checked)."""
    src, model, options, start = job.src, job.model, job.options, job.start
    halt = Halt()
    threads = options.parse_threads or min(PARSE_THREADS.get(model.provider, 1), available_cpus())
    pool = ThreadPoolExecutor(threads, thread_name_prefix="fcls-parse")
    parsed: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH + threads)  # keeps the pool busy
    scored: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
    reader = Reader(src, is_table(src), options.chunk_bytes, start, pool, job.model.spec)
    writer = _writer(job)
    workers = [
        Worker(lambda: reader(parsed, halt), "fcls-reader", halt),
        Worker(lambda: writer(scored, halt), "fcls-writer", halt),
    ]
    for t in workers:
        t.start()
    scorer = Scorer(model, options, source_name(src), _rows(start), drift)
    bar = _progress(options.progress, src, start)
    try:
        _score_all(scorer, parsed, scored, halt, bar)
        workers[1].join()  # the writer ends after DONE, or at once after a stop
    except BaseException as e:
        halt.fail(e)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # parse jobs are short and never block
        for t in workers:  # both wake on the stop event within TICK unless stuck in I/O
            t.join(timeout=JOIN_TIMEOUT)
        if bar is not None:
            bar.close()
    if halt.error is not None:
        raise halt.error
    return scorer.rows, scorer.drift


def _rows(start: Position | None) -> int:
    return start.rows if start is not None else 0


def _score_all(
    scorer: Scorer, parsed: queue.Queue[Any], scored: queue.Queue[Any], halt: Halt, bar: Any
) -> None:
    """The scoring stage: parsed blocks in, scored blocks out, then DONE (unless stopped).
    When the model runs on its own threads (`Predictor.asynchronous`), the next block is
    started before this one is awaited, so those threads go from block to block without
    waiting for this thread."""
    ahead = 1 if scorer.predictor.asynchronous else 0
    started: deque[Callable[[], Scored]] = deque()
    while (item := get(parsed, halt)) is not DONE:
        assert isinstance(item, Parsed)
        try:
            chunk = result(item.future, halt)
        except BaseException:
            _finish(started, 0, scored, halt, bar)  # what precedes a bad block is written
            raise
        if chunk is DONE:
            return
        started.append(scorer.start(chunk, item.end_offset, item.end_line))
        if not _finish(started, ahead, scored, halt, bar):
            return
    if _finish(started, 0, scored, halt, bar):
        put(scored, DONE, halt)


def _finish(
    started: deque[Callable[[], Scored]], keep: int, scored: queue.Queue[Any], halt: Halt, bar: Any
) -> bool:
    """Await the oldest started blocks, all but `keep`, and queue them for the writer; False
    when the pipeline stops."""
    while len(started) > keep:
        block = started.popleft()()
        if not put(scored, block, halt):
            return False
        if bar is not None:  # bytes of the input when its size is known, else rows
            end = block.end
            bar.update(end.input_offset - bar.n if bar.total else end.rows - bar.n)
    return True


def _progress(progress: bool | None, src: Any, start: Position | None) -> Any:
    """A bar on stderr labelled with the file name: over the bytes of a plain CSV file (total
    and ETA), over rows for .gz, streams (decompressed size unknown) and Parquet/Arrow."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    name = Path(source_name(src)).name
    size = None
    if is_regular(src) and not str(src).endswith(".gz") and not is_table(src):
        with contextlib.suppress(OSError):
            size = os.path.getsize(src)
    if size:
        done = start.input_offset if start is not None else 0
        return tqdm(
            desc=name,
            total=size,
            initial=done,
            unit="B",
            unit_scale=True,
            unit_divisor=1 << 10,  # KiB, MiB: binary units
            file=sys.stderr,
            leave=False,
        )
    done = start.rows if start is not None else 0
    return tqdm(
        desc=name, initial=done, unit=" rows", unit_scale=True, file=sys.stderr, leave=False
    )
