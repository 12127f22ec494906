"""A user's own ONNX classifier behind fcls's front end: uint8 pixel rows in, logits and the
argmax label out, so that every fcls command takes it as one of fcls's own models.

The wrapped graph is the user's graph (names prefixed `user/`) between a front end that casts
the (batch, H*W*C) uint8 HWC rows to float, lays them out as the model's input ([N, C, H, W],
or kept flat for [N, H*W*C]) and applies (x * scale - mean) / std per channel, and a tail that
names its first output `logits` and adds `label` = argmax. The reference every gate compares
against is the original file run by onnxruntime on the same rows, transformed in numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fcls.infer.common.errors import ConfigError, DataError, ModelError
from fcls.infer.common.labels import classes_of
from fcls.infer.common.spec import (
    ImageSpec,
    SpecError,
    geometry_for,
    number_names,
    parse_image_size,
)
from fcls.infer.common.system import file_sha256
from fcls.infer.engine.session import make_session
from fcls.infer.formats.sources import input_kind, read_pixels, read_train, source_digest
from fcls.train.config import TrainConfig

from .config import ExportConfig, WrapConfig
from .graph import INPUT, OUTPUTS

if TYPE_CHECKING:
    from .api import ExportResult

PREFIX = "user/"
EXPORTER = "onnx.compose"
BATCH = "batch"
Log = Callable[[str], None]


@dataclass(frozen=True)
class UserInput:
    """The user graph's input as fcls reads it: its name, shape and dtype."""

    name: str
    dims: tuple[int | str, ...]  # the batch first; a str is a symbolic dimension
    dtype: str

    def describe(self) -> str:
        return f"input {self.name} {self.dtype} [{', '.join(map(str, self.dims))}]"

    @property
    def fixed_batch(self) -> int | None:
        """The batch the graph was exported for, when it is not symbolic."""
        first = self.dims[0] if self.dims else None
        return first if isinstance(first, int) and first > 0 else None


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def user_input(path: Path, model: onnx.ModelProto) -> UserInput:
    """The one real input of the user's graph (initializers listed as inputs do not count)."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    if len(inputs) != 1:
        raise ModelError(f"{path}: fcls wraps a graph with one input; this one has {len(inputs)}")
    value = inputs[0]
    elem = value.type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(elem).name if elem else "unknown"
    return UserInput(value.name, _dims(value), dtype)


def _geometry(path: Path, found: UserInput, image_size: str | None) -> tuple[int, int, int]:
    """(H, W, C) from --image-size, else from the input shape; refused where they disagree.
    Symbolic image dimensions take their size from --image-size."""
    shape = found.describe()
    accepted = "fcls wraps float32 [N, C, H, W] or [N, H*W*C] inputs"
    if found.dtype != "float32" or len(found.dims) not in (2, 4):
        raise ModelError(f"{path}: {shape}: {accepted}")
    inner = [d if isinstance(d, int) and d > 0 else None for d in found.dims[1:]]
    fixed = [d for d in inner if d is not None]
    try:
        if image_size is not None:
            h, w, c = parse_image_size(image_size)
        elif len(fixed) < len(inner):
            raise ModelError(f"{path}: {shape}: give its image size with --image-size HxW[xC]")
        elif len(fixed) == 3:
            c, h, w = fixed
        else:
            h, w, c = geometry_for(fixed[0])
    except SpecError as e:
        raise ModelError(f"{path}: {shape}: {e}") from None
    want = [c, h, w] if len(inner) == 3 else [h * w * c]
    if any(d is not None and d != v for d, v in zip(inner, want)):
        raise ModelError(
            f"{path}: {shape} does not take --image-size {image_size} images "
            f"(expected [N, {', '.join(map(str, want))}])"
        )
    return h, w, c


def _classes(
    path: Path, data: Path, k: int, size: tuple[int, int, int], rows: int
) -> tuple[str, ...]:
    """The class names of `data`'s labels (numbers 0..K-1 for unlabelled rows); their count
    must be the model's K. A folder's images are read at the model's `size` (H, W, C)."""
    n_pixels = size[0] * size[1] * size[2]
    image_size = "x".join(map(str, size))
    if input_kind(data) == "unlabelled":
        # the row size, said early (a folder's images are converted to it)
        read_pixels(data, "unlabelled", limit=1, pixels=ImageSpec(*size, number_names(k)))
        return number_names(k)
    pixels, raw = read_train(data, limit=rows, image_size=image_size)
    if pixels.shape[1] != n_pixels:
        raise DataError(str(data), f"{pixels.shape[1]} pixel columns; {path} takes {n_pixels}")
    try:
        names, _ = classes_of(raw)
    except SpecError as e:
        raise DataError(str(data), str(e)) from None
    if len(names) != k:
        raise ModelError(
            f"{path}: its first output scores {k} classes, the labels of {data} (first "
            f"{len(raw)} rows) name {len(names)}: {', '.join(names[:5])}"
            f"{' ...' if len(names) > 5 else ''}"
        )
    return names


