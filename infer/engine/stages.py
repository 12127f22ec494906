"""The three stages of the local pipeline and their one stop protocol.

`Reader` (a thread) cuts the input into blocks and queues their parse futures in input order;
`Scorer` (the calling thread) runs the model on each parsed block; `CsvResultWriter` or
`TableResultWriter` (a thread) formats and writes. Bounded queues join them. Every queue
operation and every wait on a future goes through `put`, `get` and `result`, which wake every
TICK to look at the shared `Halt`: any failure anywhere sets it, so every stage stops within a
fraction of a second and the first error is the one raised.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from ..common.drift import ood_score
from ..common.errors import FclsError, ModelError
from ..common.output import output_errors
from ..common.spec import ImageSpec
from ..formats.chunk import Chunk
from ..formats.csvfile import CsvReader
from ..formats.images import ImageReader
from ..formats.results import RESULT_GROUP_ROWS, format_rows, results_batch
from ..formats.sources import is_folder, open_chunks
from ..formats.tables import TableWriter
from .options import ScoringOptions
from .predictor import Predictor
from .resume import Journal, Position

DONE = object()  # the end of a queue's items, or "stopped" from get/result
TICK = 0.1  # seconds a wait lasts before looking at the stop event again
# A resumable run's checkpoints (fsync + journal) take at most this share of its time
CHECKPOINT_BUDGET = 0.01


class Halt:
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


def put(q: queue.Queue[Any], item: Any, halt: Halt) -> bool:
    """Put unless the pipeline stops; False when stopping."""
    while not halt.is_set():
        try:
            q.put(item, timeout=TICK)
            return True
        except queue.Full:
            continue
    return False


def get(q: queue.Queue[Any], halt: Halt) -> Any:
    """Get, waking up to notice a stop (then DONE)."""
    while not halt.is_set():
        try:
            return q.get(timeout=TICK)
        except queue.Empty:
            continue
    return DONE


def result(future: Future[Any], halt: Halt) -> Any:
    """The future's result (its exception raised), or DONE if the pipeline stops first."""
    while not halt.is_set():
        try:
            return future.result(timeout=TICK)
        except FutureTimeout:
            continue
    return DONE


class Worker(threading.Thread):
    """A daemon thread whose failure stops the whole pipeline and is kept for the caller."""

    def __init__(self, target: Callable[[], None], name: str, halt: Halt) -> None:
        super().__init__(name=name, daemon=True)
        self._fn, self._halt = target, halt

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:
            self._halt.fail(e)


@dataclass(frozen=True)
class Parsed:
    """Reader -> scorer: a block's parse (rows, or None for blank lines) and where it ends."""

    future: Future[Chunk | None]
    end_offset: int  # input bytes up to the end of the block (0 for Parquet/IPC)
    end_line: int  # file line (data row for Parquet/IPC) just after the block


@dataclass(frozen=True)
class Scores:
    """What the model said of a block of rows."""

    labels: np.ndarray  # (n,) int64
    probs: np.ndarray | None  # (n, classes) float32 with --proba
    ood: np.ndarray | None  # (n,) bool with --flag-ood
    drift: np.ndarray | None  # the block's drift counts (common.drift) when drift is checked


def open_predictor(model: str | Path, options: ScoringOptions) -> Predictor:
    """The model as every scoring run opens it (the local pipeline and each Ray actor): the
    options' provider, threads, runtime and precision; idle threads not spinning (the parse
    and writer threads share the CPUs) and results independent of how rows are cut (resumed
    runs and Ray write the same bytes)."""
    return Predictor(
        model,
        options.provider,
        options.threads,
        spinning=False,
        runtime=options.runtime,
        precision=options.precision,
        batch_invariant=True,
    )


def checks_drift(predictor: Predictor, options: ScoringOptions) -> bool:
    """Whether a run counts drift: asked for, or not refused and the model has a profile."""
    return options.drift is not False and predictor.profile is not None


def score_rows(predictor: Predictor, pixels: np.ndarray, options: ScoringOptions) -> Scores:
    """Labels, and what `options` asks for besides, of (n, P) uint8 rows: the one scoring
    step of the local pipeline and the Ray engine."""
    return start_scores(predictor, pixels, options)()


