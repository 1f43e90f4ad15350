"""Export losses (and models with their loss) to ONNX, TorchScript and torch.export programs,
verified against eager PyTorch."""

from exportable_loss.export.api import FORMATS, ExportError, ExportReport, TensorSpec, check_destination, export
from exportable_loss.export.dims import DynamicShapes
from exportable_loss.export.onnx import check_onnx_model, export_onnx, inference_session, run_onnx

__all__ = [
    "FORMATS",
    "DynamicShapes",
    "ExportError",
    "ExportReport",
    "TensorSpec",
    "check_destination",
    "check_onnx_model",
    "export",
    "export_onnx",
    "inference_session",
    "run_onnx",
]
