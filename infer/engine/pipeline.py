"""`predict_csv`: stream CSV rows through a `Predictor` into results.csv, pipelined.

A reader thread cuts the input into blocks of whole lines and parses each, the calling thread
runs the model, a writer thread formats and writes; bounded queues between them keep memory
constant and let parsing and writing overlap inference. Any failure in any of the three sets
one stop event that every queue operation wakes on, so the pipeline stops within a fraction
of a second and the first error is raised. Output goes to a temp file renamed into place only
on success (`fcls.infer.files`); with `resume`, to a stable temp name with a journal, so a
killed run continues where its output was last durably written (`fcls.infer.resume`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from ..common.errors import ConfigError, DataError, FclsError, ModelError
from ..common.output import OutputSet, output_errors
from ..common.spec import DEFAULT_BATCH_SIZE
from ..common.system import available_cpus, file_sha256
from ..formats.chunk import Chunk
from ..formats.csvfile import (
    DEFAULT_CHUNK_BYTES,
    BlockParser,
    count_lines,
    open_source,
    read_block,
    source_name,
)
from ..formats.csvgrammar import MAX_LINE_BYTES, parse_header_line
from ..formats.paths import check_outputs
from ..formats.results import (
    RESULT_GROUP_ROWS,
    format_rows,
    header_line,
    results_batch,
    results_schema,
)
from ..formats.sources import id_type, is_table, open_chunks
from ..formats.tables import TableWriter, table_format
from .predictor import Predictor
from .resume import Journal, Position, input_identity, leftovers

_DONE = object()
QUEUE_DEPTH = 2  # blocks in flight per queue: bounds memory at a few blocks of rows
TICK = 0.1  # seconds a queue operation waits before looking at the stop event again
# Blocks parsed at once. Parsing is numpy code that releases the GIL, so on CUDA, where the
# model is nearly free, a second thread raises the ceiling (near-free model, 200,000 rows:
# 70,000 -> 97,000 rows/s on 2 cores). On CPU the model holds the cores: a second thread
# gained nothing (fp32, 50,000 rows: 22.6 s either way) and cost 46 MB of peak RSS.
PARSE_THREADS = {"cpu": 1, "cuda": 2}
JOIN_TIMEOUT = 5.0  # a worker still busy this long after a stop is stuck in I/O: leave it
# A resumable run fsyncs its output and rewrites its journal (3 fsyncs) at most every
# CHECKPOINT_SECONDS, and less often when fsyncs are slow, so that checkpoints take at most
# CHECKPOINT_BUDGET of the time (measured: 74 ms per checkpoint on a busy disk would have been
# 3.4% at a fixed 2 s). A killed run redoes the work since its last checkpoint.
CHECKPOINT_SECONDS = 2.0
CHECKPOINT_BUDGET = 0.01

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


class _Worker(threading.Thread):
    """A daemon thread whose failure stops the whole pipeline and is kept for the caller."""

    def __init__(self, target: Callable[[], None], name: str, halt: _Halt) -> None:
        super().__init__(name=name, daemon=True)
        self._fn, self._halt = target, halt

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:
            self._halt.fail(e)


class _Halt:
    """The pipeline's stop event and the first failure that set it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def _put(q: queue.Queue[Any], item: Any, halt: _Halt) -> bool:
    """Put unless the pipeline stops; False when stopping."""
    while not halt.is_set():
        try:
            q.put(item, timeout=TICK)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], halt: _Halt) -> Any:
    """Get, waking up to notice a stop (then _DONE)."""
    while not halt.is_set():
        try:
            return q.get(timeout=TICK)
        except queue.Empty:
            continue
    return _DONE


