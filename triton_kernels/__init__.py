"""Triton kernels of exportable-loss (installed as ``exportable_loss.triton_kernels``).

The registry below is all that the rest of the package touches: it imports without Triton,
says whether Triton can run on a tensor, and loads the kernel modules on first use.
"""

import importlib.util
import os
from types import ModuleType

import torch

_modules: dict = {}

# The element-wise losses of the pointwise kernel, in the order of its KIND constexpr: the one
# table the kernel, its PyTorch reference and the fused op's argument check read.
POINTWISE_KINDS = ("mse", "l1", "smooth_l1", "huber", "bce_logits", "kl", "kl_log_target", "focal")


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def can_run(t: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on tensors like ``t`` here."""
    if not triton_importable():
        return False
    if t.device.type == "cuda":
        return True
    return t.device.type == "cpu" and interpreter_enabled()


def kernels(name: str) -> ModuleType:
    """The kernel module ``name`` (``"cross_entropy"`` or ``"pointwise"``), imported once."""
    if name not in _modules:
        _modules[name] = importlib.import_module(f"{__name__}.{name}")
    return _modules[name]
