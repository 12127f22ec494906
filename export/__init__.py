"""fcls.export: checkpoint (or a user's ONNX classifier) -> ONNX behind a numeric-parity gate.

Submodules load lazily so that `fcls-export --help` and a missing torch cost no torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fcls.train.checkpoint import Checkpoint

    from .api import ExportResult, export_onnx
    from .config import ExportConfig, WrapConfig
    from .parity import ParityResult, check_parity
    from .wrap import wrap_onnx

__all__ = [
    "Checkpoint",
    "ExportConfig",
    "ExportResult",
    "ParityResult",
    "WrapConfig",
    "check_parity",
    "export_onnx",
    "wrap_onnx",
]
_WHERE = {
    "Checkpoint": "fcls.train.checkpoint",
    "ExportConfig": "fcls.export.config",
    "ExportResult": "fcls.export.api",
    "export_onnx": "fcls.export.api",
    "ParityResult": "fcls.export.parity",
    "check_parity": "fcls.export.parity",
    "WrapConfig": "fcls.export.config",
    "wrap_onnx": "fcls.export.wrap",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fcls.export' has no attribute {name!r}")
