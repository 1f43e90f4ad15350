"""Linear layer and cross entropy, chunked: the op behind ``FusedLinearCrossEntropyLoss``.

The (M, C) logits of ``input @ linear_weight.T + linear_bias`` never exist: the forward computes
them ``chunk_size`` rows at a time and keeps each row's loss, log-sum-exp and target mass; the
backward recomputes each chunk's logits, turns them into the gradient in place (the
cross-entropy kernels with ``use_triton``, else :func:`rows_grad`), and accumulates the
hidden-state, classifier and bias gradients. :func:`fused_linear_cross_entropy` is the adapter
``linear_cross_entropy`` calls in eager mode and under ``torch.compile``.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from exportable_loss import triton_kernels as tk
from exportable_loss._dispatch import use_triton as _use_triton
from exportable_loss._ops import forbid_double_backward
from exportable_loss._ops.cross_entropy import rows_grad, rows_loss
from exportable_loss._reduction import reduce_loss
from exportable_loss._targets import counted_targets


def auto_chunk_rows(rows: int, hidden: int, num_classes: int) -> int:
    """Rows per chunk, a power of two: a chunk's logits about as large as the hidden states
    (``rows * hidden`` elements), but at least the power of two nearest below 2**22 elements,
    below which the matmuls get too thin to run fast."""
    ratio = max(1, -(-num_classes // max(hidden, 1)))
    by_input = max(1, -(-rows // ratio))
    by_input = 1 << (by_input - 1).bit_length()
    by_floor = 1 << (max(1, (1 << 22) // max(num_classes, 1)).bit_length() - 1)
    return max(by_input, by_floor)


def _chunks(rows: int, hidden: int, num_classes: int, chunk_size: int):
    step = chunk_size if chunk_size > 0 else auto_chunk_rows(rows, hidden, num_classes)
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def _kernels_run(logits: Tensor) -> bool:
    return logits.dtype != torch.float64 and tk.can_run(logits)


@torch.library.custom_op("exportable_loss::linear_cross_entropy_rows", mutates_args=())
def linear_cross_entropy_rows(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
    use_triton: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-row cross entropy of ``input @ linear_weight.T + linear_bias`` for (M, H) ``input``,
    computed ``chunk_size`` rows at a time (0: automatic) so the (M, C) logits never exist.

    ``target`` is (M,) int64 class indices or (M, C) probabilities. Returns (M,) loss, log-sum-exp
    and target mass in float32 (float64 for float64 input).
    """
    rows, num_classes = input.shape[0], linear_weight.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    loss = input.new_empty((rows,), dtype=acc)
    lse, mass = torch.empty_like(loss), torch.empty_like(loss)
    for start, end in _chunks(rows, input.shape[1], num_classes, chunk_size):
        logits = F.linear(input[start:end], linear_weight, linear_bias)
        if use_triton and _kernels_run(logits):
            part = tk.kernels("cross_entropy").cross_entropy_forward(
                logits.unsqueeze(2), target[start:end].unsqueeze(-1), weight,
                ignore_index, label_smoothing, z_loss, softcap,
            )  # fmt: skip
        else:
            part = rows_loss(logits.to(acc), target[start:end], weight, ignore_index, label_smoothing, z_loss, softcap)
        loss[start:end], lse[start:end], mass[start:end] = part
    return loss, lse, mass


@linear_cross_entropy_rows.register_fake
def _(input, linear_weight, linear_bias, target, weight, ignore_index, label_smoothing, z_loss, softcap, chunk, tri):
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    loss = input.new_empty((input.shape[0],), dtype=acc)
    return loss, torch.empty_like(loss), torch.empty_like(loss)