def _n_classes(path: Path, model: onnx.ModelProto) -> int:
    """K of the first output, which must be float32 [N, K] scores."""
    out = model.graph.output[0]
    dims = _dims(out)
    elem = out.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT or len(dims) != 2 or not isinstance(dims[1], int) or dims[1] < 2:
        shown = f"{helper.tensor_dtype_to_np_dtype(elem).name if elem else '?'} {list(dims)}"
        raise ModelError(
            f"{path}: first output {out.name} is {shown}: fcls wraps float32 [N, K] scores"
        )
    return dims[1]


class OnnxSource:
    """A user's ONNX classifier as an export source (see `fcls.export.api.Source`)."""

    exporters: tuple[str, ...] = (EXPORTER,)
    recorded: dict[str, Any] | None = None  # the gates read --data, which wrapping requires

    def __init__(self, path: Path, data: Path, wrap: WrapConfig, rows: int) -> None:
        self.path, self.data, self.wrap = path, data, wrap
        try:
            self.model = onnx.load(str(path))
        except Exception as e:  # protobuf's decode errors and OSError: one line
            raise ModelError(f"{path}: not a readable ONNX model ({str(e)[:160]})") from None
        self.input = user_input(path, self.model)
        h, w, c = _geometry(path, self.input, wrap.image_size)
        k = _n_classes(path, self.model)
        self.spec = ImageSpec(h, w, c, _classes(path, data, k, (h, w, c), rows))
        self.mean, self.std = wrap.per_channel(c)
        self.rows = rows
        self._session = make_session(path, optimization="all")
        self.wrapped = compose(self.model, self.input, self.spec, self.constants())
        self._probe(self.input.fixed_batch or 1)  # before any row is read for the gates

    def transform(self, pixels: np.ndarray) -> np.ndarray:
        """What the user's graph takes for (N, P) uint8 rows: the wrapper's front end in numpy."""
        s = self.spec
        x = pixels.astype(np.float32)
        if len(self.input.dims) == 4:
            x = x.reshape(-1, s.height, s.width, s.channels).transpose(0, 3, 1, 2)
        scale, mean, std = self.constants()
        return np.ascontiguousarray((x * scale - mean) / std, np.float32)

    def constants(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """scale, mean and std as float32 arrays that broadcast over the user's input: the
        same values in the numpy reference and in the graph's front end."""
        rank, s = len(self.input.dims), self.spec

        def shaped(values: tuple[float, ...]) -> np.ndarray:
            v = np.asarray(values, np.float32)
            if rank == 4:
                return v.reshape(1, s.channels, 1, 1)
            return np.tile(v, s.height * s.width).reshape(1, s.n_pixels)  # HWC: k % C

        scale = np.full((1,) * rank, self.wrap.input_scale, np.float32)
        return scale, shaped(self.mean), shaped(self.std)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """The original graph's first output for (N, P) rows, in its own batch when fixed."""
        step = self.input.fixed_batch or 256
        out = []
        for i in range(0, len(pixels), step):
            x = self.transform(pixels[i : i + step])
            n = len(x)
            if self.input.fixed_batch and n < step:  # pad a short last batch, drop the pad
                x = np.concatenate([x, np.zeros((step - n, *x.shape[1:]), np.float32)])
            out.append(self._session.run(None, {self.input.name: x})[0][:n])
        k = self.spec.n_classes
        return np.concatenate(out).astype(np.float32) if out else np.empty((0, k), np.float32)

    def write(self, path: Path, opset: int, exporter: str) -> int:
        onnx.save(self.wrapped, str(path))
        return next(o.version for o in self.wrapped.opset_import if o.domain in ("", "ai.onnx"))

    def _probe(self, batch: int) -> None:
        """A graph exported at a fixed batch may bake it in (a Reshape to [1, -1]): run the
        wrapped graph at another batch and refuse it in one line unless it answers a row for
        every row given (the gates' figures assume it does)."""
        n = batch + 1
        try:
            session = make_session(self.wrapped.SerializeToString(), optimization="none")
            rows = np.zeros((n, self.spec.n_pixels), np.uint8)
            got = len(session.run(None, {INPUT: rows})[0])
            reason = "" if got == n else f"it answers {got} rows"
        except Exception as e:  # onnxruntime's own errors: the reason, in one line
            reason = str(e).splitlines()[0][:160]
        if reason:
            fixed = f" has a fixed batch of {batch}" if self.input.fixed_batch else ""
            raise ModelError(
                f"{self.path}: {self.input.describe()}{fixed}: the graph does not score a "
                f"batch of {n} ({reason}); export it with a dynamic batch, e.g. "
                f"torch.onnx.export(..., dynamic_axes={{'{self.input.name}': {{0: 'batch'}}}})"
            )

    def metadata(self) -> dict[str, Any]:
        return {
            "architecture": f"onnx:{self.path.name}",
            # not source_checkpoint: fcls-bench would take the ONNX file for a checkpoint
            "source_model": self.path.name,
            "source_sha256": file_sha256(self.path),  # stale variants are told by it
            "test_accuracy": None,
            # the rows the gates split (as fcls-train would): fcls-bench checks agreement on it
            "training_data": {
                "source": str(self.data.resolve()),
                "sha256": source_digest(self.data)[0],  # a file's content, a folder's listing
                "limit": self.rows,
                "split_seed": TrainConfig.split_seed,  # what gate_data split them with
            },
            "source_input": self.input.describe(),
            "input_transform": self.wrap.to_dict(),
        }

    def check_fp16(self, calibration: np.ndarray) -> None:
        raise ConfigError("--fp16: not available for a wrapped ONNX model")  # wrap_onnx refuses

    def write_fp16(self, path: Path, opset: int, exporter: str) -> None:
        raise ConfigError("--fp16: not available for a wrapped ONNX model")


def _front(
    found: UserInput, spec: ImageSpec, constants: tuple[np.ndarray, ...]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from `pixels` (uint8 HWC rows) to the user's input, and their constants."""
    nodes = [helper.make_node("Cast", [INPUT], ["fcls/float"], to=TensorProto.FLOAT)]
    consts: dict[str, np.ndarray] = {}
    x = "fcls/float"
    if len(found.dims) == 4:
        h, w, c = spec.height, spec.width, spec.channels
        if c == 1:  # HWC and CHW are the same bytes: no transpose
            consts["fcls/shape"] = np.array([-1, 1, h, w], np.int64)
            nodes.append(helper.make_node("Reshape", [x, "fcls/shape"], ["fcls/nchw"]))
        else:
            consts["fcls/shape"] = np.array([-1, h, w, c], np.int64)
            nodes.append(helper.make_node("Reshape", [x, "fcls/shape"], ["fcls/nhwc"]))
            nodes.append(
                helper.make_node("Transpose", ["fcls/nhwc"], ["fcls/nchw"], perm=[0, 3, 1, 2])
            )
        x = "fcls/nchw"
    scale, mean, std = constants
    steps = (
        ("Mul", "fcls/scale", scale, 1),
        ("Sub", "fcls/mean", mean, 0),
        ("Div", "fcls/std", std, 1),
    )
    for op, name, value, identity in steps:
        if np.any(value != identity):  # the identity step is left out, not computed
            consts[name] = value
            nodes.append(helper.make_node(op, [x, name], [f"{name}/out"]))
            x = f"{name}/out"
    nodes.append(helper.make_node("Identity", [x], [PREFIX + found.name]))
    return nodes, [numpy_helper.from_array(v, name) for name, v in consts.items()]


def compose(
    model: onnx.ModelProto, found: UserInput, spec: ImageSpec, constants: tuple[np.ndarray, ...]
) -> onnx.ModelProto:
    """The user's graph between fcls's front end and its `logits`/`label` outputs, with a
    symbolic batch everywhere (a fixed one is rewritten; `OnnxSource._probe` checks it)."""
    user = onnx.compose.add_prefix(model, PREFIX)
    graph = user.graph
    scores = graph.output[0].name
    front, consts = _front(found, spec, constants)
    logits, label = OUTPUTS
    tail = [
        helper.make_node("Identity", [scores], [logits]),
        helper.make_node("ArgMax", [logits], [label], axis=1, keepdims=0),
    ]
    weights = {t.name for t in graph.initializer}
    nodes = [*front, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts)
    kept = [v for v in graph.input if v.name in weights]  # old IRs list weights as inputs
    del graph.input[:]
    graph.input.extend(
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, [BATCH, spec.n_pixels]), *kept]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(logits, TensorProto.FLOAT, [BATCH, spec.n_classes]),
            helper.make_tensor_value_info(label, TensorProto.INT64, [BATCH]),
        ]
    )
    del graph.value_info[:]  # shapes inferred for the user's batch; onnxruntime infers anew
    del user.metadata_props[:]  # fcls's metadata replaces whatever the file carried
    return user


