"""Which formulation a loss call takes: primitive operators (TorchScript, ONNX export), the
fused op (Triton kernels, or their reference off-GPU), or the fused ATen operators."""

import torch
from torch import Tensor

from exportable_loss import triton_kernels as tk


def primitive_path() -> bool:
    """True where the loss must be built from primitive operators: TorchScript and ONNX export."""
    if torch.jit.is_scripting():
        return True
    else:
        return torch.onnx.is_in_onnx_export()


def use_triton(backend: str, input: Tensor) -> bool:
    """Whether this call runs the fused op (Triton kernels, or their reference off-GPU).

    Never while an ONNX exporter traces (standard operators only), never for float64 (the
    kernels accumulate in float32); ``"auto"`` only where Triton runs on the tensor's GPU.
    """
    if backend == "torch" or input.dtype == torch.float64:
        return False
    if torch.jit.is_scripting():
        return backend == "triton" or input.is_cuda
    else:
        if torch.onnx.is_in_onnx_export():
            return False
        if backend == "auto":
            return input.is_cuda and tk.can_run(input)
        return True
