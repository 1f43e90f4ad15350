"""Export losses (and models with their loss) to ONNX, TorchScript and torch.export programs,
verified against eager PyTorch."""

from exportable_loss.export.api import FORMATS, ExportError, ExportReport, TensorSpec, export
from exportable_loss.export.onnx import check_onnx_model, export_onnx, run_onnx

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportReport",
    "TensorSpec",
    "check_onnx_model",
    "export",
    "export_onnx",
    "run_onnx",
]