def start_scores(
    predictor: Predictor, pixels: np.ndarray, options: ScoringOptions
) -> Callable[[], Scores]:
    """`score_rows` started: what it returns waits for the model (`Predictor.submit_batches`)."""
    drift = checks_drift(predictor, options)
    if not (drift or options.flag_ood):  # labels (and probabilities) straight from the graph
        labelled = predictor.submit_batches(
            pixels, options.batch_size, options.proba, not options.proba_raw
        )
        return lambda: Scores(*labelled(), None, None)
    later = predictor.submit_logits(pixels, options.batch_size)

    def finish() -> Scores:
        logits = later()
        profile = predictor.profile
        assert profile is not None  # the CLI refuses --flag-ood for a model without one
        score = ood_score(logits)
        return Scores(
            logits.argmax(axis=1).astype(np.int64),
            predictor.probabilities(logits, not options.proba_raw) if options.proba else None,
            profile.is_ood(logits, score) if options.flag_ood else None,
            profile.count(pixels, logits, score) if drift else None,
        )

    return finish


@dataclass(frozen=True)
class Scored:
    """Scorer -> writer: a block's rows, what the model said of them, and where it ends."""

    chunk: Chunk | None
    scores: Scores | None
    end: Position  # output_offset unknown here (0): the CSV writer knows it


class Reader:
    """Queues a `Parsed` per block of `src` in input order, then DONE; a failure, wherever it
    arises (reading or parsing), is queued as a failed future in its place, so the first
    error in the file is the one raised. CSV blocks are parsed, and a folder's batches of
    images decoded, on `pool`."""

    def __init__(
        self,
        src: str | Path | BinaryIO,
        table: bool,
        chunk_bytes: int,
        start: Position | None,
        pool: Executor,
        spec: ImageSpec,
    ) -> None:
        self.src, self.table, self.chunk_bytes, self.start = src, table, chunk_bytes, start
        self.pool, self.spec = pool, spec

    def __call__(self, out: queue.Queue[Any], halt: Halt) -> None:
        try:
            for item in self._blocks():
                if not put(out, item, halt):
                    return
        except Exception as e:
            failed: Future[Chunk | None] = Future()
            failed.set_exception(e)
            put(out, Parsed(failed, 0, 0), halt)
            return
        put(out, DONE, halt)

    def _blocks(self) -> Iterator[Parsed]:
        if is_folder(self.src):
            return self._images()
        return self._table() if self.table else self._csv()

    def _images(self) -> Iterator[Parsed]:
        """A folder's batches of images, each decoded on the pool (never resumed)."""
        reader = ImageReader(self.src, "unlabelled", pixels=self.spec)  # type: ignore[arg-type]
        for batch in reader.batches():
            future: Future[Chunk | None] = self.pool.submit(reader.decode, batch)
            yield Parsed(future, 0, batch.start + len(batch.paths))

    def _csv(self) -> Iterator[Parsed]:
        start = self.start  # skip what the interrupted run wrote
        where = None if start is None else (start.input_offset, start.line)
        reader = CsvReader(self.src, "unlabelled", self.chunk_bytes, start=where, pixels=self.spec)
        for parser, block in reader.blocks():
            future = self.pool.submit(parser.parse, block.data, block.line)
            yield Parsed(future, block.end_offset, block.end_line)

    def _table(self) -> Iterator[Parsed]:
        """Parquet / Arrow IPC chunks, read here, as parsed blocks (never resumed)."""
        for chunk in open_chunks(self.src, "unlabelled", pixels=self.spec):
            done: Future[Chunk | None] = Future()
            done.set_result(chunk)
            yield Parsed(done, 0, chunk.start + len(chunk))