@torch.library.custom_op("exportable_loss::linear_cross_entropy_rows_backward", mutates_args=())
def linear_cross_entropy_rows_backward(
    grad_loss: Tensor,
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
    use_triton: bool,
    weight_grad: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``sum(grad_loss * loss)`` for input, linear_weight and linear_bias (a (C,)
    zero tensor without bias), recomputing each chunk's logits. Without ``weight_grad`` (a
    frozen classifier) the classifier's and the bias's gradients are empty tensors, not computed."""
    rows, num_classes = input.shape[0], linear_weight.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    grad_input = torch.empty_like(input)
    # half-precision weights accumulate their gradient over chunks in float32
    parameters = (num_classes, linear_weight.shape[1]) if weight_grad else (0, 0)
    grad_weight = linear_weight.new_zeros(parameters, dtype=torch.promote_types(linear_weight.dtype, acc))
    grad_bias = grad_weight.new_zeros(parameters[0])
    for start, end in _chunks(rows, input.shape[1], num_classes, chunk_size):
        x = input[start:end]
        logits = F.linear(x, linear_weight, linear_bias)
        g = grad_loss[start:end]
        # the rows that count: their gradient, and their hidden states in the weight's gradient
        # (a row that does not count must not bring its possibly NaN hidden state there)
        counts = g != 0
        if not target.is_floating_point():
            counts = counts & (target[start:end] != ignore_index)
        if use_triton and _kernels_run(logits):
            # the gradient overwrites this chunk's logits: no second chunk-sized buffer
            grad = tk.kernels("cross_entropy").cross_entropy_backward(
                g, logits.unsqueeze(2), target[start:end].unsqueeze(-1), weight, lse[start:end], mass[start:end],
                ignore_index, label_smoothing, z_loss, softcap, inplace=True,
            ).squeeze(2)  # fmt: skip
        else:
            grad = rows_grad(
                logits.to(acc), target[start:end], weight, lse[start:end], mass[start:end], g, counts,
                ignore_index, label_smoothing, z_loss, softcap,
            ).to(input.dtype)  # fmt: skip
        torch.mm(grad, linear_weight, out=grad_input[start:end])
        if not weight_grad:
            continue
        x = torch.where(counts.unsqueeze(1), x, torch.zeros_like(x))
        grad_weight.addmm_(grad.t().to(grad_weight.dtype), x.to(grad_weight.dtype))
        grad_bias.add_(grad.sum(0, dtype=grad_bias.dtype))
    return grad_input, grad_weight.to(linear_weight.dtype), grad_bias.to(linear_weight.dtype)


@linear_cross_entropy_rows_backward.register_fake
def _(grad_loss, input, linear_weight, linear_bias, target, weight, lse, mass, *options):
    weight_grad = options[-1]
    parameters = (linear_weight.shape[0], linear_weight.shape[1]) if weight_grad else (0, 0)
    grad_weight = linear_weight.new_empty(parameters)
    return torch.empty_like(input), grad_weight, grad_weight.new_empty(parameters[0])


def _setup(ctx, inputs, output):
    input, linear_weight, linear_bias, target, weight = inputs[:5]
    names = ("ignore_index", "label_smoothing", "z_loss", "softcap", "chunk_size", "use_triton")
    ctx.options = dict(zip(names, inputs[5:]))
    _, lse, mass = output
    ctx.has_bias = linear_bias is not None
    ctx.save_for_backward(input, linear_weight, linear_bias, target, weight, lse, mass)


def _backward(ctx, grad_loss, grad_lse, grad_mass):
    input, linear_weight, linear_bias, target, weight, lse, mass = ctx.saved_tensors
    weight_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    grad_input, grad_weight, grad_bias = torch.ops.exportable_loss.linear_cross_entropy_rows_backward(
        grad_loss, input, linear_weight, linear_bias, target, weight, lse, mass, **ctx.options, weight_grad=weight_grad
    )
    if not weight_grad:
        return grad_input, None, None, None, None, None, None, None, None, None, None
    return grad_input, grad_weight, grad_bias if ctx.has_bias else None, None, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::linear_cross_entropy_rows", _backward, setup_context=_setup)


forbid_double_backward(
    "exportable_loss::linear_cross_entropy_rows_backward",
    "FusedLinearCrossEntropyLoss does not support double backward (a gradient of the loss's "
    "gradient); compute the logits with F.linear and use CrossEntropyLoss for it",
)


@torch.jit.unused
def fused_linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Optional[Tensor],
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    z_loss: float,
    logit_softcap: Optional[float],
    chunk_size: Optional[int],
    backend: str,
) -> Tensor:
    """The chunked op, then the reduction (arguments checked already; never compiled by TorchScript)."""
    out_dtype = input.dtype
    device = input.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        # as the unfused form under autocast: the matmul in the autocast dtype, the loss in float32
        low = torch.get_autocast_dtype(device)
        input, linear_weight = input.to(low), linear_weight.to(low)
        linear_bias = linear_bias.to(low) if linear_bias is not None else None
        out_dtype = torch.float32
    num_classes, hidden = linear_weight.shape[0], linear_weight.shape[1]
    probabilities = target.is_floating_point()
    rows_target = target.movedim(1, -1).reshape(-1, num_classes) if probabilities else target.reshape(-1).long()
    loss, _, _ = torch.ops.exportable_loss.linear_cross_entropy_rows(
        input.reshape(-1, hidden),
        linear_weight,
        linear_bias,
        rows_target.contiguous(),
        weight.contiguous() if weight is not None else None,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=0.0 if logit_softcap is None else logit_softcap,
        chunk_size=0 if chunk_size is None else chunk_size,
        use_triton=_use_triton(backend, input),
    )
    loss = loss.reshape(input.shape[:-1])
    if probabilities:
        return reduce_loss(loss, reduction, sample_weight, normalizer).to(out_dtype)
    w = weight.to(loss.dtype) if weight is not None else None
    valid, _, _, target_weight = counted_targets(target.long(), w, ignore_index, num_classes)
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight).to(out_dtype)