def wrap_onnx(
    user_model: Path, dest: Path, config: ExportConfig, wrap: WrapConfig, log: Log = print
) -> ExportResult:
    """Wrap the ONNX classifier `user_model` (float32 [N, C, H, W] or [N, H*W*C] input, first
    output [N, K] scores) as an fcls model at `dest`, behind the same parity gate, variants
    (int8, optimized) and drift profile as `export_onnx`, on the real rows of `config.data`.

    Raises ModelError (a graph fcls cannot wrap: the message names its input shape),
    ConfigError (no --data, --fp16, --opset), DataError, ParityError and OutputError.
    Returns the ExportResult.
    """
    from .api import export_source

    if config.data is None:
        raise ConfigError(
            f"{user_model}: wrapping an ONNX model needs --data (labelled rows of the "
            "training CSV) for the parity gate, calibration and the drift profile"
        )
    if config.builds_fp16:
        raise ConfigError("--fp16/--require-fp16-check: not available for a wrapped ONNX model")
    if config.opset is not None:
        raise ConfigError("--opset: a wrapped ONNX model keeps the opset of its own graph")
    source = OnnxSource(user_model, config.data, wrap, config.eval_rows)
    log(f"wrapping {user_model.name}: {source.input.describe()} -> {source.spec.describe()}")
    return export_source(source, dest, config, log)
