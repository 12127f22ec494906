"""Which model file a command reads, and what a wrong one is, told from its bytes (torch-free).

fcls has two model artefacts: the PyTorch checkpoint `fcls-train` writes (`artifacts/model.pt`,
read by `fcls-export`) and the ONNX model `fcls-export` writes (read by `fcls-infer`). Each
command recognises the other's artefact by content (a zip or pickle header for torch, a
protobuf ModelProto for ONNX), not by extension, and says which command takes it.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError, ModelError

CHECKPOINT = Path("artifacts/model.pt")  # what fcls-train writes with its default -o
ONNX_DEFAULTS = (Path("model.onnx"), Path("artifacts/model.onnx"))  # fcls-infer looks here
SNIFF_BYTES = 1 << 16
# The variants fcls-export writes beside model.onnx: ONNX metadata "variant" -> file-name tag
VARIANT_TAGS = {"optimized": "opt", "int8": "int8", "fp16": "fp16"}


def variant_path(model: Path, tag: str) -> Path:
    """The sibling of `model` that carries `tag`: model.onnx -> model.int8.onnx."""
    model = Path(model)
    return model.with_name(f"{model.stem}.{tag}{model.suffix or '.onnx'}")


# ModelProto's top-level fields (onnx.proto3) and their wire types: 0 varint, 2 length-delimited
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """Decode a protobuf varint at `i`; returns (value, next index); ValueError if cut."""
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def looks_like_onnx(data: bytes, complete: bool) -> bool:
    """Whether `data` parses as the top level of an ONNX ModelProto with an ir_version and a
    graph (`complete`: `data` is the whole file; else its head, and a field cut at the end
    counts as fine)."""
    i, seen = 0, set[int]()
    while i < len(data):
        try:
            key, i = _varint(data, i)
            number, wire = key >> 3, key & 7
            if _MODEL_FIELDS.get(number) != wire:
                return False
            value, i = _varint(data, i)
        except ValueError:
            return not complete and bool(seen)
        seen.add(number)
        if wire == 2:
            if i + value > len(data) and complete:
                return False
            i += value
    return 1 in seen and (7 in seen or not complete)


def sniff(path: Path) -> str:
    """'torch' (zip or pickle checkpoint), 'onnx' (protobuf ModelProto) or 'unknown'."""
    with Path(path).open("rb") as f:
        head = f.read(SNIFF_BYTES)
        complete = not f.read(1)
    pickled = len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5  # torch's legacy format
    if head.startswith(b"PK\x03\x04") or pickled:
        return "torch"
    if looks_like_onnx(head, complete):
        return "onnx"
    return "unknown"


def _onnx_name(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".onnx")


def check_onnx(path: Path) -> None:
    """Refuse a model path that is missing, a directory or a PyTorch checkpoint, saying what
    to do instead (ModelError)."""
    path = Path(path)
    if path.is_dir():
        inside = [p for p in (path / "model.onnx",) if p.is_file()]
        hint = f"; did you mean -m {inside[0]}?" if inside else "; -m/--model takes an .onnx file"
        raise ModelError(f"{path}: is a directory, not a model file{hint}")
    if not path.is_file():
        raise ModelError(
            f"{path}: no such model file; -m/--model picks the ONNX model, fcls-export makes "
            f"one from fcls-train's checkpoint (fcls-export {CHECKPOINT} -o {path})"
        )
    try:
        kind = sniff(path)
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model ({e.strerror})") from None
    if kind == "torch":
        raise ModelError(
            f"{path}: is a PyTorch checkpoint, not an ONNX model; convert it with "
            f"fcls-export {path} -o {_onnx_name(path)}, then fcls-infer ... -m {_onnx_name(path)}"
        )


def find_onnx(model: Path | None) -> Path:
    """The model fcls-infer reads: `model`, else model.onnx, else artifacts/model.onnx."""
    if model is not None:
        check_onnx(model)
        return Path(model)
    for candidate in ONNX_DEFAULTS:
        if candidate.is_file():
            check_onnx(candidate)
            return candidate
    raise ModelError(
        f"no model: neither {' nor '.join(map(str, ONNX_DEFAULTS))} exists; pick one with "
        f"-m/--model PATH, or make one with fcls-export (it reads {CHECKPOINT}, which "
        f"fcls-train writes, and writes {ONNX_DEFAULTS[1]})"
    )


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint path that is missing, a directory or an ONNX model, saying what to
    do instead (CheckpointError)."""
    path = Path(path)
    if path.is_dir():
        inside = path / "model.pt"
        hint = f"; did you mean {inside}?" if inside.is_file() else ""
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        made = (
            "fcls-train writes it"
            if path == CHECKPOINT
            else f"fcls-train writes {CHECKPOINT}; -m/--model picks another"
        )
        raise CheckpointError(f"{path}: no such checkpoint ({made})")
    try:
        kind = sniff(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
    if kind == "onnx":
        raise CheckpointError(
            f"{path}: is an ONNX model (what fcls-export writes), not a PyTorch checkpoint; "
            f"fcls-infer takes it: fcls-infer DATA.csv -m {path}"
        )
