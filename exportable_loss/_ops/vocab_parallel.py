"""A shard of the vocabulary's cross-entropy statistics, and its linear form chunked: the op behind
``VocabParallelLinearCrossEntropyLoss``.

A rank that holds the classes ``[class_offset, class_offset + V_local)`` reduces its logits ``z`` of
each position to three numbers (`local_statistics`), all the ranks need to know of its shard:
for class-index targets the log-sum-exp of the shard, the target's logit where the shard holds the
target (0 elsewhere), and ``sum_c w_c z_c`` (label smoothing only); for class-probability targets
(this shard's columns) the log-sum-exp, ``sum_c q_c w_c z_c`` and ``sum_c q_c w_c``, ``q`` smoothed.
``exportable_loss._vocab_parallel`` combines them over the ranks into the loss.

The op computes the statistics of ``input @ linear_weight.T + linear_bias`` ``chunk_size`` rows at a
time, so the ``(M, V_local)`` logits never exist; its backward recomputes each chunk's logits and
turns the gradients of the statistics (`statistics_grad`) into those of the hidden states,
the classifier rows and the bias.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from exportable_loss._numerics import accumulation_dtype
from exportable_loss._ops import forbid_double_backward
from exportable_loss._ops.cross_entropy import _softcapped
from exportable_loss._ops.linear_cross_entropy import _chunks

# ---------------------------------------------------------------- the statistics of a shard


def _broadcast(weight: Tensor, dim: int, ndim: int) -> Tensor:
    shape = [1] * ndim
    shape[dim] = weight.shape[0]
    return weight.reshape(shape)


def local_statistics(
    z: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    class_offset: int,
    num_classes: int,
    label_smoothing: float,
    class_dim: int,
    max_logit: Optional[Tensor] = None,
) -> List[Tensor]:
    """The three statistics of this shard's (soft-capped) logits ``z`` at every position, in the
    accumulation dtype, differentiable.

    ``weight`` is this shard's slice of the class weights; ``num_classes`` the whole vocabulary.
    With ``max_logit`` (per position, the maximum over every shard) the first statistic is
    ``sum_c exp(z_c - max_logit)`` instead of the log-sum-exp: its gradient stays finite where
    this shard's logits are all ``-inf``.
    """
    acc = accumulation_dtype(z.dtype)
    if max_logit is None:
        first = torch.logsumexp(z, class_dim).to(acc)
    else:
        first = torch.exp(z - max_logit.unsqueeze(class_dim).to(z.dtype)).sum(class_dim, dtype=acc)
    w = _broadcast(weight.to(z.dtype), class_dim, z.dim()) if weight is not None else None
    if target.is_floating_point():
        q = target.to(z.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        qw = q * w if w is not None else q
        return [first, (qw * z).sum(class_dim, dtype=acc), qw.sum(class_dim, dtype=acc)]
    local = target.long() - class_offset
    owned = (local >= 0) & (local < z.shape[class_dim])
    safe = torch.where(owned, local, torch.zeros_like(local))
    picked = z.gather(class_dim, safe.unsqueeze(class_dim)).squeeze(class_dim).to(acc)
    picked = torch.where(owned, picked, torch.zeros_like(picked))
    if label_smoothing == 0.0:
        weighted = torch.zeros_like(picked)
    elif w is None:
        weighted = z.sum(class_dim, dtype=acc)
    else:
        weighted = torch.matmul(z.movedim(class_dim, -1), w.reshape(-1)).to(acc)
    return [first, picked, weighted]


def statistics_grad(
    z: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    class_offset: int,
    num_classes: int,
    label_smoothing: float,
    log_sum_exp: Tensor,
    grads: Tensor,
) -> Tensor:
    """Gradient with respect to ``(r, V_local)`` logits ``z`` of ``sum_k grads[k] . statistic_k``
    (the statistics of `local_statistics` with the log-sum-exp first), in ``z``'s memory.
    A row whose log-sum-exp gradient is 0 gets none of its softmax (no NaN from its logits)."""
    g_lse, g_1, g_2 = grads.to(z.dtype).unbind(0)
    p = z.sub_(log_sum_exp.to(z.dtype).unsqueeze(1)).exp_()
    grad = p.mul_(g_lse.unsqueeze(1)).masked_fill_((g_lse == 0).unsqueeze(1), 0.0)
    w = weight.to(z.dtype).unsqueeze(0) if weight is not None else None
    if target.is_floating_point():
        q = target.to(z.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        return grad.add_((q * w if w is not None else q) * g_1.unsqueeze(1))
    local = target.long() - class_offset
    owned = (local >= 0) & (local < z.shape[1])
    safe = torch.where(owned, local, torch.zeros_like(local))
    grad.scatter_add_(1, safe.unsqueeze(1), torch.where(owned, g_1, torch.zeros_like(g_1)).unsqueeze(1))
    if label_smoothing > 0.0:
        grad.add_((w if w is not None else torch.ones_like(grad[:1])) * g_2.unsqueeze(1))
    return grad


# ---------------------------------------------------------------- the op, on chunks of rows


def _chunk_logits(x: Tensor, linear_weight: Tensor, linear_bias: Optional[Tensor], softcap: float):
    """A chunk's float32 (float64) logits soft-capped, and the derivative of the soft-cap."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    logits = F.linear(x, linear_weight, linear_bias).to(acc)
    if softcap <= 0:
        return logits, None
    z = _softcapped(logits, softcap)
    return z, 1.0 - (z / softcap) ** 2