def predict_csv(
    src: str | Path | BinaryIO,
    dst: str | Path,
    model: str | Path | Predictor = "model.onnx",
    *,
    provider: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    proba: bool = False,
    class_names: bool = False,
    progress: bool | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    resume: bool = False,
    log: Log | None = None,
    durable: bool = True,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    parse_threads: int | None = None,
) -> Summary:
    """Score every row of `src` (ID,pix1..pix1024) into `dst` (ID,label[,probabilities]).

    `src`: a CSV path (`.gz` decompressed, '-' stdin) or a binary stream; `dst`: the output
    file, written beside itself and renamed into place only on success (fsynced unless
    `durable` is False); `model`: an ONNX path or a ready `Predictor`; `provider`, `threads`:
    as for `Predictor`; `batch_size`: rows per onnxruntime call (the output does not depend
    on it); `proba`: add one probability column per class; `class_names`: write names from
    the model's metadata instead of indices; `progress`: a bar on stderr (None: when stderr is
    a terminal); `chunk_bytes`: parse block size; `parse_threads`: blocks parsed at once
    (default: PARSE_THREADS of the provider); `resume`, `log`, `checkpoint_seconds`: see
    `predict_files`. Returns rows, seconds, provider, model and output.

    Raises DataError (bad input, with file:line column), ModelError, ProviderError,
    ConfigError (output is an input or the model, `resume` with stdin) and OutputError
    (every output-side OSError, naming `dst`). Nothing is left at `dst` on failure.
    """
    return predict_files(
        [src],
        [Path(dst)],
        model,
        provider=provider,
        batch_size=batch_size,
        threads=threads,
        proba=proba,
        class_names=class_names,
        progress=progress,
        chunk_bytes=chunk_bytes,
        resume=resume,
        log=log,
        durable=durable,
        checkpoint_seconds=checkpoint_seconds,
        parse_threads=parse_threads,
    )[0]


def _is_stream(src: Any) -> bool:
    return not isinstance(src, (str, Path)) or str(src) == "-"


def predict_files(
    sources: list[Any],
    destinations: list[Path],
    model: str | Path | Predictor,
    *,
    provider: str = "auto",
    threads: int | None = None,
    resume: bool = False,
    log: Log | None = None,
    durable: bool = True,
    **options: Any,
) -> list[Summary]:
    """Score several files with one session; the outputs appear only if every file succeeded.

    With `resume`, each output is written to a stable temp name with a journal, a run that was
    killed continues after its last checkpoint, and a failed run leaves them for the next try.
    Without it, files that killed runs left for these destinations are removed first.
    `log` receives one-line notices (leftovers removed, resume position).
    """
    say = log or (lambda _: None)
    destinations = [Path(d) for d in destinations]
    model_path = model.path if isinstance(model, Predictor) else Path(model)
    files = [Path(s) for s in sources if not _is_stream(s)]
    check_outputs(files, destinations, model_path)  # before anything is read or written
    if resume:
        streams = [source_name(s) for s in sources if _is_stream(s)]
        if streams:
            raise ConfigError(
                f"--resume: {streams[0]} cannot be resumed (a stream cannot be read again); "
                "give a file, or drop --resume"
            )
        tables = [str(s) for s in sources if is_table(s)]
        tables += [str(d) for d in destinations if table_format(d) != "csv"]
        if tables:
            raise ConfigError(
                f"--resume: {tables[0]} is a Parquet/Arrow file; a run resumes by byte offsets "
                "into CSV input and output only; convert to CSV, or drop --resume"
            )
    for dst in destinations:
        found = leftovers(dst, keep_resumable=resume)
        if found:
            for path in found:
                path.unlink(missing_ok=True)
            say(f"removed {len(found)} leftover file(s) of killed runs beside {dst}")
    with OutputSet(durable) as outputs:
        journals: list[Journal | None] = [None] * len(destinations)
        try:
            if not isinstance(model, Predictor):
                model = Predictor(model, provider, threads, spinning=False)
            model_sha = file_sha256(model.path) if resume else ""
            summaries = []
            for i, (src, dst) in enumerate(zip(sources, destinations)):
                journal = None
                if resume:
                    journal = Journal(dst, _identity(Path(src), model, model_sha, options))
                    journals[i] = journal
                tmp = outputs.stage(dst, journal.temp if journal else None)
                t0 = time.perf_counter()
                rows, resumed = _run(src, tmp, dst, model, journal=journal, log=say, **options)
                seconds = time.perf_counter() - t0
                summaries.append(
                    Summary(rows, seconds, model.provider, model.path.name, str(dst), resumed)
                )
            outputs.commit_all()
        except BaseException:
            if resume:  # keep the partial outputs and journals for the next --resume
                for journal in journals:
                    if journal is not None and journal.dest in outputs.staged:
                        outputs.release(journal.dest)
            raise
    for journal in journals:
        if journal is not None:
            journal.remove()
    return summaries


