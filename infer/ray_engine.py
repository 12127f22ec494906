"""Scale-out scoring on Ray Data: many CSV files, many workers, same bytes as one process.

Plan (driver): each input is cut into byte ranges that end on a line break, with the file
line each range starts on. Ray Data maps the ranges through the fcls parser (so errors name
the same file, line and column as the single-process path) and then through an actor pool,
each actor holding one onnxruntime session built from model bytes in the object store. Every
result carries (file, range, first row); the driver sorts on that, since Ray does not keep
order, and writes each output to a temp file renamed only when the whole run succeeded.

Ray is imported only here, and only when this engine is used.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .csvio import CsvReader, read_header
from .errors import ConfigError, DataError
from .files import OutputSet, output_errors
from .inputs import expand_inputs, output_paths
from .pipeline import Summary, format_rows, header_line
from .predictor import Predictor, available_cpus

BLOCK_BYTES = 8 << 20  # one parse task: ~3,000 rows
GPU_BATCH_ROWS = 4096  # rows per GPU actor call (Ray needs a batch size when GPUs are requested)
SCAN_BYTES = 16 << 20


@dataclass(frozen=True)
class Block:
    """A byte range of one input file that starts at a row."""

    file: int
    index: int
    path: str
    start: int
    end: int  # -1: to the end (gzip files are one block)
    first_line: int


def plan_blocks(file: int, path: Path, block_bytes: int = BLOCK_BYTES) -> tuple[bytes, list[Block]]:
    """The header line (validated) and the byte ranges of one input."""
    read_header(path, "eval")
    if path.suffix == ".gz":
        return b"", [Block(file, 0, str(path), 0, -1, 2)]
    blocks: list[Block] = []
    with path.open("rb") as f:
        header = f.readline()
        start, line, pos = f.tell(), 2, f.tell()
        newlines = 0  # since `start`
        while data := f.read(SCAN_BYTES):
            offset = 0
            while pos + len(data) - start >= block_bytes:
                cut = data.find(b"\n", max(offset, start + block_bytes - pos - 1))
                if cut < 0:
                    break
                newlines += data.count(b"\n", offset, cut + 1)
                blocks.append(Block(file, len(blocks), str(path), start, pos + cut + 1, line))
                line += newlines
                newlines, offset, start = 0, cut + 1, pos + cut + 1
            newlines += data.count(b"\n", offset)
            pos += len(data)
        if pos > start:
            blocks.append(Block(file, len(blocks), str(path), start, pos, line))
    return header, blocks


def _parse_block(item: dict[str, Any]) -> dict[str, np.ndarray]:
    """Parse one byte range with the fcls reader; a bad row becomes one `error` row.

    Ray re-raises task exceptions without their original type, so a DataError travels as
    data (its fields as JSON) and the driver raises it again, exactly as one process would.
    """
    path, start, end = str(item["path"]), int(item["start"]), int(item["end"])
    file, block = int(item["file"]), int(item["index"])
    ids: list[np.ndarray] = []
    pixels: list[np.ndarray] = []
    try:
        if end < 0:
            source: Any = path
        else:
            with open(path, "rb") as f:
                header = f.readline()
                f.seek(start)
                source = io.BytesIO(header + f.read(end - start))
        reader = CsvReader(
            source, "eval", chunk_bytes=BLOCK_BYTES, name=path, first_line=int(item["first_line"])
        )
        for chunk in reader:
            ids.append(np.asarray(chunk.ids.to_pylist(), dtype=object))
            pixels.append(chunk.pixels)
        error = ""
    except DataError as e:
        fields = {"source": e.source, "message": e.reason, "line": e.line, "column": e.column}
        error, ids, pixels = (
            json.dumps(fields),
            [np.array([""], object)],
            [np.zeros((1, 1024), np.uint8)],
        )
    n = sum(len(p) for p in pixels)
    return {
        "file": np.full(n, file, np.int64),
        "block": np.full(n, block, np.int64),
        "row": np.arange(n, dtype=np.int64),
        "id": np.concatenate(ids) if ids else np.empty(0, object),
        "pixels": np.concatenate(pixels) if pixels else np.empty((0, 1024), np.uint8),
        "error": np.full(n, error, object),
    }


def _parse(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray task: parse the byte ranges of `batch`."""
    parts = [_parse_block({k: v[i] for k, v in batch.items()}) for i in range(len(batch["path"]))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class _Scorer:
    """Ray actor: one onnxruntime session; scores rows and formats them as output CSV text."""

    def __init__(
        self,
        model: list[Any],
        provider: str,
        threads: int,
        batch_size: int,
        proba: bool,
        class_names: bool,
    ) -> None:
        import tempfile

        import ray

        blob = ray.get(model[0])  # the model bytes, shipped once through the object store
        handle, path = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(handle, "wb") as f:
            f.write(blob)
        self.predictor = Predictor(
            path, provider, threads, spinning=False
        )  # shares CPUs with parsing
        self.batch_size, self.proba = batch_size, proba
        self.names = self.predictor.class_names if class_names else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pyarrow as pa

        files, blocks, rows = batch["file"], batch["block"], batch["row"]
        pixels = np.asarray(batch["pixels"], dtype=np.uint8).reshape(-1, 1024)
        out: dict[str, list[Any]] = {"file": [], "block": [], "row": [], "text": [], "error": []}
        errors = np.flatnonzero(np.asarray(batch["error"], dtype=object) != "")
        for i in errors:  # a parse error: pass it on to the driver
            for key, value in (
                ("file", files[i]),
                ("block", blocks[i]),
                ("row", rows[i]),
                ("text", b""),
                ("error", batch["error"][i]),
            ):
                out[key].append(value)
        if len(errors):
            return {
                k: np.asarray(v, dtype=object if k in ("text", "error") else np.int64)
                for k, v in out.items()
            }
        # Ray may merge or split parse outputs: score each contiguous run of one block
        breaks = (
            np.flatnonzero((np.diff(files) != 0) | (np.diff(blocks) != 0) | (np.diff(rows) != 1))
            + 1
        )
        for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), len(files)]):
            if lo == hi:
                continue
            labels, probs = [], []
            for s in range(lo, hi, self.batch_size):
                lab, pr = self.predictor.run(pixels[s : min(s + self.batch_size, hi)], self.proba)
                labels.append(lab)
                probs.append(pr)
            ids = pa.array(list(batch["id"][lo:hi]), pa.string())
            proba = np.concatenate(probs) if self.proba else None
            out["file"].append(files[lo])
            out["block"].append(blocks[lo])
            out["row"].append(rows[lo])
            out["text"].append(format_rows(ids, np.concatenate(labels), proba, self.names))
            out["error"].append("")
        return {
            k: np.asarray(v, dtype=object if k in ("text", "error") else np.int64)
            for k, v in out.items()
        }


