"""Export helpers: write a loss (or any module) to ONNX with a dynamic batch and run it."""

from exportable_loss.export.onnx import check_onnx_model, export_onnx, run_onnx

__all__ = ["check_onnx_model", "export_onnx", "run_onnx"]
