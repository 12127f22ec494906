"""Scale-out scoring on Ray Data: many CSV files, many workers, same bytes as one process.

Plan (driver): each input is cut into shards, one parse task each: a plain CSV file into byte
ranges of whole lines (by the same splitter as the local pipeline, `formats.csvfile.LineInput`)
with the file line each starts on, a Parquet file into its row groups with the row each starts
on, a .gz or Arrow IPC file is one shard. Ray Data maps the shards through the fcls parser (so
errors name the same file, line and column as the single-process path) and then through an
actor pool, each actor holding one onnxruntime session built from model bytes in the object
store. A shard's parsed rows travel as parts; every scored piece carries (file, shard, part,
row); the driver streams them back in input order
and writes each as soon as it is the next one of its file, into temp files that are renamed
into place only when the whole run succeeded. Killed workers are restarted and their work
redone by Ray, a bounded number of times; beyond that the run fails with a WorkerError.
Ray places each task and actor on one node: the actors' and the parse tasks' CPU shares are
sized against the CPUs of each node (`cpu_shares`), a request no share fits is refused before
any work, and a run whose work Ray can no longer place fails after a bounded wait.

Ray is imported only here, and only when this engine is used.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..common.errors import ConfigError, DataError, FclsError
from ..common.output import OutputSet, output_errors
from ..common.spec import ImageSpec
from ..common.system import available_cpus
from ..formats.csvfile import CsvReader, LineInput, read_header
from ..formats.csvgrammar import parse_header_line
from ..formats.paths import check_outputs, expand_inputs, is_regular, output_paths
from ..formats.results import format_rows, header_line
from ..formats.tables import TableReader, plan_layout, table_format, table_schema
from .options import ScoringOptions
from .pipeline import Log, Summary, check_profile, report_drift, stage_drift_report
from .predictor import Predictor
from .stages import checks_drift, open_predictor, score_rows

SHARD_BYTES = 8 << 20  # input bytes of one parse task
GPU_BATCH_ROWS = 4096  # rows per GPU actor call (Ray needs a batch size when GPUs are requested)
MAX_RESTARTS = 3  # per scoring actor
MAX_RETRIES = 3  # per parse task and per actor call
CPU_UNIT = 10_000  # Ray counts resources in ten-thousandths: shares are sized in those units
MIN_ACTOR_CPUS = 0.1  # the least CPU share a scoring actor is given
PARSE_CPUS = (1.0, 0.5, 0.25)  # a parse task's share: the largest that fits beside the actors
# Bounded waits, unless the user set Ray's own variables for them: for the actors to start
# (a cluster that cannot place them), and for any block to move (work that can no longer be
# placed, say after a node was lost). Both are far above what a healthy run needs.
ACTOR_START_S = 300
STALL_S = 600


@dataclass(frozen=True)
class Shard:
    """A shard of one input file, parsed by one Ray task: a byte range of whole lines (CSV),
    a range of row groups (Parquet), or the whole file (.gz, Arrow IPC)."""

    file: int
    index: int
    path: str
    start: int  # CSV: the byte offset it starts at; Parquet: its first row group
    end: int  # -1: to the end (gzip and IPC files are one shard); Parquet: row group after
    first_row_at: int  # CSV: file line of its first row; Parquet and IPC: that row's number, from 1
    pixels: int  # values per row: the model's image size (the header was checked for it)


def plan_shards(
    file: int, path: Path, spec: ImageSpec, shard_bytes: int = SHARD_BYTES
) -> tuple[bytes, list[Shard]]:
    """The header line (validated for rows of `spec`; b"" but for plain CSV) and the shards
    of one input."""
    fmt, n = table_format(path), spec.n_pixels
    if fmt != "csv":
        plan_layout(table_schema(path), "unlabelled", str(path), spec)
        if fmt == "ipc":
            return b"", [Shard(file, 0, str(path), 0, -1, 1, n)]
        return b"", _row_group_shards(file, path, n)
    if path.suffix == ".gz":
        read_header(path, "unlabelled", spec)
        return b"", [Shard(file, 0, str(path), 0, -1, 2, n)]
    return _line_shards(file, path, shard_bytes, spec)


def _line_shards(
    file: int, path: Path, shard_bytes: int, spec: ImageSpec
) -> tuple[bytes, list[Shard]]:
    """Byte ranges of whole lines, cut by the same splitter as the local pipeline."""
    shards: list[Shard] = []
    n = spec.n_pixels
    with path.open("rb") as f:
        lines = LineInput(f, str(path))
        raw, terminated = lines.header_line()
        parse_header_line(raw, "unlabelled", str(path), terminated, spec)
        header = raw + b"\n" * terminated
        start, line = lines.offset, 2
        try:
            for block in lines.blocks(shard_bytes, line):
                shards.append(Shard(file, len(shards), str(path), start, block.end_offset, line, n))
                start, line = block.end_offset, block.end_line
        except DataError:
            # a line too long to end a shard: the rest is one shard whose parse reports it,
            # in input order with the other files' errors
            end = os.fstat(f.fileno()).st_size
            shards.append(Shard(file, len(shards), str(path), start, end, line, n))
    return header, shards


def _row_group_shards(file: int, path: Path, n_pixels: int) -> list[Shard]:
    """One shard per row group of a Parquet file, with the data row each starts on."""
    meta = pq.read_metadata(path)
    shards, row = [], 1
    for g in range(meta.num_row_groups):
        shards.append(Shard(file, g, str(path), g, g + 1, row, n_pixels))
        row += meta.row_group(g).num_rows
    return shards


# One part: consecutive rows of one shard, as a dict of columns. Every row carries where it
# belongs: file, shard, part (the parser's chunk within the shard), row (within the part),
# part_rows and last (whether the part ends its shard), so the driver can put the pieces
# back in input order however Ray batches them. A part with no rows to score (a parse
# error, or a shard of blank lines) is one marker row with part_rows 0.
Part = dict[str, np.ndarray]


def _part(
    shard: dict[str, Any], part: int, ids: np.ndarray, pixels: np.ndarray, last: bool, error: str
) -> Part:
    n = len(pixels)
    rows = 0 if error else n
    if n == 0:  # a marker row: nothing to score, but the driver must hear of this part
        n, ids = 1, np.array([""], object)
        pixels = np.zeros((1, int(shard["pixels"])), np.uint8)
    return {
        "file": np.full(n, int(shard["file"]), np.int64),
        "shard": np.full(n, int(shard["index"]), np.int64),
        "part": np.full(n, part, np.int64),
        "row": np.arange(n, dtype=np.int64),
        "part_rows": np.full(n, rows, np.int64),
        "last": np.full(n, last, bool),
        "id": ids,  # (n,) object (str)
        "pixels": pixels,  # (n, P) uint8
        "error": np.full(n, error, object),
    }


def _parse_shard(shard: dict[str, Any]) -> Iterator[Part]:
    """Parse one byte range with the fcls reader, one part per reader chunk.

    A bad row ends the shard with an error part. Ray re-raises task exceptions without their
    original type, so a DataError travels as data (its fields as JSON) and the driver raises
    it again, exactly as one process would.
    """
    path, start, end = str(shard["path"]), int(shard["start"]), int(shard["end"])
    n_pixels = int(shard["pixels"])
    none = np.empty((0, n_pixels), np.uint8)
    part = 0
    # a part is sent once the next one shows whether it is the last
    pending: tuple[np.ndarray, np.ndarray] | None = None  # (ids, pixels)
    try:
        reader: Any
        if table_format(path) != "csv":
            groups = None if end < 0 else range(start, end)
            first = int(shard["first_row_at"])
            reader = TableReader(
                path, "unlabelled", row_groups=groups, first_row=first, pixels=n_pixels
            )
        else:  # a .gz file is one shard (end -1): all of it
            where = None if end < 0 else (start, int(shard["first_row_at"]))
            stop = None if end < 0 else end
            reader = CsvReader(
                path, "unlabelled", SHARD_BYTES, start=where, end=stop, pixels=n_pixels
            )
        for chunk in reader:
            if pending is not None:
                yield _part(shard, part, *pending, False, "")
                part += 1
            ids = [] if chunk.ids is None else chunk.ids.cast(pa.string()).to_pylist()
            pending = (np.array(ids, dtype=np.object_), chunk.pixels)
    except DataError as e:
        if pending is not None:
            yield _part(shard, part, *pending, False, "")
            part += 1
        fields = {"source": e.source, "message": e.reason, "line": e.line, "column": e.column}
        yield _part(shard, part, np.empty(0, object), none, True, json.dumps(fields))
        return
    ids, pixels = pending or (np.empty(0, object), none)
    yield _part(shard, part, ids, pixels, True, "")


def _parse(batch: dict[str, np.ndarray]) -> Iterator[Part]:
    """Ray task: parse the byte ranges of `batch`, yielding one part at a time."""
    for i in range(len(batch["path"])):
        yield from _parse_shard({k: v[i] for k, v in batch.items()})


PIECE_KEYS = ("file", "shard", "part", "row", "rows", "part_rows", "last")


class _Scorer:
    """Ray actor: one Predictor (either runtime); scores rows and formats them as output CSV text."""

    def __init__(self, model: list[Any], options: ScoringOptions) -> None:
        """`options`: with the provider and threads this actor runs (not auto)."""
        import tempfile

        import ray

        # the model bytes, shipped once through the object store; the driver holds the
        # reference for the whole run, so a restarted actor can fetch them again
        blob = ray.get(model[0])
        handle, path = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(handle, "wb") as f:
            f.write(blob)
        # spinning off: the actor shares CPUs with the parse tasks
        self.predictor = open_predictor(path, options)
        os.unlink(path)  # the session has read it
        self.options = options
        self.names = self.predictor.class_names if options.class_names else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One piece per contiguous run of rows of one part: its place and its CSV text."""
        import pyarrow as pa

        keys = {k: np.asarray(batch[k]) for k in ("file", "shard", "part", "row")}
        part_rows, last = np.asarray(batch["part_rows"]), np.asarray(batch["last"])
        errors = np.asarray(batch["error"], dtype=object)
        width = self.predictor.spec.n_pixels
        pixels = np.asarray(batch["pixels"], dtype=np.uint8).reshape(-1, width)  # (n, P)
        n = len(pixels)
        # Ray may merge or split parse outputs: score each contiguous run of one part
        same = np.ones(max(n - 1, 0), bool)
        for k in ("file", "shard", "part"):
            same &= np.diff(keys[k]) == 0
        breaks = np.flatnonzero(~same | (np.diff(keys["row"]) != 1)) + 1
        out: dict[str, list[Any]] = {k: [] for k in (*PIECE_KEYS, "text", "drift", "error")}
        for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), n]):
            marker = part_rows[lo] == 0  # an error or an empty shard: nothing to score
            text, drift = (
                (b"", b"") if marker else self._score(batch["id"][lo:hi], pixels[lo:hi], pa)
            )
            for k in ("file", "shard", "part", "row"):
                out[k].append(keys[k][lo])
            out["rows"].append(0 if marker else hi - lo)
            out["part_rows"].append(part_rows[lo])
            out["last"].append(last[lo])
            out["text"].append(text)
            out["drift"].append(drift)
            out["error"].append(errors[lo])
        return {
            k: np.asarray(v, dtype=object if k in ("text", "drift", "error") else np.int64)
            for k, v in out.items()
        }

    def _score(self, ids: np.ndarray, pixels: np.ndarray, pa: Any) -> tuple[bytes, bytes]:
        """The rows' CSV text and their drift counts (int64 bytes; b"" when not checked)."""
        s = score_rows(self.predictor, pixels, self.options)
        text = format_rows(pa.array(list(ids), pa.string()), s.labels, s.probs, self.names, s.ood)
        return text, b"" if s.drift is None else s.drift.tobytes()


