"""`predict_csv`: stream CSV rows through a `Predictor` into results.csv, pipelined.

A reader thread parses blocks of rows, the calling thread runs the model, a writer thread
formats and writes; bounded queues between them keep memory constant and let parsing and
writing overlap inference. Output goes to a temp file renamed into place only on success.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .csvio import DEFAULT_CHUNK_BYTES, Chunk, CsvReader, source_name
from .files import OutputSet, output_errors
from .predictor import Predictor

_DONE = object()
QUEUE_DEPTH = 2  # blocks in flight per queue: bounds memory at a few blocks of rows


@dataclass(frozen=True)
class Summary:
    """What one `predict_csv` call did."""

    rows: int
    seconds: float
    provider: str
    model: str
    output: str

    @property
    def rows_per_s(self) -> float:
        """Throughput, end to end."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        return (
            f"{self.rows} rows in {self.seconds:.2f}s ({self.rows_per_s:,.0f} rows/s) "
            f"on {self.provider} with {self.model} -> {self.output}"
        )


class _Worker(threading.Thread):
    """A daemon thread that keeps its exception for the main thread to re-raise."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:
            self.error = e


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless asked to stop; False when stopping."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    """Get, waking up to notice a stop request (then _DONE)."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _DONE


def _csv_field(values: pa.Array) -> pa.Array:
    """Strings as CSV fields: quoted (quotes doubled) only where a comma, quote or newline needs it."""
    needs = pc.match_substring_regex(values, '[",\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def format_rows(
    ids: pa.Array, labels: np.ndarray, proba: np.ndarray | None, names: list[str] | None
) -> bytes:
    """CSV text of the rows, built column-wise by Arrow kernels (no Python loop over rows)."""
    ids = _csv_field(ids)
    if names:
        label = _csv_field(pa.array(np.asarray(names, dtype=object)[labels], pa.string()))
    else:
        label = pc.cast(pa.array(labels), pa.string())
    columns = [ids, label]
    if proba is not None:
        columns += [pc.cast(pa.array(proba[:, j]), pa.string()) for j in range(proba.shape[1])]
    lines = pc.binary_join_element_wise(*columns, ",")
    text = pc.binary_join(
        pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n"
    )
    return text[0].as_py().encode() + b"\n"


def header_line(proba: bool, names: bool, classes: list[str]) -> bytes:
    """The output header: ID,label and, with proba, one column per class."""
    cols = ["ID", "label"]
    if proba:
        cols += [f"p_{c}" if names else f"p{j}" for j, c in enumerate(classes)]
    return (",".join(_csv_field(pa.array(cols)).to_pylist()) + "\n").encode()


def predict_csv(
    src: str | Path | BinaryIO,
    dst: str | Path,
    model: str | Path | Predictor = "model.onnx",
    *,
    provider: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    proba: bool = False,
    class_names: bool = False,
    progress: bool | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Summary:
    """Score every row of `src` (ID,pix1..pix1024) into `dst` (ID,label[,probabilities])."""
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
    )[0]


def predict_files(
    sources: list[Any],
    destinations: list[Path],
    model: str | Path | Predictor,
    *,
    provider: str = "auto",
    threads: int | None = None,
    **options: Any,
) -> list[Summary]:
    """Score several files with one session; the outputs appear only if every file succeeded."""
    with OutputSet() as outputs:
        temps = [outputs.stage(Path(dst)) for dst in destinations]
        if not isinstance(model, Predictor):
            model = Predictor(model, provider, threads, spinning=False)
        summaries = []
        for src, dst, tmp in zip(sources, destinations, temps):
            t0 = time.perf_counter()
            rows = _run(src, tmp, Path(dst), model, **options)
            seconds = time.perf_counter() - t0
            summaries.append(Summary(rows, seconds, model.provider, model.path.name, str(dst)))
        outputs.commit_all()
    return summaries


def _batches(chunk: Chunk, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(chunk), batch_size):
        yield chunk.pixels[i : i + batch_size]


def _run(
    src: str | Path | BinaryIO,
    tmp: Path,
    dst: Path,
    predictor: Predictor,
    batch_size: int = 64,
    proba: bool = False,
    class_names: bool = False,
    progress: bool | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> int:
    stop = threading.Event()
    parsed: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
    scored: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
    reader = CsvReader(src, "eval", chunk_bytes=chunk_bytes)
    classes = predictor.class_names
    names = classes if class_names else None

    def read() -> None:
        try:
            for chunk in reader:
                if not _put(parsed, chunk, stop):
                    return
        finally:  # also after an error, so the scoring loop never waits forever
            _put(parsed, _DONE, stop)

    def write() -> None:
        with output_errors(dst), tmp.open("wb") as f:
            f.write(header_line(proba, class_names, classes))
            while (item := _get(scored, stop)) is not _DONE:
                chunk, labels, probs = item
                f.write(format_rows(chunk.ids, labels, probs, names))

    threads = [_Worker(read, "fcls-reader"), _Worker(write, "fcls-writer")]
    for t in threads:
        t.start()
    rows = 0
    bar = _progress(progress, source_name(src))
    try:
        while (chunk := _get(parsed, stop)) is not _DONE:
            outs = [predictor.run(b, proba) for b in _batches(chunk, batch_size)]
            labels = np.concatenate([o[0] for o in outs])
            probs = np.concatenate([o[1] for o in outs if o[1] is not None]) if proba else None
            if threads[1].error is not None or not _put(scored, (chunk, labels, probs), stop):
                break
            rows += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
        _put(scored, _DONE, stop)
        threads[1].join()
        for t in threads:
            if t.error is not None:
                raise t.error
    except BaseException:
        stop.set()  # the workers notice within 0.1 s and exit
        raise
    finally:
        if bar is not None:
            bar.close()
    return rows


def _progress(progress: bool | None, name: str) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(desc=name, unit=" rows", unit_scale=True, file=sys.stderr, leave=False)
