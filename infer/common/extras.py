"""Optional parts of fcls: which extra brings each module, and one line when it is missing.

A deployment install (`pip install fcls`) has only the torch-free inference half; training,
export and the benchmarks need the `train` extra, the Ray engine the `ray` extra, folders of
images the `images` extra (Pillow), and the OpenVINO runtime (and fcls-bench's OpenVINO rows)
the `openvino` extra. Commands check what they need before any work,
so a missing extra is one line that says what to install, never a ModuleNotFoundError traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import threading

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
    "PIL": "images",
    "openvino": "openvino",
}
TORCH_HINT = (
    'a bare "torch" requirement can pull a multi-GB CUDA build on Linux: for CPU only, install '
    "torch first from PyTorch's CPU wheel index (README, Install)"
)


class MissingExtraError(FclsError):
    """An optional dependency that the requested command needs is not installed."""


def require(command: str, *modules: str) -> None:
    """Raise MissingExtraError naming the extra to install if any of `modules` is missing.

    torch is imported (the command needs it next, and its import must not be cut by a
    signal); the others are only looked up: scikit-learn, SciPy and matplotlib would add
    over 100 MB to a training process long before its report needs them.
    """
    for module in modules:
        try:
            if module == "torch":
                _import_undisturbed(module)
            elif importlib.util.find_spec(module) is None:
                raise ImportError(module)
        except (ImportError, ValueError):
            extra = EXTRA_OF.get(module, module)
            hint = f"; {TORCH_HINT}" if module == "torch" else ""
            raise MissingExtraError(
                f'{command} needs {module}, which is not installed: pip install "fcls[{extra}]"{hint}'
            ) from None


def _import_undisturbed(module: str) -> None:
    """Import `module` with the stop signals held back until it is loaded.

    A stop signal's handler raises in whatever Python code runs; inside torch's import that
    can leave its C++ half-initialised, and the process aborts (SIGABRT) instead of stopping
    cleanly. A signal that arrives meanwhile stays pending and is handled right after."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        importlib.import_module(module)
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        importlib.import_module(module)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