def _init_ray(address: str | None) -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    # Ray's C++ core logs an ERROR line on every healthy run: Ray Data passes its actors
    # their constructor arguments through the object store and makes them restartable, which
    # the core warns about (ray-project/ray#53727). fcls reports Ray's failures itself, from
    # the exceptions; RAY_BACKEND_LOG_LEVEL set by the user still wins.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import logging

    # a new local instance gets Ray's default token authentication, with a WARNING saying so
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
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
        _quiet_cluster_errors(ray)
    import ray.data  # configures its own loggers on import: quiet them afterwards

    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # fcls reports failures itself
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def _quiet_cluster_errors(ray: Any) -> None:
    """Drop the cluster's error notes that the driver prints even with log_to_driver off (a
    lost node's raylet log, each retry of a task), some on stdout: fcls reports the failure
    that ends a run itself, in one line. A private hook of Ray's; left alone where absent."""
    module: Any = getattr(getattr(ray, "_private", None), "worker", None)
    show = getattr(module, "print_to_stdstream", None)
    if show is None or getattr(show, "fcls_quiet", False):
        return

    def quiet(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":  # the error notes come as the raylet's
            show(data, ignore_prefix)

    quiet.fcls_quiet = True  # type: ignore[attr-defined]
    module.print_to_stdstream = quiet


class WorkerError(FclsError):
    """Ray lost a worker beyond its restart and retry budget, or a worker failed."""


def _refuse_folders(paths: list[Path]) -> None:
    """Ray shards files by bytes: a folder of images is scored by the local engine."""
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise ConfigError(
            f"--engine ray: {folders[0]} is a folder of images; Ray reads CSV, Parquet and "
            "Arrow files: use --engine local, or convert the folder with fcls-convert first"
        )


def predict_csv_ray(
    inputs: list[str],
    out: str | Path | None,
    model: Path,
    options: ScoringOptions | None = None,
    *,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    shard_bytes: int = SHARD_BYTES,
    drift_report: Path | None = None,
    log: Log | None = None,
    **fields: Any,
) -> list[Summary]:
    """Score every input on Ray Data; one Summary per input (seconds: the whole run).

    `options` (or its fields as keywords: provider, batch_size, threads, proba, class_names,
    drift, flag_ood, proba_raw) as for the local pipeline; `address`: the Ray cluster (None: a
    private local one); `workers`: scoring actors, each with `gpus_per_worker` GPUs;
    `shard_bytes`: input bytes per parse task; `drift_report` and `log` as for
    `predict_files` (the workers' drift counts are added up here).
    """
    say = log or (lambda _: None)
    t0 = time.perf_counter()
    opts = ScoringOptions.of(options, **fields)
    use = _worker_provider(opts.provider, gpus_per_worker)
    paths = expand_inputs(inputs)
    _refuse_folders(paths)
    dests = _ray_destinations(paths, out, model, drift_report)
    # fail fast on a bad model, and on a provider the driver cannot run
    driver = Predictor(model, use, 1, runtime=opts.runtime, precision=opts.precision)
    check_profile(driver, opts, say)
    plans = [plan_shards(i, p, driver.spec, shard_bytes)[1] for i, p in enumerate(paths)]
    cluster = _Cluster(address, workers, gpus_per_worker, use)
    engine = f"{use} (ray x{workers})"
    with OutputSet() as outputs:
        temps = [outputs.stage(d) for d in dests]
        report = stage_drift_report(driver, opts, drift_report, outputs)
        header = header_line(opts.proba, opts.class_names, driver.class_names, opts.flag_ood)
        with _OrderedWriter(temps, dests, [len(p) for p in plans], header) as writer:
            _run([s for plan in plans for s in plan], writer, model, cluster, opts)
        seconds = time.perf_counter() - t0
        summaries = [
            Summary(
                n,
                seconds,
                engine,
                model.name,
                str(d),
                drift_counts=c,
                runtime=f"{driver.runtime_line} (ray x{workers})",
            )
            for n, d, c in zip(writer.rows, dests, writer.drift_counts())
        ]
        if checks_drift(driver, opts):
            names = [str(p) for p in paths]
            summaries = report_drift(driver, names, summaries, report, outputs, say)
        outputs.commit_all()
    return summaries


def _ray_destinations(
    paths: list[Path], out: str | Path | None, model: Path, drift_report: Path | None
) -> list[Path]:
    """The result file of each input; refuses a pipe as input and a table format as output."""
    pipes = [p for p in paths if not is_regular(p)]
    if pipes:
        raise ConfigError(
            f"--engine ray: {pipes[0]} is not a regular file (its workers read each input "
            "again at byte offsets); use --engine local for a pipe"
        )
    dests = output_paths(paths, out)
    if drift_report is not None:
        check_outputs(paths, [*dests, Path(drift_report)], model)
    tables = [d for d in dests if table_format(d) != "csv"]
    if tables:
        raise ConfigError(
            f"-o {tables[0]}: --engine ray writes CSV results only; use --engine local for "
            "Parquet/Arrow output, or convert the CSV results with fcls-convert"
        )
    return dests


Place = tuple[int, int, int]  # (shard, part, row): where a piece goes in its file


class _OrderedWriter:
    """Writes each file's pieces in input order, as soon as the next expected one is there.

    Pieces that arrive early wait in a per-file buffer; `peak` is the most pieces ever held
    at once (1: none ever waited, as with Ray's preserve_order). A parse error is reported only
    once every piece before it in input order has arrived, so it is the first bad row, as the
    single-process path would report it.
    """

    def __init__(
        self, temps: list[Path], dests: list[Path], shards: list[int], header: bytes
    ) -> None:
        self.temps, self.dests, self.shards, self.header = temps, dests, shards, header
        self.heads: list[Place] = [(0, 0, 0)] * len(temps)
        self.waiting: list[dict[Place, dict[str, Any]]] = [{} for _ in temps]
        self.rows = [0] * len(temps)
        self.drift: list[np.ndarray | None] = [None] * len(temps)  # counts of the rows written
        self.open: dict[int, BinaryIO] = {}
        self.buffered = self.peak = 0
        self.error: tuple[int, Place, str] | None = None  # the first bad row seen so far

    def __enter__(self) -> _OrderedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for i in list(self.open):
            self._close(i)

    def add(self, piece: dict[str, Any]) -> None:
        """Take one piece (a row of the scoring stage's output); write what is now in order."""
        file = int(piece["file"])
        pos = (int(piece["shard"]), int(piece["part"]), int(piece["row"]))
        if self.error is not None and (file, pos) > self.error[:2]:
            return  # past a bad row: never written
        if piece["error"]:
            self.error = (file, pos, str(piece["error"]))
            self._drop_after(file, pos)
        self.waiting[file][pos] = piece
        self.buffered += 1
        self.peak = max(self.peak, self.buffered)
        self._drain(file)

    def first_error(self) -> DataError | None:
        """The bad row to report, once nothing before it in input order can still arrive."""
        if self.error is None:
            return None
        file, pos, fields = self.error
        if self.heads[file] == pos and all(self.complete(i) for i in range(file)):
            return _data_error(fields)
        return None

    def finish(self) -> None:
        """After the last piece: raise the first bad row, or check every file is complete."""
        if self.error is not None:
            raise _data_error(self.error[2])
        for i, dest in enumerate(self.dests):
            if not self.complete(i):
                shard, part, row = self.heads[i]
                raise WorkerError(
                    f"{dest}: Ray returned no result for shard {shard} part {part} row {row} "
                    f"of {self.shards[i]} shards; nothing was written"
                )
            if i not in self.open and self.shards[i] == 0:  # a file with a header only
                self._file(i)
            self._close(i)

    def _add_drift(self, file: int, counts: bytes) -> None:
        if counts:
            found = np.frombuffer(counts, np.int64)
            now = self.drift[file]
            self.drift[file] = found.copy() if now is None else now + found

    def drift_counts(self) -> list[tuple[int, ...] | None]:
        """Per file, the drift counts of its rows (None when drift was not checked)."""
        return [None if c is None else tuple(c.tolist()) for c in self.drift]

    def complete(self, file: int) -> bool:
        """Whether every shard of `file` has been written."""
        return self.heads[file][0] >= self.shards[file]

    def _drain(self, file: int) -> None:
        waiting = self.waiting[file]
        while (piece := waiting.get(self.heads[file])) is not None:
            if piece["error"]:
                return  # stays at the head: first_error reports it
            del waiting[self.heads[file]]
            self.buffered -= 1
            shard, part, row = self.heads[file]
            rows = int(piece["rows"])
            if rows:
                with output_errors(self.dests[file]):
                    self._file(file).write(piece["text"])
                self.rows[file] += rows
                self._add_drift(file, piece["drift"])
            row += rows
            if row >= int(piece["part_rows"]):
                shard, part, row = (shard + 1, 0, 0) if piece["last"] else (shard, part + 1, 0)
            self.heads[file] = (shard, part, row)
        if self.complete(file) and self.error is None:
            self._close(file)

    def _drop_after(self, file: int, pos: Place) -> None:
        for i in range(file, len(self.waiting)):
            for key in [k for k in self.waiting[i] if (i, k) > (file, pos)]:
                del self.waiting[i][key]
                self.buffered -= 1

    def _file(self, file: int) -> BinaryIO:
        if file not in self.open:
            with output_errors(self.dests[file]):
                self.open[file] = self.temps[file].open("wb")
                self.open[file].write(self.header)
        return self.open[file]

    def _close(self, file: int) -> None:
        f = self.open.pop(file, None)
        if f is not None:
            with output_errors(self.dests[file]):
                f.close()


def _data_error(fields: str) -> DataError:
    found = json.loads(fields)
    return DataError(found["source"], found["message"], found["line"], found["column"])


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


@dataclass(frozen=True)
class _Cluster:
    """Where and how wide the Ray run goes; `use`: the provider the actors run."""

    address: str | None
    workers: int
    gpus_per_worker: float
    use: str


def _scorer_stage(
    model_ref: Any, cluster: _Cluster, actor_cpus: float, options: ScoringOptions
) -> dict[str, Any]:
    """map_batches arguments of the scoring stage (an actor pool of `_Scorer`)."""
    gpus = cluster.gpus_per_worker
    return {
        "fn_constructor_args": ([model_ref], options),
        "concurrency": cluster.workers,
        "num_cpus": actor_cpus,
        "num_gpus": gpus or None,
        # CPU actors take whole parse outputs; Ray insists on a batch size with GPUs
        "batch_size": max(options.batch_size, GPU_BATCH_ROWS) if gpus else None,
        # a killed actor is restarted (its constructor fetches the model again) and the
        # calls it had in flight run again there; finite, so a worker that keeps dying
        # fails the run instead of retrying forever
        "max_restarts": MAX_RESTARTS,
        "max_task_retries": MAX_RETRIES,
    }


@dataclass(frozen=True)
class CpuShares:
    """The CPUs Ray is asked for: per scoring actor, per parse task; threads per actor."""

    actor: float
    parse: float
    threads: int


def node_cpus(ray: Any) -> list[float]:
    """The logical CPUs of each alive node of the cluster (0 for a node without any)."""
    return [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]


def cpu_shares(nodes: list[float], workers: int) -> CpuShares:
    """Size the actors' and the parse tasks' CPU shares against the CPUs of each node.

    Ray places a task or an actor on one node, never across nodes, and Ray Data starts the
    whole actor pool before any parse task (`_bound_waits`): however Ray spreads the actors,
    at least one node must keep a parse task's share free (`_holds`). The parse share is the
    largest of PARSE_CPUS for which an actor share of at least MIN_ACTOR_CPUS does; the
    actor share is then the largest, up to one CPU, that does.
    """
    units = [round(c * CPU_UNIT) for c in nodes if c > 0]
    low = round(MIN_ACTOR_CPUS * CPU_UNIT)
    for parse in PARSE_CPUS:
        reading = round(parse * CPU_UNIT)
        if not _holds(units, reading, low, workers):
            continue
        high = CPU_UNIT
        while low < high:  # _holds(low); it only turns false as the share grows
            mid = (low + high + 1) // 2
            low, high = (mid, high) if _holds(units, reading, mid, workers) else (low, mid - 1)
        threads = max(1, min(max(units) // CPU_UNIT, sum(units) // CPU_UNIT // workers))
        return CpuShares(low / CPU_UNIT, parse, threads)
    raise ConfigError(_refusal(nodes, workers))


def _holds(units: list[int], reading: int, share: int, workers: int) -> bool:
    """Whether nodes of `units` CPU units take `workers` actors of `share` units, and keep
    `reading` units free on some node wherever the actors go.

    A node of u units is closed to reading once it holds (u - reading) // share + 1 actors;
    the actors cannot close every such node while they number fewer than the sum of those.
    """
    fits = sum(u // share for u in units)  # nodes smaller than `reading` still take actors
    open_ = [u - reading for u in units if u >= reading]
    return workers <= fits and workers < sum(f // share + 1 for f in open_)


def _capacity(nodes: list[float]) -> int:
    """The most workers the nodes hold at the smallest shares (what `_holds` allows)."""
    units = [round(c * CPU_UNIT) for c in nodes if c > 0]
    reading, share = round(PARSE_CPUS[-1] * CPU_UNIT), round(MIN_ACTOR_CPUS * CPU_UNIT)
    fits = sum(u // share for u in units)
    closing = sum((u - reading) // share + 1 for u in units if u >= reading)
    return max(0, min(fits, closing - 1))


def _node_list(nodes: list[float]) -> str:
    """`2, 2` (the CPUs of each node, largest first), or `4 x 2, 1 x 1` for many nodes."""
    cpus = sorted(nodes, reverse=True)
    if len(cpus) <= 8:
        return ", ".join(f"{c:g}" for c in cpus) or "no node alive"
    counts = {c: cpus.count(c) for c in cpus}
    return ", ".join(f"{n} x {c:g}" for c, n in counts.items())


def _refusal(nodes: list[float], workers: int) -> str:
    """Why `workers` actors cannot be placed: the CPUs seen and the CPUs asked."""
    return (
        f"--workers {workers}: the Ray cluster has {sum(nodes):g} CPUs in all (per node: "
        f"{_node_list(nodes)}); a worker asks at least {MIN_ACTOR_CPUS:g} CPUs "
        f"({workers * MIN_ACTOR_CPUS:g} for {workers}) plus {PARSE_CPUS[-1]:g} for reading, "
        f"each on one node, so it holds at most {_capacity(nodes)} workers: use fewer "
        "--workers or a larger cluster"
    )


def _dataset(
    ray: Any,
    shards: list[Shard],
    model_ref: Any,
    cluster: _Cluster,
    shares: CpuShares,
    options: ScoringOptions,
) -> Any:
    """The Ray Data pipeline: shards -> parse tasks -> scoring actors, in input order."""
    threads = options.threads or shares.threads
    actor_options = replace(options, provider=cluster.use, threads=threads)
    with warnings.catch_warnings():
        # max_restarts goes through ray_remote_args, deprecated in favour of names that
        # do not cover it yet
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = (
            ray.data.from_items([s.__dict__ for s in shards])
            .map_batches(
                _parse,
                batch_size=1,
                num_cpus=shares.parse,
                max_retries=MAX_RETRIES,  # a killed parse worker: the task runs again
            )
            .map_batches(_Scorer, **_scorer_stage(model_ref, cluster, shares.actor, actor_options))
        )
    # Results come back in input order: Ray holds early shards in its object store (where
    # its backpressure applies), so the driver's buffer stays one piece whatever the input,
    # a killed worker's redone shard included, at no throughput cost (bench/README.md)
    context = ds.context  # this dataset's copy of the context
    context.execution_options.preserve_order = True
    _bound_waits(context)
    return ds


def _bound_waits(context: Any) -> None:
    """Never wait forever: the actors are all started before any parse task (which the
    sizing relies on) within ACTOR_START_S, and a run with no block moving for STALL_S
    fails. Ray's own variables for these, set by the user, still win."""
    if "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S" not in os.environ:
        context.wait_for_min_actors_s = ACTOR_START_S
    if "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S" not in os.environ:
        context.execution_no_progress_timeout_s = STALL_S


def _run(
    shards: list[Shard],
    writer: _OrderedWriter,
    model: Path,
    cluster: _Cluster,
    options: ScoringOptions,
) -> None:
    """Run the Ray pipeline, handing each result piece to `writer` as it arrives."""
    ray = _init_ray(cluster.address)
    _check_gpus(ray.cluster_resources(), cluster.workers, cluster.gpus_per_worker)
    shares = cpu_shares(node_cpus(ray), cluster.workers)  # refuses before any work starts
    # held until the run ends: a restarted actor fetches the model bytes again
    model_ref = ray.put(model.read_bytes())
    ds = _dataset(ray, shards, model_ref, cluster, shares, options)
    try:
        with warnings.catch_warnings():
            # more --workers than shards is fine (the spare actors idle); Ray Data's advice
            # about it names its own API, not anything the user can act on
            warnings.filterwarnings("ignore", "The minimum number of concurrent actors")
            _stream(ds, writer)
    except FclsError:
        raise
    except Exception as e:
        failure = _worker_error(ray, e, cluster, shares, ds.context)
        if failure is None:
            raise
        raise failure from None
    finally:
        del model_ref
    writer.finish()


def _stream(ds: Any, writer: _OrderedWriter) -> None:
    """Hand each result piece to `writer` as it arrives; stop at the first bad row."""
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        for i in range(len(batch["file"])):
            writer.add({k: v[i] for k, v in batch.items()})
        if (error := writer.first_error()) is not None:
            raise error


def _worker_error(
    ray: Any, error: Exception, cluster: _Cluster, shares: CpuShares, context: Any
) -> WorkerError | None:
    """One line for a run Ray could not finish; None for an error that is not Ray's."""
    # Ray Data's no-progress guard (absent from older Ray)
    stalled = getattr(getattr(ray.data, "exceptions", None), "ExecutionTimeoutError", ())
    asked = f"{cluster.workers} workers of {shares.actor:g} CPUs"
    if isinstance(error, ray.exceptions.GetTimeoutError):  # the actor pool could not start
        return WorkerError(
            f"Ray could not start {asked} within {context.wait_for_min_actors_s:g} s (the "
            f"cluster's nodes now have {_node_list(node_cpus(ray))} CPUs); nothing was written"
        )
    if isinstance(error, stalled):
        return WorkerError(
            f"Ray moved no data for {context.execution_no_progress_timeout_s:g} s: work it "
            f"could not place, or a stuck worker (the cluster's nodes now have "
            f"{_node_list(node_cpus(ray))} CPUs for {asked} and reading tasks of "
            f"{shares.parse:g}); nothing was written"
        )
    if isinstance(error, ray.exceptions.RayError):
        return WorkerError(
            f"Ray could not finish the run: {_first_line(error)} (a lost worker is restarted "
            f"{MAX_RESTARTS} times and its task retried {MAX_RETRIES} times; nothing was written)"
        )
    return None


def _first_line(error: BaseException) -> str:
    """The gist of a Ray error (its own message is a multi-line traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = [line for line in lines if "Error" in line and not line.startswith("File ")]
    return (cause[-1] if cause else lines[0] if lines else type(error).__name__)[:300]