def _init_ray(address: str | None) -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    import logging

    import ray

    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **quiet)
        else:  # a private local instance: loopback only, no dashboard
            ray.init(
                num_cpus=available_cpus(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **quiet,
            )
    import ray.data  # configures its own loggers on import: quiet them afterwards

    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # fcls reports failures itself
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def predict_csv_ray(
    inputs: list[str],
    out: Path | None,
    model: Path,
    *,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    provider: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    proba: bool = False,
    class_names: bool = False,
    block_bytes: int = BLOCK_BYTES,
) -> list[Summary]:
    """Score every input on Ray Data; one Summary per input (seconds: the whole run)."""
    t0 = time.perf_counter()
    use = _worker_provider(provider, gpus_per_worker)
    paths = expand_inputs(inputs)
    dests = output_paths(paths, out)
    # fail fast on a bad model, and on a provider the driver cannot run
    names = Predictor(model, use, 1).class_names
    blocks = [b for i, p in enumerate(paths) for b in plan_blocks(i, p, block_bytes)[1]]
    with OutputSet() as outputs:
        temps = [outputs.stage(d) for d in dests]
        texts = _run(
            blocks,
            model,
            address,
            workers,
            gpus_per_worker,
            use,
            batch_size,
            threads,
            proba,
            class_names,
        )
        header = header_line(proba, class_names, names)
        counts = []
        for i, (tmp, dest) in enumerate(zip(temps, dests)):
            pieces = sorted(texts.get(i, []))
            with output_errors(dest), tmp.open("wb") as f:
                f.write(header)
                for *_, text in pieces:
                    f.write(text)
            counts.append(sum(t.count(b"\n") for *_, t in pieces))
        outputs.commit_all()
    seconds = time.perf_counter() - t0
    engine = f"{use} (ray x{workers})"
    return [Summary(n, seconds, engine, model.name, str(d)) for n, d in zip(counts, dests)]


def _worker_provider(provider: str, gpus_per_worker: float) -> str:
    """The provider the actors run: cuda exactly when they are given GPUs."""
    if gpus_per_worker > 0 and provider == "cpu":
        raise ConfigError(
            f"--provider cpu with --gpus-per-worker {gpus_per_worker:g}: the actors would hold "
            "GPUs they do not use; drop --gpus-per-worker or use --provider cuda/auto"
        )
    if provider == "cuda" and gpus_per_worker <= 0:
        raise ConfigError(
            "--provider cuda with --engine ray needs --gpus-per-worker > 0: "
            "Ray gives an actor a GPU only when it asks for one"
        )
    return "cuda" if gpus_per_worker > 0 else "cpu"


def _check_gpus(resources: dict[str, float], workers: int, gpus_per_worker: float) -> None:
    """Refuse a GPU request the cluster cannot meet (Ray would wait for it forever)."""
    wanted, have = workers * gpus_per_worker, float(resources.get("GPU", 0.0))
    if wanted > have:
        raise ConfigError(
            f"--workers {workers} x --gpus-per-worker {gpus_per_worker:g} = {wanted:g} GPUs, "
            f"but the Ray cluster has {have:g}"
        )


def _scorer_stage(
    model_ref: Any,
    use: str,
    workers: int,
    actor_cpus: float,
    actor_threads: int,
    gpus_per_worker: float,
    batch_size: int,
    proba: bool,
    class_names: bool,
) -> dict[str, Any]:
    """map_batches arguments of the scoring stage (an actor pool of `_Scorer`)."""
    return {
        "fn_constructor_args": ([model_ref], use, actor_threads, batch_size, proba, class_names),
        "concurrency": workers,
        "num_cpus": actor_cpus,
        "num_gpus": gpus_per_worker or None,
        # CPU actors take whole parse outputs; Ray insists on a batch size with GPUs
        "batch_size": max(batch_size, GPU_BATCH_ROWS) if gpus_per_worker else None,
        "max_restarts": 0,  # constructor args live in the object store: no silent restarts
    }


def _run(
    blocks: list[Block],
    model: Path,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    use: str,
    batch_size: int,
    threads: int | None,
    proba: bool,
    class_names: bool,
) -> dict[int, list[tuple[int, int, bytes]]]:
    """Run the Ray pipeline; results per file as (block, first row, text)."""
    ray = _init_ray(address)
    _check_gpus(ray.cluster_resources(), workers, gpus_per_worker)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # On a 2-CPU box, actors asking for a whole CPU each would leave parse tasks no slot and
    # the pipeline would stall: actors take what is left after one CPU's worth of reading.
    actor_cpus = max(0.1, min(1.0, (cpus - 1) / workers))
    actor_threads = threads or max(1, int(cpus // workers))
    model_ref = ray.put(model.read_bytes())
    items = [b.__dict__ for b in blocks]
    with warnings.catch_warnings():
        # max_restarts goes through ray_remote_args, deprecated in favour of names that
        # do not cover it yet
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = (
            ray.data.from_items(items)
            .map_batches(
                _parse, batch_size=1, num_cpus=min(1.0, max(0.25, cpus - workers * actor_cpus))
            )
            .map_batches(
                _Scorer,
                **_scorer_stage(
                    model_ref,
                    use,
                    workers,
                    actor_cpus,
                    actor_threads,
                    gpus_per_worker,
                    batch_size,
                    proba,
                    class_names,
                ),
            )
        )
    texts: dict[int, list[tuple[int, int, bytes]]] = {}
    errors: list[tuple[int, int, str]] = []
    for row in ds.iter_rows():
        key = (int(row["file"]), int(row["block"]))
        if row["error"]:
            errors.append((*key, str(row["error"])))
        else:
            texts.setdefault(key[0], []).append((key[1], int(row["row"]), bytes(row["text"])))
    if errors:  # the first bad row in input order, as the single-process path would report
        fields = json.loads(min(errors)[2])
        raise DataError(fields["source"], fields["message"], fields["line"], fields["column"])
    return texts
