"""`Predictor`: one onnxruntime session (CUDA or CPU) that turns uint8 pixel rows into labels."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..common.drift import PROFILE_KEY, Profile
from ..common.errors import ModelError, ProviderError
from ..common.modelfile import VARIANT_TAGS, check_onnx
from ..common.numeric import softmax
from ..common.spec import N_PIXELS
from ..common.system import available_cpus
from .session import (
    active_provider,
    make_session,
    ort_conflict,
    providers_for,
)

# The smallest call a spread over replica sessions makes near the end of a block
TAIL_ROWS = 8


class Claims:
    """Contiguous row ranges of `rows` for `takers` sessions, handed out one `take` at a time
    (thread-safe): `batch_size` rows while plenty remain, then the remainder divided by the
    takers, never under `smallest` rows (except the very last range)."""

    def __init__(self, rows: int, batch_size: int, takers: int, smallest: int) -> None:
        self.rows, self.batch_size, self.takers, self.smallest = rows, batch_size, takers, smallest
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> slice | None:
        """The next range, or None when every row has been handed out."""
        with self._lock:
            start, left = self._next, self.rows - self._next
            if left <= 0:
                return None
            size = min(self.batch_size, max(self.smallest, -(-left // self.takers)))
            self._next = start + min(size, left)
            return slice(start, self._next)


class Spread:
    """Rows being run by the replica sessions, each session's thread taking the next rows as
    soon as it is free rather than a fixed share: a thread the reader or writer delays leaves
    its rows to the others instead of holding them at a barrier, and a thread done with these
    rows goes on to the next `Spread` started (figures: bench/README.md)."""

    def __init__(self, feed: np.ndarray, want: str, input_name: str, claims: Claims) -> None:
        self.feed, self.want, self.input_name, self.claims = feed, want, input_name, claims
        self.tasks: list[Future[None]] = []  # one per session thread
        self._outs: dict[int, np.ndarray] = {}
        self._failed = threading.Event()

    def work(self, session: ort.InferenceSession) -> None:
        """Run `session` on claimed rows until none are left or another task failed."""
        while not self._failed.is_set() and (rows := self.claims.take()) is not None:
            try:
                feed = {self.input_name: self.feed[rows]}
                self._outs[rows.start] = session.run([self.want], feed)[0]
            except BaseException:
                self._failed.set()  # the others stop after their current call
                raise

    def result(self) -> np.ndarray:
        """The output for every row, in order, once every task is done; the first failure
        of a task is raised (after all of them stopped)."""
        wait(self.tasks)
        for task in self.tasks:
            task.result()
        return np.concatenate([self._outs[start] for start in sorted(self._outs)])


def check_sibling(path: Path, meta: dict[str, str]) -> None:
    """Refuse a variant (`m.int8.onnx`) exported from another checkpoint than its fp32 `m.onnx`."""
    tag = VARIANT_TAGS.get(meta.get("variant", ""))
    if tag is None or not path.name.endswith(f".{tag}.onnx"):
        return
    sibling = path.with_name(path.name.removesuffix(f".{tag}.onnx") + ".onnx")
    if not sibling.is_file():
        return
    try:
        theirs = make_session(sibling, optimization="none")
    except ModelError:
        return  # an unreadable sibling says nothing about this model
    ours = meta.get("source_sha256")
    fp32 = theirs.get_modelmeta().custom_metadata_map.get("source_sha256")
    if ours and fp32 and ours != fp32:
        raise ModelError(
            f"{path}: this {meta['variant']} model was exported from checkpoint sha256 "
            f"{ours[:12]}, its fp32 sibling {sibling.name} from {fp32[:12]}: a stale variant; "
            "re-export both with fcls-export (it removes stale variants)"
        )


class Predictor:
    """Labels and probabilities for (n, 1024) uint8 rows from an fcls ONNX model.

    `model_path`: an ONNX file from fcls-export (uint8 [batch, 1024] in) or a float
    [batch, 1, 32, 32] graph; `provider`: auto (CUDA when usable, else CPU), cuda or cpu;
    `threads`: intra-op threads (default: the CPUs this process may use); `spinning`: keep idle
    threads spinning (lower batch-1 latency, steals CPU from other threads); `io_binding`: bind
    inputs/outputs explicitly (default: on CUDA only).

    Raises ModelError (missing, unloadable or wrong-interface model, stale variant) and
    ProviderError (cuda asked for but unusable, or onnxruntime and onnxruntime-gpu both installed).
    """

    def __init__(
        self,
        model_path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        spinning: bool = True,
        io_binding: bool | None = None,
    ) -> None:
        self.path = Path(model_path)
        check_onnx(self.path)  # missing, a directory or a torch checkpoint: say what to do
        self.threads = threads or available_cpus()
        # Idle intra-op threads spin between calls: best latency when the session has the CPUs
        # to itself, but in the CSV pipeline they take CPU from the reader and writer threads,
        # so predict_csv turns it off (figures: bench/README.md).
        self.spinning = spinning
        self.session = self._session(provider, self.threads)
        self.provider = active_provider(self.session)
        # IO binding (None: on CUDA only) keeps the outputs not asked for on the device;
        # on CPU it is the same path with outputs bound to host memory, so tests cover it
        self.io_binding = self.provider == "cuda" if io_binding is None else io_binding
        self._inspect()
        # int8 graphs: one single-threaded session per CPU, each bound to a pool thread that
        # takes rows as it frees up (`Spread`). Their small integer kernels scale better across
        # sessions than across intra-op threads (fp32 loses, so it keeps one session;
        # figures: bench/README.md).
        self.replicas = [self.session]
        if self.provider == "cpu" and self.threads > 1 and self._variant() == "int8":
            # small batches (latency) keep the multi-threaded session
            self.replicas = [self._session("cpu", 1) for _ in range(self.threads)]
            free: queue.SimpleQueue[int] = queue.SimpleQueue()
            for k in range(len(self.replicas)):
                free.put(k)
            self._bound = threading.local()
            self._pool = ThreadPoolExecutor(
                len(self.replicas), "fcls-ort", initializer=self._bind, initargs=(free,)
            )

    def _variant(self) -> str:
        return self.session.get_modelmeta().custom_metadata_map.get("variant", "")

    def _session(self, provider: str, threads: int) -> ort.InferenceSession:
        session = make_session(
            self.path, providers_for(provider), threads=threads, spinning=self.spinning
        )
        if provider == "cuda" and active_provider(session) != "cuda":
            conflict = ort_conflict()
            raise ProviderError(
                f"--provider cuda: the session fell back to {session.get_providers()[0]} "
                + (f"({conflict})" if conflict else "(no usable GPU); use --provider cpu or auto")
            )
        return session

    def _inspect(self) -> None:
        """Accept the uint8 [batch, 1024] graph fcls-export writes, or float32 [batch, 1, 32, 32]."""
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input, the model has {len(inputs)}")
        inp = inputs[0]
        shape = [d if isinstance(d, int) else "batch" for d in inp.shape]
        self.input_name = inp.name
        if inp.type == "tensor(uint8)" and shape[1:] == [N_PIXELS]:
            self.float_input = False
        elif inp.type == "tensor(float)" and shape[1:] == [1, 32, 32]:
            self.float_input = True
        else:
            raise ModelError(
                f"{self.path}: input {inp.name} {inp.type} {shape} does not take rows of "
                f"{N_PIXELS} pixels (expected uint8 [batch, 1024] or float [batch, 1, 32, 32])"
            )
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.logits_name = "logits" if "logits" in outputs else next(iter(outputs))
        self.label_name = "label" if "label" in outputs else None
        n_classes = outputs[self.logits_name].shape[-1]
        meta = self.session.get_modelmeta().custom_metadata_map
        names = json.loads(meta["class_names"]) if "class_names" in meta else None
        self.class_names: list[str] = names or [str(i) for i in range(int(n_classes))]
        check_sibling(self.path, meta)
        self.profile, self.profile_note = _read_profile(meta)

    @property
    def temperature(self) -> float:
        """What calibrated probabilities divide the logits by (1.0 without a profile)."""
        return self.profile.temperature if self.profile is not None else 1.0

    def _feed(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != N_PIXELS:
            raise ValueError(
                f"expected (n, {N_PIXELS}) uint8 pixels, got {pixels.dtype} {pixels.shape}"
            )
        if self.float_input:
            return pixels.reshape(-1, 1, 32, 32).astype(np.float32)
        return np.ascontiguousarray(pixels)

    def _fetch(self, pixels: np.ndarray, want: str) -> np.ndarray:
        """One output of the graph for (n >= 1, 1024) uint8 rows."""
        feed = self._feed(pixels)
        if self.io_binding:
            return self._run_bound(feed, want, self.provider)
        if len(self.replicas) > 1 and len(feed) >= 2 * len(self.replicas):
            share = -(-len(feed) // len(self.replicas))  # one call per session
            return self._spread(feed, share, want, smallest=share).result()
        return self.session.run([want], {self.input_name: feed})[0]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Raw logits (n, classes) float32 for (n, 1024) uint8 rows."""
        if len(pixels) == 0:
            self._feed(pixels)  # the same refusal of a wrong array as a non-empty one
            return np.empty((0, len(self.class_names)), np.float32)
        return self._fetch(pixels, self.logits_name)

    def probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """softmax of `logits`, divided first by the profile's temperature when `calibrated`."""
        return softmax(logits, self.temperature if calibrated else 1.0)

    def run(
        self, pixels: np.ndarray, proba: bool = False, calibrated: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (n,) int64 and, with `proba`, probabilities (n, classes) float32, calibrated
        by the model's temperature unless `calibrated` is False."""
        if len(pixels) == 0 or proba or self.label_name is None:
            logits = self.logits(pixels)
            labels = logits.argmax(axis=1).astype(np.int64)
            return labels, self.probabilities(logits, calibrated) if proba else None
        # labels only: the argmax in the graph, so only n integers come back
        return self._fetch(pixels, self.label_name).astype(np.int64, copy=False), None

    def run_batches(
        self, pixels: np.ndarray, batch_size: int, proba: bool = False, calibrated: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`run` over `batch_size` rows at a time (every row is scored alone, so the result
        does not depend on the batch size): labels (n,) and, with `proba`, (n, classes)."""
        return self.submit_batches(pixels, batch_size, proba, calibrated)()

    def submit_batches(
        self, pixels: np.ndarray, batch_size: int, proba: bool = False, calibrated: bool = True
    ) -> Callable[[], tuple[np.ndarray, np.ndarray | None]]:
        """`run_batches` started: what it returns waits for the labels and probabilities.
        With replica sessions (`asynchronous`) the model runs meanwhile on their threads, so
        a caller can start the next rows before taking these; otherwise it has already run."""
        if len(pixels) == 0 or proba or self.label_name is None:
            later = self.submit_logits(pixels, batch_size)

            def from_logits() -> tuple[np.ndarray, np.ndarray | None]:
                logits = later()
                labels = logits.argmax(axis=1).astype(np.int64)
                return labels, self.probabilities(logits, calibrated) if proba else None

            return from_logits
        labels = self._submit(pixels, batch_size, self.label_name)
        return lambda: (labels().astype(np.int64, copy=False), None)

    def logits_batches(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        """`logits` over `batch_size` rows at a time: (n, classes) float32."""
        return self.submit_logits(pixels, batch_size)()

    def submit_logits(self, pixels: np.ndarray, batch_size: int) -> Callable[[], np.ndarray]:
        """`logits_batches` started (see `submit_batches`)."""
        if len(pixels) == 0:
            empty = self.logits(pixels)
            return lambda: empty
        return self._submit(pixels, batch_size, self.logits_name)

    @property
    def asynchronous(self) -> bool:
        """Whether `submit_batches` returns while the model is still running."""
        return len(self.replicas) > 1

    def _submit(self, pixels: np.ndarray, batch_size: int, want: str) -> Callable[[], np.ndarray]:
        """One output for (n >= 1, 1024) rows, `batch_size` rows per session call."""
        if len(self.replicas) == 1 or len(pixels) <= batch_size:
            outs = [
                self._fetch(pixels[i : i + batch_size], want)
                for i in range(0, len(pixels), batch_size)
            ]
            out = np.concatenate(outs) if len(outs) > 1 else outs[0]
            return lambda: out
        return self._spread(self._feed(pixels), batch_size, want, TAIL_ROWS).result

    def _spread(self, feed: np.ndarray, batch_size: int, want: str, smallest: int) -> Spread:
        """Start the replica sessions on `feed`, one task per session thread (`Spread`)."""
        spread = Spread(
            feed, want, self.input_name, Claims(len(feed), batch_size, len(self.replicas), smallest)
        )
        spread.tasks = [self._pool.submit(self._work, spread) for _ in self.replicas]
        return spread

    def _work(self, spread: Spread) -> None:
        spread.work(self._bound.session)

    def _bind(self, free: queue.SimpleQueue[int]) -> None:
        """Give the pool thread that runs this its own replica session, for good."""
        self._bound.session = self.replicas[free.get_nowait()]

    def _run_bound(self, feed: np.ndarray, want: str, device: str) -> np.ndarray:
        """IO binding: uint8 pixels go in, only the wanted output comes back to host; the
        others stay on `device` ('cuda'; 'cpu' runs the same path on the CPU provider)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, feed)
        names = [o.name for o in self.session.get_outputs()]
        for name in names:
            binding.bind_output(name, "cpu" if name == want else device)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[names.index(want)].numpy()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """(n,) int64 labels for (n, 1024) uint8 rows."""
        return self.run(pixels)[0]

    def predict_proba(self, pixels: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """(n, classes) float32 probabilities for (n, 1024) uint8 rows: softmax of the logits
        divided by the model's calibration temperature (not divided: `calibrated=False`)."""
        return self.probabilities(self.logits(pixels), calibrated)


def _read_profile(meta: dict[str, str]) -> tuple[Profile | None, str]:
    """The model's reference profile, or None and why there is none."""
    text = meta.get(PROFILE_KEY)
    if text is None:
        return None, (
            "it carries no reference profile (exported by an older fcls, or without real "
            "data); re-export it with fcls-export"
        )
    try:
        return Profile.from_json(text), ""
    except ValueError as e:
        return None, f"its reference profile cannot be used: {e}"