class Scorer:
    """Runs the model on parsed blocks, `options.batch_size` rows per call; counts the rows
    and, when drift is checked, adds up the drift counts (`drift`), from a resumed run's."""

    def __init__(
        self,
        predictor: Predictor,
        options: ScoringOptions,
        name: str,
        rows: int = 0,
        drift: np.ndarray | None = None,
    ) -> None:
        self.predictor, self.options, self.name = predictor, options, name
        self.rows = rows  # rows scored so far, resumed ones included
        self.drift = drift

    def __call__(self, chunk: Chunk | None, end_offset: int, end_line: int) -> Scored:
        return self.start(chunk, end_offset, end_line)()

    def start(self, chunk: Chunk | None, end_offset: int, end_line: int) -> Callable[[], Scored]:
        """Start the model on the block; what this returns waits for it and gives the scored
        block. Blocks must be finished in the order they were started (rows are counted
        then)."""
        later = None  # set exactly when there is a chunk
        if chunk is not None:
            with self._failures(chunk):
                later = start_scores(self.predictor, chunk.pixels, self.options)

        def finish() -> Scored:
            scores = None
            if chunk is not None and later is not None:
                with self._failures(chunk):
                    scores = later()
                self.rows += len(chunk)
                if scores.drift is not None:
                    self.drift = scores.drift if self.drift is None else self.drift + scores.drift
            counts = None if self.drift is None else tuple(self.drift.tolist())
            return Scored(chunk, scores, Position(self.rows, end_offset, 0, end_line, counts))

        return finish

    @contextlib.contextmanager
    def _failures(self, chunk: Chunk) -> Iterator[None]:
        """A model failure on the block becomes a ModelError naming it."""
        try:
            yield
        except FclsError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:240]
            raise ModelError(
                f"{self.predictor.path}: inference failed on the block of {self.name} starting "
                f"at line {chunk.start} ({type(e).__name__}: {first})"
            ) from None


class CsvResultWriter:
    """Writes `Scored` blocks as result CSV rows into `tmp`, after `header` (a new file) or
    from `start` (a resumed one); with a `journal`, checkpoints every `checkpoint_seconds` or
    more (CHECKPOINT_BUDGET) and once at the end."""

    def __init__(
        self,
        tmp: Path,
        dst: Path,
        header: bytes,
        names: list[str] | None,
        journal: Journal | None = None,
        start: Position | None = None,
        checkpoint_seconds: float = 0.0,
    ) -> None:
        self.tmp, self.dst, self.header, self.names = tmp, dst, header, names
        self.journal, self.start, self.checkpoint_seconds = journal, start, checkpoint_seconds

    def __call__(self, scored: queue.Queue[Any], halt: Halt) -> None:
        with output_errors(self.dst):
            f = open(self.tmp, "wb" if self.start is None else "r+b")  # noqa: SIM115 - closed below
            try:
                self._write(f, scored, halt)
            finally:
                f.close()

    def _write(self, f: BinaryIO, scored: queue.Queue[Any], halt: Halt) -> None:
        if self.start is None:
            offset = f.write(self.header)
        else:
            f.truncate(self.start.output_offset)  # drop what followed the last checkpoint
            offset = f.seek(self.start.output_offset)
        last, wait = time.monotonic(), self.checkpoint_seconds
        position = None
        while (item := get(scored, halt)) is not DONE:
            if item.chunk is not None:
                s = item.scores
                offset += f.write(format_rows(item.chunk.ids, s.labels, s.probs, self.names, s.ood))
            position = replace(item.end, output_offset=offset)
            if self.journal is not None and time.monotonic() - last >= wait:
                cost = checkpoint(f, self.journal, position)
                last = time.monotonic()
                wait = self.checkpoint_seconds and max(
                    self.checkpoint_seconds, cost / CHECKPOINT_BUDGET
                )
        if self.journal is not None and position is not None and not halt.is_set():
            checkpoint(f, self.journal, position)  # the whole input: a later kill redoes nothing


class TableResultWriter:
    """Writes `Scored` blocks as Parquet / Arrow IPC results: row groups of RESULT_GROUP_ROWS."""

    def __init__(self, tmp: Path, dst: Path, schema: pa.Schema, names: list[str] | None) -> None:
        self.tmp, self.dst, self.schema, self.names = tmp, dst, schema, names

    def __call__(self, scored: queue.Queue[Any], halt: Halt) -> None:
        writer = TableWriter(self.tmp, self.dst, self.schema, group_rows=RESULT_GROUP_ROWS)
        try:
            while (item := get(scored, halt)) is not DONE:
                if item.chunk is not None:
                    s = item.scores
                    batch = results_batch(
                        self.schema, item.chunk.ids, s.labels, s.probs, self.names, s.ood
                    )
                    writer.write(batch)
        except BaseException:
            writer.abort()
            raise
        if halt.is_set():
            writer.abort()
        else:
            writer.close()


def checkpoint(f: Any, journal: Journal, position: Position) -> float:
    """Make the output durable up to `position`, then record it; returns the seconds it took."""
    t0 = time.monotonic()
    f.flush()
    os.fsync(f.fileno())
    journal.save(position)
    return time.monotonic() - t0