@torch.library.custom_op("exportable_loss::vocab_parallel_linear_statistics", mutates_args=())
def vocab_parallel_linear_statistics(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    class_offset: int,
    num_classes: int,
    label_smoothing: float,
    softcap: float,
    chunk_size: int,
) -> Tensor:
    """(3, M) statistics of this shard's logits ``input @ linear_weight.T + linear_bias`` for (M, H)
    ``input``, ``chunk_size`` rows at a time (0: automatic); float32 (float64 for float64 input).
    ``target``: (M,) int64 global class indices or (M, V_local) probabilities of this shard."""
    rows, local_classes = input.shape[0], linear_weight.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    out = input.new_empty((3, rows), dtype=acc)
    for start, end in _chunks(rows, input.shape[1], local_classes, chunk_size)[1]:
        z, _ = _chunk_logits(input[start:end], linear_weight, linear_bias, softcap)
        part = local_statistics(z, target[start:end], weight, class_offset, num_classes, label_smoothing, 1)
        out[:, start:end] = torch.stack(part)
    return out


@vocab_parallel_linear_statistics.register_fake
def _(input, linear_weight, linear_bias, target, weight, class_offset, num_classes, label_smoothing, softcap, chunk):
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    return input.new_empty((3, input.shape[0]), dtype=acc)


@torch.library.custom_op("exportable_loss::vocab_parallel_linear_statistics_backward", mutates_args=())
def vocab_parallel_linear_statistics_backward(
    grads: Tensor,
    statistics: Tensor,
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    class_offset: int,
    num_classes: int,
    label_smoothing: float,
    softcap: float,
    chunk_size: int,
    weight_grad: bool,
) -> List[Tensor]:
    """Gradients of ``sum(grads * statistics)`` for input, linear_weight and linear_bias, recomputing
    each chunk's logits; without ``weight_grad`` the last two are empty tensors, not computed."""
    rows, local_classes = input.shape[0], linear_weight.shape[0]
    grad_input = torch.empty_like(input)
    parameters = tuple(linear_weight.shape) if weight_grad else (0, 0)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    grad_weight = linear_weight.new_zeros(parameters, dtype=torch.promote_types(linear_weight.dtype, acc))
    grad_bias = grad_weight.new_zeros(parameters[0])
    for start, end in _chunks(rows, input.shape[1], local_classes, chunk_size)[1]:
        x = input[start:end]
        z, dcap = _chunk_logits(x, linear_weight, linear_bias, softcap)
        g = grads[:, start:end]
        grad = statistics_grad(
            z, target[start:end], weight, class_offset, num_classes, label_smoothing, statistics[0, start:end], g
        )
        if dcap is not None:
            grad.mul_(dcap)
        # a row without gradient must not bring its (possibly NaN) hidden state into the weight's
        counts = (g != 0).any(0)
        grad = grad.masked_fill_(~counts.unsqueeze(1), 0.0).to(input.dtype)
        torch.mm(grad, linear_weight, out=grad_input[start:end])
        if weight_grad:
            x = torch.where(counts.unsqueeze(1), x, torch.zeros_like(x))
            grad_weight.addmm_(grad.t().to(grad_weight.dtype), x.to(grad_weight.dtype))
            grad_bias.add_(grad.sum(0, dtype=grad_bias.dtype))
    return [grad_input, grad_weight.to(linear_weight.dtype), grad_bias.to(linear_weight.dtype)]


@vocab_parallel_linear_statistics_backward.register_fake
def _(grads, statistics, input, linear_weight, linear_bias, target, weight, *options):
    weight_grad = options[-1]
    parameters = tuple(linear_weight.shape) if weight_grad else (0, 0)
    grad_weight = linear_weight.new_empty(parameters)
    return [torch.empty_like(input), grad_weight, grad_weight.new_empty(parameters[0])]


def _setup(ctx, inputs, output):
    input, linear_weight, linear_bias, target, weight, *ctx.options = inputs
    ctx.has_bias = linear_bias is not None
    ctx.save_for_backward(output, input, linear_weight, linear_bias, target, weight)


def _backward(ctx, grads):
    statistics, input, linear_weight, linear_bias, target, weight = ctx.saved_tensors
    weight_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    grad_input, grad_weight, grad_bias = torch.ops.exportable_loss.vocab_parallel_linear_statistics_backward(
        grads, statistics, input, linear_weight, linear_bias, target, weight, *ctx.options, weight_grad
    )
    if not weight_grad:
        grad_weight = grad_bias = None
    elif not ctx.has_bias:
        grad_bias = None
    return grad_input, grad_weight, grad_bias, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::vocab_parallel_linear_statistics", _backward, setup_context=_setup)
forbid_double_backward(
    "exportable_loss::vocab_parallel_linear_statistics_backward",
    "VocabParallelLinearCrossEntropyLoss does not support double backward (a gradient of the loss's gradient)",
)
