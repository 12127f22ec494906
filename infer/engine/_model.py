"""What an ONNX model file is to fcls: its session, interface, image spec and reference profile.

The one place a scoring model's interface is read. fcls-export records the `ImageSpec` in the
metadata (`image_spec`); an ONNX file from elsewhere is taken when its input says the
geometry: uint8 [batch, P] rows (P a square: a grayscale P = S x S image) or float
[batch, C, H, W] images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..common.drift import PROFILE_KEY, Profile
from ..common.errors import ModelError, ProviderError
from ..common.modelfile import VARIANT_TAGS
from ..common.spec import SPEC_KEY, ImageSpec, SpecError, geometry_for, number_names
from .session import active_provider, make_session, ort_conflict, providers_for


@dataclass(frozen=True)
class Interface:
    """How to call a model: its input, outputs and the images it takes."""

    spec: ImageSpec
    input_name: str
    float_input: bool  # float32 [batch, C, H, W] rather than uint8 [batch, P] rows
    logits_name: str
    label_name: str | None  # the in-graph argmax, when the graph has one
    notice: str | None = None  # what fcls assumes of a model it takes as it is (one line)

    def feed(self, pixels: np.ndarray) -> np.ndarray:
        """What the session takes for (n, P) uint8 HWC rows; ValueError for any other array."""
        p = self.spec.n_pixels
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != p:
            raise ValueError(f"expected (n, {p}) uint8 pixels, got {pixels.dtype} {pixels.shape}")
        if not self.float_input:
            return np.ascontiguousarray(pixels)
        s = self.spec
        hwc = pixels.reshape(-1, s.height, s.width, s.channels)
        return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2), dtype=np.float32)


def open_session(path: Path, provider: str, threads: int, spinning: bool) -> ort.InferenceSession:
    """A session on `provider`; ProviderError when CUDA was asked for and is not what runs."""
    session = make_session(path, providers_for(provider), threads=threads, spinning=spinning)
    if provider == "cuda" and active_provider(session) != "cuda":
        conflict = ort_conflict()
        raise ProviderError(
            f"--provider cuda: the session fell back to {session.get_providers()[0]} "
            + (f"({conflict})" if conflict else "(no usable GPU); use --provider cpu or auto")
        )
    return session


def read_interface(path: Path, session: ort.InferenceSession) -> Interface:
    """The model's interface; ModelError when it takes no image rows fcls can give it."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected one input, the model has {len(inputs)}")
    inp = inputs[0]
    shape = [d if isinstance(d, int) else "batch" for d in inp.shape]
    outputs = {o.name: o for o in session.get_outputs()}
    logits_name = "logits" if "logits" in outputs else next(iter(outputs))
    meta = session.get_modelmeta().custom_metadata_map
    spec = _spec(path, meta, inp.type, shape, outputs[logits_name].shape[-1])
    float_input = inp.type == "tensor(float)"
    want = [spec.n_pixels] if not float_input else [spec.channels, spec.height, spec.width]
    if shape[1:] != want:
        raise ModelError(
            f"{path}: input {inp.name} {inp.type} {shape} does not take {spec.describe()} "
            f"(expected uint8 [batch, {spec.n_pixels}] or float "
            f"[batch, {spec.channels}, {spec.height}, {spec.width}])"
        )
    label_name = "label" if "label" in outputs else None
    foreign = float_input and SPEC_KEY not in meta  # fcls-export never writes float inputs
    shown = f"{inp.name} float32 [{', '.join(map(str, shape))}]"
    notice = unwrapped_notice(path, shown) if foreign else None
    return Interface(spec, inp.name, float_input, logits_name, label_name, notice)


def unwrapped_notice(path: Path, shape: str) -> str:
    """The one line said of a float-input model taken as it is: fcls feeds it the raw pixels,
    as the notebook's networks take them, and fcls-export wraps it for other inputs."""
    return (
        f"{path.name}: input {shape} is fed raw 0..255 pixels (as the notebook's networks take "
        f"them); if it was trained on scaled inputs, wrap it: fcls-export {path} -o model.onnx "
        "--data train.csv --input-scale 1/255 [--input-mean M --input-std S]"
    )


def _spec(
    path: Path, meta: dict[str, str], input_type: str, shape: list, n_classes: object
) -> ImageSpec:
    """The recorded spec, else the one the input shape and class_names metadata say."""
    try:
        if SPEC_KEY in meta:
            return ImageSpec.from_json(meta[SPEC_KEY])
        if input_type == "tensor(uint8)" and len(shape) == 2 and isinstance(shape[1], int):
            h, w, c = geometry_for(shape[1])
        elif (
            input_type == "tensor(float)"
            and len(shape) == 4
            and all(isinstance(d, int) for d in shape[1:])
        ):
            c, h, w = shape[1:]
        else:
            raise ModelError(
                f"{path}: input {input_type} {shape} is neither uint8 [batch, pixels] rows "
                "nor float [batch, channels, height, width] images"
            )
        names = json.loads(meta["class_names"]) if "class_names" in meta else None
        if names:
            classes = tuple(names)
        elif isinstance(n_classes, int):
            classes = number_names(n_classes)
        else:
            raise ModelError(f"{path}: the logits' class count is not fixed ({n_classes!r})")
        return ImageSpec(int(h), int(w), int(c), classes)
    except (SpecError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: its image spec cannot be used ({e})") from None


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


def read_profile(meta: dict[str, str]) -> tuple[Profile | None, str]:
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
