"""The serving graph: uint8 pixel rows in, logits and argmax labels out; export and lint."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from fcls.infer.common.errors import FclsError
from fcls.infer.common.spec import ImageSpec

INPUT = "pixels"
OUTPUTS = ("logits", "label")
TORCHSCRIPT_MAX_OPSET = 20
MIN_OPSET = 17


class LintError(FclsError):
    """An exported graph that breaks fcls's structural rules."""


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An fp32 eval-mode copy with every BatchNorm folded into the conv/linear before it (the
    pairs the network names in `batchnorm_pairs()`; a network without it folds nothing).

    Folding must happen in fp32: a first conv sees raw 0..255 pixels, so its BatchNorm's
    running_var reaches ~1e4 after a short run and can pass fp16's 65,504 in a long one; cast
    first and the fold divides by sqrt(inf) and silently zeroes the channel.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = copy.deepcopy(model).float().eval()
    named = getattr(folded, "batchnorm_pairs", None)
    for layer, bn in named() if callable(named) else ():
        module, norm = folded.get_submodule(layer), folded.get_submodule(bn)
        fused: torch.nn.Module
        if isinstance(module, torch.nn.Conv2d) and isinstance(norm, _BatchNorm):
            fused = fuse_conv_bn_eval(module, norm)
        elif isinstance(module, torch.nn.Linear) and isinstance(norm, _BatchNorm):
            fused = fuse_linear_bn_eval(module, norm)
        else:
            raise LintError(
                f"cannot fold {bn} ({type(norm).__name__}) into {layer} ({type(module).__name__})"
            )
        _replace(folded, layer, fused)
        _replace(folded, bn, torch.nn.Identity())
    return folded


def _replace(root: torch.nn.Module, dotted: str, module: torch.nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


class ServingModel(torch.nn.Module):
    """Wraps a network so the graph owns its preprocessing: (B, P) uint8 HWC rows -> logits
    (B, K) float32 and argmax labels (B,) int64.

    The network traced is its `serving_module()` (same function, laid out for onnxruntime:
    FinalCNNet's flattens its features channels-last so the int8 graph needs no transpose
    before fc1). Reduced-precision graphs get their BatchNorms folded in fp32 first.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        spec: ImageSpec,
        dtype: torch.dtype = torch.float32,
        fold_bn: bool | None = None,
    ) -> None:
        super().__init__()
        fold = dtype != torch.float32 if fold_bn is None else fold_bn
        source = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
        make = getattr(source, "serving_module", None)
        serving = make() if callable(make) else source
        self.model = serving.to(dtype).eval()
        self.spec, self.dtype = spec, dtype

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.spec
        x = pixels.to(self.dtype)  # raw 0..255, as in training
        if s.channels == 1:  # HWC and CHW are the same bytes: no transpose in the graph
            x = x.reshape(-1, 1, s.height, s.width)
        else:
            x = x.reshape(-1, s.height, s.width, s.channels).permute(0, 3, 1, 2)
        logits = self.model(x).to(torch.float32)  # (B, K) float32 always
        return logits, logits.argmax(dim=1)  # (B,) int64


def ort_max_opset() -> int:
    """Highest ai.onnx opset for which onnxruntime's CPU provider registers kernels."""
    try:
        from onnxruntime.capi import _pybind_state as C

        defs = C.get_all_opkernel_def()
        return max(
            k.version_range[0]
            for k in defs
            if k.domain in ("", "ai.onnx") and k.provider == "CPUExecutionProvider"
        )
    except Exception:  # private API: fall back to the floor fcls requires
        return MIN_OPSET


def default_opset() -> int:
    """Newest opset that both the installed onnxruntime and torch's exporter support."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as torch_max
    except ImportError:  # pragma: no cover - older torch
        torch_max = 18
    return max(MIN_OPSET, min(ort_max_opset(), int(torch_max)))


def export_graph(serving: ServingModel, path: Path, opset: int, exporter: str) -> int:
    """Export with 'dynamo' or 'torchscript' to `path`; return the opset actually written."""
    example = torch.randint(0, 256, (4, serving.spec.n_pixels), dtype=torch.uint8)
    quiet = io.StringIO()
    torch_log = logging.getLogger("torch.onnx")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" on every export
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(
                serving,
                (example,),
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
                verbose=False,
            )
            if program is None:  # only when torch.onnx.export is given a file name itself
                raise LintError(f"{path}: the dynamo exporter returned no program")
            program.save(str(path))
        else:
            opset = min(opset, TORCHSCRIPT_MAX_OPSET)
            torch.onnx.export(
                serving,
                (example,),
                str(path),
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                opset_version=opset,
                dynamo=False,
                dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUTS)},
            )
    torch_log.setLevel(level)
    written = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx"))


def lint(path: Path) -> None:
    """Full onnx check; no Dropout, no training-mode BatchNorm, symbolic batch everywhere."""
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise LintError(f"{path}: onnx.checker rejects the graph: {str(e)[:300]}") from None
    for node in model.graph.node:
        if node.op_type == "Dropout":
            raise LintError(f"{path}: Dropout node {node.name!r} left in the graph")
        if node.op_type == "BatchNormalization":
            for attr in node.attribute:
                if attr.name == "training_mode" and attr.i:
                    raise LintError(f"{path}: BatchNormalization {node.name!r} in training mode")
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            raise LintError(
                f"{path}: {value.name} has a fixed batch dimension ({dims[0] if dims else 'none'})"
            )


def io_signature(path: Path) -> dict[str, Any]:
    """Names, element types and shapes of the graph's inputs and outputs."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(v: onnx.ValueInfoProto) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": shape,
        }

    return {
        "inputs": [describe(v) for v in model.graph.input],
        "outputs": [describe(v) for v in model.graph.output],
    }


def set_metadata(path: Path, props: dict[str, Any]) -> None:
    """Write `props` into the model's metadata_props (non-strings as JSON)."""
    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if key in existing:
            existing[key].value = text
        else:
            model.metadata_props.add(key=key, value=text)
    model.producer_name = "fcls"
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, str]:
    """The model's metadata_props as a dict of strings."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
