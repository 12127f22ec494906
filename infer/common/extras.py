"""Optional parts of fcls: which extra brings each module, and one line when it is missing.

A deployment install (`pip install fcls`) has only the torch-free inference half; training,
export and the benchmarks need the `train` extra, the Ray engine the `ray` extra, and the peer
runtimes of the benchmarks the `peers` extra. Commands check what they need before any work,
so a missing extra is one line that says what to install, never a ModuleNotFoundError traceback.
"""

from __future__ import annotations

import importlib

from .errors import FclsError

EXTRA_OF = {
    "torch": "train",
    "onnx": "train",
    "onnxscript": "train",
    "scipy": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "pandas": "train",
    "ray": "ray",
    "openvino": "peers",
}
TORCH_HINT = (
    'a bare "torch" requirement can pull a multi-GB CUDA build on Linux: for CPU only, install '
    "torch first from PyTorch's CPU wheel index (README, Install)"
)


class MissingExtraError(FclsError):
    """An optional dependency that the requested command needs is not installed."""


def require(command: str, *modules: str) -> None:
    """Raise MissingExtraError naming the extra to install if any of `modules` cannot be imported."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            extra = EXTRA_OF.get(module, module)
            hint = f"; {TORCH_HINT}" if module == "torch" else ""
            raise MissingExtraError(
                f'{command} needs {module}, which is not installed: pip install "fcls[{extra}]"{hint}'
            ) from None
