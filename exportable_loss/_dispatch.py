"""Where a loss call runs, and so which formulation it takes.

The one set of context predicates of the package: a graph being captured (``torch.compile``,
``torch.export``, tracing, ONNX export), a ``torch.func`` transform, plain eager mode; and the
dispatch decisions built on them: primitive operators (TorchScript, ONNX export), the fused op
(Triton kernels, or their PyTorch reference off-GPU), and the chunked linear cross entropy.

``torch.jit.is_scripting()`` stays inline at each call site: TorchScript only skips a block
whose condition is that call itself.
"""

from typing import Callable

import torch
from torch import Tensor

import exportable_loss.triton_kernels as tk

BACKENDS = ("torch", "triton", "auto")
# Triton's interpreter runs on CPU tensors that stand in for a GPU's (read once, as Triton does)
_INTERPRETED = tk.interpreter_enabled()


def _onnx_flags() -> Callable[[], bool]:
    """``torch.onnx.is_in_onnx_export`` without its per-call imports (1.3 us of a loss's budget
    of a few us at small sizes): the two flags it reads, where this torch has them where torch
    2.11 to 2.14 keep them; the public function elsewhere."""
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:
        return torch.onnx.is_in_onnx_export
    if not hasattr(_flags, "_is_onnx_exporting") or not hasattr(GLOBALS, "in_onnx_export"):
        return torch.onnx.is_in_onnx_export
    return lambda: bool(GLOBALS.in_onnx_export or _flags._is_onnx_exporting)


_read_onnx_flags = _onnx_flags()


def onnx_exporting() -> bool:
    """``torch.onnx.is_in_onnx_export()``, cheaper in eager mode. torch.compile traces the
    public function (which it knows)."""
    if torch.compiler.is_compiling():
        return torch.onnx.is_in_onnx_export()
    return _read_onnx_flags()


def capturing() -> bool:
    """A graph is being captured: ``torch.compile``, ``torch.export``, ``torch.jit.trace`` or an
    ONNX exporter. Reading a tensor's values here would break the graph or bake in a constant."""
    if torch.compiler.is_compiling():
        return True
    # torch._C._is_tracing is torch.jit.is_tracing without its wrapper (only eager reaches it)
    return torch.compiler.is_exporting() or torch._C._is_tracing() or _read_onnx_flags()


def under_torch_func() -> bool:
    """A ``torch.func`` transform (vmap, grad, jacrev, ...) is running: no data-dependent Python
    control flow, and custom ops without batching rules must be avoided."""
    return torch._C._are_functorch_transforms_active()


def eager() -> bool:
    """Plain eager mode: the only place where a check may read tensor values (a device sync)."""
    return not capturing() and not under_torch_func()


def reads_free(t: Tensor) -> bool:
    """Reading ``t``'s values costs no device synchronisation and bakes nothing into a graph:
    eager mode on a CPU. Code may then pick the cheaper of two exact formulations by a value
    (a sum that came out finite, a denominator that is not 0). Only a plain tensor holds its
    values: a tensor subclass (fake and functional tensors, as a retrace of an exported program
    through a custom op's Python implementation passes, where no capture flag is set) may not.
    Under Triton's interpreter the CPU stands in for a GPU: reads are not free there, so what the
    kernels' tests count (launches, synchronisations) is what a GPU runs."""
    kind = type(t)
    plain = kind is torch.Tensor or kind is torch.nn.Parameter
    return plain and not _INTERPRETED and eager() and t.is_cpu


def primitive_path() -> bool:
    """True where the loss must be built from primitive operators: TorchScript and ONNX export."""
    if torch.jit.is_scripting():
        return True
    else:
        return onnx_exporting()


def use_triton(backend: str, input: Tensor) -> bool:
    """Whether this call runs the fused op (Triton kernels, or their reference off-GPU).

    Never while an ONNX exporter traces (standard operators only), never under a ``torch.func``
    transform (the ops have no batching rule), never for float64 (the kernels accumulate in
    float32); ``"auto"`` only where Triton runs on the tensor's GPU.
    """
    if backend == "torch" or input.dtype == torch.float64:
        return False
    if torch.jit.is_scripting():
        return backend == "triton" or input.is_cuda
    else:
        if onnx_exporting() or under_torch_func():
            return False
        if backend == "auto":
            return input.is_cuda and tk.can_run(input)
        return True


def chunked_linear(input: Tensor, target: Tensor) -> bool:
    """Whether a linear cross entropy runs its chunked op: in eager mode and under
    torch.compile. Exported graphs (TorchScript, torch.export, ONNX) hold the unfused form. So do
    a target that requires grad (the op differentiates input and parameters only) and torch.func
    transforms (the op has no batching rule)."""
    if torch.jit.is_scripting():
        return False
    else:
        compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
        if not compiling and (capturing() or under_torch_func()):
            return False
        return input.dim() > 1 and not target.requires_grad
