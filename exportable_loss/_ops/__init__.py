"""The fused losses as ``torch.library`` custom ops, one module per op: the op (Triton kernels
where Triton can run, the op's one PyTorch reference elsewhere), its fake kernel for
``torch.compile`` and ``torch.export``, its autograd formula, and the adapter its loss family
calls. Each family imports the op module it uses, which registers the op.

The ops are opaque to the tracers (a ``triton_op`` is not: fake tensors reach the Triton
interpreter on CPU) and callable from TorchScript as ``torch.ops.exportable_loss.<name>``. ONNX
export never sees them: while an exporter traces, the losses take their primitive path.
"""

import torch


def forbid_double_backward(op: str, message: str) -> None:
    """Register an autograd formula for a backward op that raises ``message``: the kernels
    compute first derivatives only."""

    def fail(ctx, *grads):
        raise RuntimeError(message)

    torch.library.register_autograd(op, fail, setup_context=lambda ctx, inputs, output: None)