def _identity(src: Path, model: Predictor, model_sha: str, options: dict[str, Any]) -> dict:
    """What a resumed run must share with the interrupted one to give the same bytes.

    Batch size and chunk size are left out: each row is scored independently and
    formatted alone, so they change speed, not output bytes (tested with --proba).
    """
    return {
        "input": input_identity(src),
        "model_sha256": model_sha,
        "options": {
            "proba": bool(options.get("proba", False)),
            "class_names": bool(options.get("class_names", False)),
            "provider": model.provider,
        },
    }


@dataclass(frozen=True)
class _Block:
    """Whole input lines: parsed rows (None for blank lines) and where the block ends."""

    chunk: Chunk | None
    end: Position  # output_offset unknown here (0): the writer fills it in


@dataclass(frozen=True)
class _Raw:
    """Whole input lines before parsing, and where they end in the input."""

    parser: BlockParser
    data: bytes
    line: int  # file line of the first byte
    end_offset: int  # input bytes up to the end of the block
    end_line: int  # file line just after the block


def _fill(stream: BinaryIO, buf: bytes, n: int, name: str, line: int) -> tuple[bytes, bool]:
    """Read until `buf` holds `n` bytes; also return whether the input ended first."""
    while len(buf) < n:
        try:
            more = read_block(stream, n - len(buf), name, line)
        except OSError as e:
            raise DataError(name, f"cannot read ({e.strerror or type(e).__name__})", line) from None
        if not more:
            return buf, True
        buf += more
    return buf, False


def _skip(stream: BinaryIO, n: int, name: str, line: int) -> None:
    """Move `n` bytes forward: a seek in a plain file, decompressing past them in a .gz."""
    if not isinstance(stream, gzip.GzipFile) and stream.seekable():
        stream.seek(n, io.SEEK_CUR)
        return
    while n > 0:
        piece, eof = _fill(stream, b"", min(n, 1 << 20), name, line)
        if eof:
            raise DataError(name, "input is shorter than when the interrupted run read it", line)
        n -= len(piece)


def _read_blocks(
    src: str | Path | BinaryIO, chunk_bytes: int, start: Position | None
) -> Iterator[_Raw]:
    """Blocks of whole lines, each determined by its start offset alone (the first
    `chunk_bytes` bytes cut after their last line break), so that a resumed run cuts, batches
    and therefore scores exactly as the interrupted one did. Each comes with the parser of
    this file's header (checked here, before any block) and its true first line."""
    name = source_name(src)
    stream, owned = open_source(src)
    try:
        buf = b""
        while b"\n" not in buf and len(buf) <= MAX_LINE_BYTES:  # a longer header is refused
            buf, eof = _fill(stream, buf, len(buf) + (1 << 16), name, 1)
            if eof:
                break
        header, sep, _ = buf.partition(b"\n")
        if not header.strip():
            raise DataError(name, "empty file (no header line)", 1)
        parser = BlockParser(
            parse_header_line(header, "unlabelled", name, bool(sep)), "unlabelled", name
        )
        header += sep
        offset, line = len(header), 2
        if start is not None:
            offset, line = start.input_offset, start.line
        carry = buf[offset:]
        if offset > len(buf):  # skip what the interrupted run wrote
            _skip(stream, offset - len(buf), name, line)
        while True:
            buf, eof = _fill(stream, carry, chunk_bytes, name, line)
            cut = buf.rfind(b"\n") + 1
            while cut == 0 and not eof:  # one line longer than a block: up to its end
                buf, eof = _fill(stream, buf, len(buf) + chunk_bytes, name, line)
                cut = buf.find(b"\n") + 1
            if eof:
                cut = len(buf)
            block, carry = buf[:cut], buf[cut:]
            if not block:
                return
            end_line = line + count_lines(block)
            offset += len(block)
            yield _Raw(parser, block, line, offset, end_line)
            line = end_line
            if eof:
                return
    finally:
        if owned:
            stream.close()


