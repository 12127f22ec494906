"""`Predictor`: labels and probabilities from an ONNX model (CUDA or CPU) for uint8 pixel rows.

Model loading and its interface live in `_model`, the int8 replica sessions in `_replicas`;
this module does the scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..common.errors import ConfigError, ProviderError
from ..common.modelfile import check_onnx
from ..common.numeric import softmax
from ..common.spec import ImageSpec
from ..common.system import available_cpus
from ._model import check_sibling, open_session, read_interface, read_profile
from ._replicas import TAIL_ROWS, Claims, ReplicaPool, Runner, Spread
from .runtimes import Choice, check_bf16_passed, check_cpu_bf16, compile_openvino, import_openvino
from .session import active_provider, make_session


class Predictor:
    """Labels and probabilities for (n, P) uint8 rows (P = H x W x C, HWC) from an ONNX model.

    `model_path`: an ONNX file from fcls-export (uint8 [batch, P] in, its `ImageSpec` in the
    metadata) or a float [batch, C, H, W] graph; `provider`: auto (CUDA when usable, else CPU), cuda or cpu;
    `threads`: intra-op threads (default: the CPUs this process may use); `spinning`: keep idle
    threads spinning (lower batch-1 latency, steals CPU from other threads); `io_binding`: bind
    inputs/outputs explicitly (default: on CUDA only); `runtime`: onnxruntime or openvino (the
    `openvino` extra; CPU only); `precision`: fp32, or bf16 (openvino, on a CPU with native
    bf16, for a model whose bf16 check passed at export; `bf16_check=False` skips that last
    condition, for the export gate itself); `batch_invariant` (openvino): pad calls of a few
    rows so that a row's result does not depend on the rows scored with it, as fcls-infer and
    the Ray engine do (their bytes must not depend on how rows are cut); off, calls of a few
    rows keep their latency and may differ from larger ones in the last bits.

    Raises ModelError (missing, unloadable or wrong-interface model, stale variant, no passed
    bf16 check), ProviderError (cuda asked for but unusable, or onnxruntime and onnxruntime-gpu
    both installed, or with openvino), ConfigError (a runtime/precision that cannot run here)
    and MissingExtraError (openvino not installed).
    """

    def __init__(
        self,
        model_path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        spinning: bool = True,
        io_binding: bool | None = None,
        runtime: str = "onnxruntime",
        precision: str = "fp32",
        *,
        bf16_check: bool = True,
        batch_invariant: bool = False,
    ) -> None:
        self.path = Path(model_path)
        self.choice = Choice(runtime, precision)  # names checked before any file is read
        check_onnx(self.path)  # missing, a directory or a torch checkpoint: say what to do
        self.threads = threads or available_cpus()
        # Idle intra-op threads spin between calls: best latency when the session has the CPUs
        # to itself, but in the CSV pipeline they take CPU from the reader and writer threads,
        # so predict_csv turns it off (figures: bench/README.md).
        self.spinning = spinning
        self.batch_invariant = batch_invariant
        self.session = self._open(provider)
        self.provider = active_provider(self.session) if runtime == "onnxruntime" else "cpu"
        # IO binding (None: on CUDA only) keeps the outputs not asked for on the device;
        # on CPU it is the same path with outputs bound to host memory, so tests cover it
        self.io_binding = self.provider == "cuda" if io_binding is None else io_binding
        self.io_binding = self.io_binding and runtime == "onnxruntime"
        self.interface = read_interface(self.path, self.session)
        meta = self.session.get_modelmeta().custom_metadata_map
        check_sibling(self.path, meta)
        self.profile, self.profile_note = read_profile(meta)
        self.variant = meta.get("variant", "")
        if precision == "bf16":
            self._check_bf16(meta, bf16_check)
        self._pool: ReplicaPool | None = None
        self._runner, self.runtime_line = self._runners()

    def _open(self, provider: str) -> ort.InferenceSession:
        """The onnxruntime session that scores (onnxruntime) or only tells the model's
        interface and metadata (openvino: unoptimized, no arena)."""
        if self.choice.runtime == "onnxruntime":
            return open_session(self.path, provider, self.threads, self.spinning)
        if provider == "cuda":
            raise ProviderError(
                "--runtime openvino runs on the CPU: use --provider cpu or auto, or "
                "--runtime onnxruntime for CUDA"
            )
        import_openvino()  # a missing extra is said before the model is read
        return make_session(self.path, optimization="none", arena=False)

    def _check_bf16(self, meta: dict[str, str], gated: bool) -> None:
        if self.variant in ("int8", "fp16"):
            raise ConfigError(
                f"{self.path}: --precision bf16 runs the fp32 model file, this is the "
                f"{self.variant} variant; give the fp32 file (without .{self.variant})"
            )
        check_cpu_bf16()
        if gated:
            check_bf16_passed(self.path, meta)

    def _runners(self) -> tuple[Runner, str]:
        """The runner of a single call, with the replica pool where one pays, and the line
        that says what runs the model."""
        name = self.interface.input_name
        if self.choice.runtime == "openvino":
            # one single-threaded stream per CPU, as onnxruntime's int8 replicas: the parse
            # and writer threads then delay one stream, not a barrier of all the threads
            # (figures: bench/README.md)
            compiled = compile_openvino(
                self.path, self.choice.precision, self.threads, self.threads, self.batch_invariant
            )
            if len(compiled.runners) > 1:
                self._pool = ReplicaPool(compiled.runners)
            line = compiled.description
            if self.variant == "int8":
                line = line.replace(" CPU f32,", " CPU int8 (f32 elsewhere),")
            return compiled.single, line
        line = f"onnxruntime {ort.__version__} {self.session.get_providers()[0]} fp32"
        if self.variant == "int8":
            line = line.replace(" fp32", " int8")
        # int8 graphs: one single-threaded session per CPU (`ReplicaPool`); fp32 loses that
        # way, so it keeps one session, and so do small batches (latency).
        if self.provider == "cpu" and self.threads > 1 and self.variant == "int8":
            sessions = [
                open_session(self.path, "cpu", 1, self.spinning) for _ in range(self.threads)
            ]
            self._pool = ReplicaPool([_ort_runner(s, name) for s in sessions])
            line += f", {self.threads} sessions x 1 thread"
        return _ort_runner(self.session, name), line

    @property
    def spec(self) -> ImageSpec:
        """The images and classes the model takes: recorded by fcls-export, else read from
        the graph's input."""
        return self.interface.spec

    @property
    def notice(self) -> str | None:
        """One line on what scoring assumes of a model fcls-export did not make (a float input
        fed raw 0..255 pixels), for the command to say once; None for fcls's own models."""
        return self.interface.notice

    @property
    def class_names(self) -> list[str]:
        return list(self.interface.spec.class_names)

    @property
    def replicas(self) -> list[Runner]:
        """The runners rows are spread over (one unless int8 on several CPUs)."""
        return self._pool.runners if self._pool is not None else [self._runner]

    def close(self) -> None:
        """End the replica sessions' threads (idempotent); the predictor is unusable after."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def temperature(self) -> float:
        """What calibrated probabilities divide the logits by (1.0 without a profile)."""
        return self.profile.temperature if self.profile is not None else 1.0

    def _feed(self, pixels: np.ndarray) -> np.ndarray:
        return self.interface.feed(pixels)

    def _fetch(self, pixels: np.ndarray, want: str) -> np.ndarray:
        """One output of the graph for (n >= 1, P) uint8 rows."""
        feed = self._feed(pixels)
        if self.io_binding:
            return self._run_bound(feed, want, self.provider)
        if self._pool is not None and len(feed) >= 2 * len(self._pool):
            share = -(-len(feed) // len(self._pool))  # one call per session
            return self._pool.spread(feed, share, want, smallest=share).result()
        return self._runner(want, feed)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Raw logits (n, classes) float32 for (n, P) uint8 rows."""
        if len(pixels) == 0:
            self._feed(pixels)  # the same refusal of a wrong array as a non-empty one
            return np.empty((0, len(self.class_names)), np.float32)
        return self._fetch(pixels, self.interface.logits_name)

    def probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """softmax of `logits`, divided first by the profile's temperature when `calibrated`."""
        return softmax(logits, self.temperature if calibrated else 1.0)

    def run(
        self, pixels: np.ndarray, proba: bool = False, calibrated: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (n,) int64 and, with `proba`, probabilities (n, classes) float32, calibrated
        by the model's temperature unless `calibrated` is False."""
        if len(pixels) == 0 or proba or self.interface.label_name is None:
            logits = self.logits(pixels)
            labels = logits.argmax(axis=1).astype(np.int64)
            return labels, self.probabilities(logits, calibrated) if proba else None
        # labels only: the argmax in the graph, so only n integers come back
        return self._fetch(pixels, self.interface.label_name).astype(np.int64, copy=False), None

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
        if len(pixels) == 0 or proba or self.interface.label_name is None:
            later = self.submit_logits(pixels, batch_size)

            def from_logits() -> tuple[np.ndarray, np.ndarray | None]:
                logits = later()
                labels = logits.argmax(axis=1).astype(np.int64)
                return labels, self.probabilities(logits, calibrated) if proba else None

            return from_logits
        labels = self._submit(pixels, batch_size, self.interface.label_name)
        return lambda: (labels().astype(np.int64, copy=False), None)

    def logits_batches(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        """`logits` over `batch_size` rows at a time: (n, classes) float32."""
        return self.submit_logits(pixels, batch_size)()

    def submit_logits(self, pixels: np.ndarray, batch_size: int) -> Callable[[], np.ndarray]:
        """`logits_batches` started (see `submit_batches`)."""
        if len(pixels) == 0:
            empty = self.logits(pixels)
            return lambda: empty
        return self._submit(pixels, batch_size, self.interface.logits_name)

    @property
    def asynchronous(self) -> bool:
        """Whether `submit_batches` returns while the model is still running."""
        return self._pool is not None

    def _submit(self, pixels: np.ndarray, batch_size: int, want: str) -> Callable[[], np.ndarray]:
        """One output for (n >= 1, P) rows, `batch_size` rows per session call."""
        if self._pool is None or len(pixels) <= batch_size:
            outs = [
                self._fetch(pixels[i : i + batch_size], want)
                for i in range(0, len(pixels), batch_size)
            ]
            out = np.concatenate(outs) if len(outs) > 1 else outs[0]
            return lambda: out
        return self._pool.spread(self._feed(pixels), batch_size, want, TAIL_ROWS).result

    def _run_bound(self, feed: np.ndarray, want: str, device: str) -> np.ndarray:
        """IO binding: uint8 pixels go in, only the wanted output comes back to host; the
        others stay on `device` ('cuda'; 'cpu' runs the same path on the CPU provider)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.interface.input_name, feed)
        names = [o.name for o in self.session.get_outputs()]
        for name in names:
            binding.bind_output(name, "cpu" if name == want else device)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[names.index(want)].numpy()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """(n,) int64 labels for (n, P) uint8 rows."""
        return self.run(pixels)[0]

    def predict_proba(self, pixels: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """(n, classes) float32 probabilities for (n, P) uint8 rows: softmax of the logits
        divided by the model's calibration temperature (not divided: `calibrated=False`)."""
        return self.probabilities(self.logits(pixels), calibrated)


def _ort_runner(session: ort.InferenceSession, input_name: str) -> Runner:
    def run(want: str, rows: np.ndarray) -> np.ndarray:
        return session.run([want], {input_name: rows})[0]

    return run


__all__ = ["TAIL_ROWS", "Claims", "Predictor", "Spread"]
