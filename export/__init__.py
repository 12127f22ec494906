"""fcls.export: FinalCNNet checkpoint -> ONNX behind a numeric-parity gate."""

from fcls.train.checkpoint import Checkpoint

from .api import ExportResult, export_onnx
from .config import ExportConfig
from .parity import ParityResult, check_parity

__all__ = [
    "Checkpoint",
    "ExportConfig",
    "ExportResult",
    "ParityResult",
    "check_parity",
    "export_onnx",
]