def _table_blocks(src: str | Path | BinaryIO) -> Iterator[tuple[Future[Chunk | None], int, int]]:
    """The chunks of a Parquet / Arrow IPC input, read here, in the form of parsed CSV blocks
    (never resumed: there are no byte offsets)."""
    for chunk in open_chunks(src, "unlabelled"):
        done: Future[Chunk | None] = Future()
        done.set_result(chunk)
        yield done, 0, chunk.first_line + len(chunk)


def _write_table(
    tmp: Path,
    dst: Path,
    schema: pa.Schema,
    names: list[str] | None,
    scored: queue.Queue[Any],
    halt: _Halt,
) -> None:
    """The writer thread for Parquet / Arrow IPC results: row groups of RESULT_GROUP_ROWS."""
    writer = TableWriter(tmp, dst, schema, group_rows=RESULT_GROUP_ROWS)
    try:
        while (item := _get(scored, halt)) is not _DONE:
            block, labels, probs = item
            if block.chunk is not None:
                writer.write(results_batch(schema, block.chunk.ids, labels, probs, names))
    except BaseException:
        writer.abort()
        raise
    if halt.is_set():
        writer.abort()
    else:
        writer.close()


def _batches(chunk: Chunk, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(chunk), batch_size):
        yield chunk.pixels[i : i + batch_size]


