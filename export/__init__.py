"""fcls.export: FinalCNNet checkpoint -> ONNX behind a numeric-parity gate."""

from .api import ExportResult, export_onnx
from .checkpoint import Checkpoint, load_checkpoint
from .config import ExportConfig
from .parity import ParityResult, check_parity

__all__ = [
    "Checkpoint",
    "ExportConfig",
    "ExportResult",
    "ParityResult",
    "check_parity",
    "export_onnx",
    "load_checkpoint",
]
