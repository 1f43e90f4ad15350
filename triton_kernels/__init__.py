"""Triton kernels of exportable-loss (installed as ``exportable_loss.triton_kernels``)."""