def _score(
    predictor: Predictor, chunk: Chunk, batch_size: int, proba: bool, name: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (n,) and probabilities (n, classes) of a block; a model failure is a ModelError."""
    try:
        outs = [predictor.run(b, proba) for b in _batches(chunk, batch_size)]
    except FclsError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:240]
        raise ModelError(
            f"{predictor.path}: inference failed on the block of {name} starting at line "
            f"{chunk.first_line} ({type(e).__name__}: {first})"
        ) from None
    labels = np.concatenate([o[0] for o in outs])
    probs = np.concatenate([o[1] for o in outs if o[1] is not None]) if proba else None
    return labels, probs


def _run(
    src: str | Path | BinaryIO,
    tmp: Path,
    dst: Path,
    predictor: Predictor,
    batch_size: int = DEFAULT_BATCH_SIZE,
    proba: bool = False,
    class_names: bool = False,
    progress: bool | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    journal: Journal | None = None,
    log: Log = lambda _: None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    parse_threads: int | None = None,
) -> tuple[int, int]:
    """Score one input into `tmp`; returns (rows in the output, rows resumed from a journal)."""
    name = source_name(src)
    start = journal.load() if journal is not None else None
    if journal is not None:
        if start is None:
            log(f"nothing to resume for {dst}: starting from the first row")
        else:
            log(f"resuming {dst} after row {start.rows} (line {start.line} of {name})")
    halt = _Halt()
    threads = parse_threads or min(PARSE_THREADS.get(predictor.provider, 1), available_cpus())
    pool = ThreadPoolExecutor(threads, thread_name_prefix="fcls-parse")
    parsed: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH + threads)  # keeps the pool busy
    scored: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
    classes = predictor.class_names
    names = classes if class_names else None

    out_format = table_format(dst)
    schema = results_schema(id_type(src), proba, class_names, classes)

    def read() -> None:
        # CSV blocks are parsed on a pool and queued as futures in input order, so the first
        # error in the file is the one raised, wherever it arises (reading or parsing).
        try:
            if is_table(src):
                items: Iterator[tuple[Future[Chunk | None], int, int]] = _table_blocks(src)
            else:
                items = (
                    (
                        pool.submit(raw.parser.parse, raw.data, raw.line),
                        raw.end_offset,
                        raw.end_line,
                    )
                    for raw in _read_blocks(src, chunk_bytes, start)
                )
            for item in items:
                if not _put(parsed, item, halt):
                    return
        except Exception as e:
            failed: Future[Chunk | None] = Future()
            failed.set_exception(e)
            _put(parsed, (failed, 0, 0), halt)
            return
        _put(parsed, _DONE, halt)

    def write() -> None:
        if out_format != "csv":
            _write_table(tmp, dst, schema, names, scored, halt)
            return
        with output_errors(dst):
            f = open(tmp, "wb" if start is None else "r+b")  # noqa: SIM115 - closed below
            try:
                if start is None:
                    offset = f.write(header_line(proba, class_names, classes))
                else:
                    f.truncate(start.output_offset)  # drop what followed the last checkpoint
                    offset = f.seek(start.output_offset)
                last, wait = time.monotonic(), checkpoint_seconds
                position = None
                while (item := _get(scored, halt)) is not _DONE:
                    block, labels, probs = item
                    if block.chunk is not None:
                        offset += f.write(format_rows(block.chunk.ids, labels, probs, names))
                    position = Position(
                        block.end.rows, block.end.input_offset, offset, block.end.line
                    )
                    if journal is not None and time.monotonic() - last >= wait:
                        cost = _checkpoint(f, journal, position)
                        last = time.monotonic()
                        wait = checkpoint_seconds and max(
                            checkpoint_seconds, cost / CHECKPOINT_BUDGET
                        )
                if journal is not None and position is not None and not halt.is_set():
                    _checkpoint(
                        f, journal, position
                    )  # the whole input: a later kill redoes nothing
            finally:
                f.close()

    workers = [_Worker(read, "fcls-reader", halt), _Worker(write, "fcls-writer", halt)]
    for t in workers:
        t.start()
    rows = resumed = start.rows if start is not None else 0
    bar = _progress(progress, src, start)
    try:
        while (item := _get(parsed, halt)) is not _DONE:
            future, end_offset, end_line = item
            chunk = _result(future, halt)
            if chunk is _DONE:
                break
            rows += 0 if chunk is None else len(chunk)
            block = _Block(chunk, Position(rows, end_offset, 0, end_line))
            labels = probs = None
            if block.chunk is not None:
                labels, probs = _score(predictor, block.chunk, batch_size, proba, name)
            if not _put(scored, (block, labels, probs), halt):
                break
            if bar is not None:  # bytes of the input when its size is known, else rows
                bar.update(block.end.input_offset - bar.n if bar.total else block.end.rows - bar.n)
        _put(scored, _DONE, halt)
        workers[1].join()  # the writer ends after _DONE, or at once after a stop
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
    return rows, resumed


def _result(future: Future[Chunk | None], halt: _Halt) -> Any:
    """The parsed block (its parse error raised), or _DONE if the pipeline stops first."""
    while not halt.is_set():
        try:
            return future.result(timeout=TICK)
        except FutureTimeout:
            continue
    return _DONE


def _checkpoint(f: Any, journal: Journal, position: Position) -> float:
    """Make the output durable up to `position`, then record it; returns the seconds it took."""
    t0 = time.monotonic()
    f.flush()
    os.fsync(f.fileno())
    journal.save(position)
    return time.monotonic() - t0


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
    if not _is_stream(src) and not str(src).endswith(".gz") and not is_table(src):
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
            unit_divisor=1024,
            file=sys.stderr,
            leave=False,
        )
    done = start.rows if start is not None else 0
    return tqdm(
        desc=name, initial=done, unit=" rows", unit_scale=True, file=sys.stderr, leave=False
    )
