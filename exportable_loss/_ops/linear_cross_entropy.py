"""Linear layer and cross entropy, chunked: the op behind ``FusedLinearCrossEntropyLoss``.

The (M, C) logits of ``input @ linear_weight.T + linear_bias`` never exist: the forward computes
them ``chunk_size`` rows at a time, into one buffer every chunk reuses, and keeps each row's
loss, log-sum-exp and target mass; the backward recomputes each chunk's logits, turns them into
the gradient in place (the cross-entropy kernels with ``use_triton``, else ``rows_grad``), and
accumulates the hidden-state, classifier and bias gradients. For ``mean`` and ``sum`` the
gradient is computed during the forward instead (``linear_cross_entropy_reduced``), from the
same buffer: three matmuls per chunk. ``fused_linear_cross_entropy`` is the adapter
``linear_cross_entropy`` calls in eager mode and under ``torch.compile``.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

import exportable_loss.triton_kernels as tk
from exportable_loss._dispatch import reads_free
from exportable_loss._dispatch import use_triton as _use_triton
from exportable_loss._ops import forbid_double_backward
from exportable_loss._ops.cross_entropy import rows_grad, rows_loss_, rows_loss_and_grad_, rows_to_zero
from exportable_loss._reduction import reduce_loss, reduction_coefficients
from exportable_loss._targets import counted_targets


def auto_chunk_rows(rows: int, hidden: int, num_classes: int) -> int:
    """Rows per chunk, a power of two: a chunk's logits about as large as the hidden states
    (``rows * hidden`` elements), but at least the power of two nearest below 2**24 elements
    (64 MiB of float32): below that the matmuls get too thin to run at full speed (a CPU's
    matmul of 128 rows runs at about two thirds of the speed of one of 512 or more)."""
    ratio = max(1, -(-num_classes // max(hidden, 1)))
    by_input = max(1, -(-rows // ratio))
    by_input = 1 << (by_input - 1).bit_length()
    by_floor = 1 << (max(1, (1 << 24) // max(num_classes, 1)).bit_length() - 1)
    return max(by_input, by_floor)


def _chunks(rows: int, hidden: int, num_classes: int, chunk_size: int) -> Tuple[int, List[Tuple[int, int]]]:
    """The rows per chunk and the chunks' row ranges."""
    step = chunk_size if chunk_size > 0 else auto_chunk_rows(rows, hidden, num_classes)
    return step, [(start, min(start + step, rows)) for start in range(0, rows, step)]


def _logits_buffer(input: Tensor, linear_weight: Tensor, step: int) -> Tensor:
    """One buffer for every chunk's logits: a fresh chunk-sized allocation per chunk costs page
    faults on a CPU (allocations this large are mapped anew each time)."""
    return input.new_empty((min(step, input.shape[0]), linear_weight.shape[0]))


def _logits_into(buffer: Tensor, x: Tensor, linear_weight: Tensor, linear_bias: Optional[Tensor]) -> Tensor:
    """A chunk's logits ``x @ linear_weight.T + linear_bias`` in the first rows of ``buffer``."""
    out = buffer[: x.shape[0]]
    if linear_bias is None:
        return torch.mm(x, linear_weight.t(), out=out)
    return torch.addmm(linear_bias, x, linear_weight.t(), out=out)


def _kernels_run(logits: Tensor) -> bool:
    return logits.dtype != torch.float64 and tk.can_run(logits)


def _parameter_grads(linear_weight: Tensor, weight_grad: bool, rows: int) -> Tuple[Tensor, Tensor]:
    """The classifier and bias gradients to accumulate into (float32 for half weights, which
    accumulate over chunks): the first chunk overwrites the classifier's (no zero fill), so it
    is zeroed only where there is no chunk; empty where the classifier is frozen."""
    acc = torch.promote_types(linear_weight.dtype, torch.float32)
    parameters = (linear_weight.shape[0], linear_weight.shape[1]) if weight_grad else (0, 0)
    grad_weight = linear_weight.new_empty(parameters, dtype=acc)
    if rows == 0:
        grad_weight.zero_()
    return grad_weight, grad_weight.new_zeros(parameters[0])


def _counted_rows(target: Tensor, g: Tensor, ignore_index: int) -> Tensor:
    """The rows that count: their gradient, and their hidden states in the classifier's gradient
    (a row that does not count must not bring its possibly NaN hidden state there)."""
    counts = g != 0
    if not target.is_floating_point():
        counts = counts & (target != ignore_index)
    return counts


def _logits_grad(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    g: Tensor,
    counts: Tensor,
    options: Tuple[int, float, float, float],
    use_triton: bool,
) -> Tensor:
    """The gradient of ``sum(g * loss)`` with respect to a chunk's logits, in their memory."""
    if use_triton and _kernels_run(logits):
        # the gradient overwrites this chunk's logits: no second chunk-sized buffer
        kernels = tk.kernels("cross_entropy")
        return kernels.cross_entropy_backward(
            g, logits.unsqueeze(2), target.unsqueeze(-1), weight, lse, mass, *options, inplace=True
        ).squeeze(2)
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return rows_grad(logits.to(acc), target, weight, lse, mass, g, counts, *options).to(logits.dtype)


def _accumulate(
    x: Tensor,
    grad: Tensor,
    zero: Optional[Tensor],
    linear_weight: Tensor,
    has_bias: bool,
    first: bool,
    grad_input: Tensor,
    grad_weight: Tensor,
    grad_bias: Tensor,
) -> None:
    """One chunk's share of the parameters' gradients from its logits' gradient ``grad``: writes
    ``grad_input`` (the chunk's rows) and adds to ``grad_weight``/``grad_bias`` (unless they are
    empty: a frozen classifier); the ``first`` chunk overwrites ``grad_weight``. The hidden
    states of the rows in ``zero`` (rows that do not count, with non-finite logits: see
    ``rows_to_zero``) are left out, as their gradient rows are: a NaN there must not reach the
    classifier's gradient."""
    torch.mm(grad, linear_weight, out=grad_input)
    if grad_weight.numel() == 0:
        return
    if zero is not None:
        x = x.masked_fill(zero.unsqueeze(1), 0.0)
    # beta=0 ignores what the buffer held, NaN included
    grad_weight.addmm_(grad.t().to(grad_weight.dtype), x.to(grad_weight.dtype), beta=0.0 if first else 1.0)
    if has_bias:
        grad_bias.add_(grad.sum(0, dtype=grad_bias.dtype))


def _chunk_forward(
    logits: Tensor, target: Tensor, weight: Optional[Tensor], options: Tuple[int, float, float, float], use_triton: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """One chunk's per-row loss, log-sum-exp and target mass."""
    if use_triton and _kernels_run(logits):
        return tk.kernels("cross_entropy").cross_entropy_forward(
            logits.unsqueeze(2), target.unsqueeze(-1), weight, *options
        )
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return rows_loss_(logits.to(acc), target, weight, *options)


def _chunk_forward_and_grad(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    g: Tensor,
    counts: Tensor,
    options: Tuple[int, float, float, float],
    use_triton: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """One chunk's per-row loss, log-sum-exp and target mass, and the gradient of ``sum(g *
    loss)`` with respect to its logits. The PyTorch formulation takes the gradient from the
    log-probabilities of the loss; the kernels overwrite the logits with it."""
    if use_triton and _kernels_run(logits):
        loss, lse, mass = _chunk_forward(logits, target, weight, options, use_triton)
        return loss, lse, mass, _logits_grad(logits, target, weight, lse, mass, g, counts, options, use_triton)
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    loss, lse, mass, grad = rows_loss_and_grad_(logits.to(acc), target, weight, g, counts, *options)
    return loss, lse, mass, grad.to(logits.dtype)


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
    options = (ignore_index, label_smoothing, z_loss, softcap)
    step, ranges = _chunks(rows, input.shape[1], num_classes, chunk_size)
    buffer = _logits_buffer(input, linear_weight, step)
    for start, end in ranges:
        logits = _logits_into(buffer, input[start:end], linear_weight, linear_bias)
        loss[start:end], lse[start:end], mass[start:end] = _chunk_forward(
            logits, target[start:end], weight, options, use_triton
        )
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
    grad_input = torch.empty_like(input)
    grad_weight, grad_bias = _parameter_grads(linear_weight, weight_grad, rows)
    options = (ignore_index, label_smoothing, z_loss, softcap)
    has_bias = linear_bias is not None
    step, ranges = _chunks(rows, input.shape[1], num_classes, chunk_size)
    buffer = _logits_buffer(input, linear_weight, step)
    for start, end in ranges:
        x, t, g = input[start:end], target[start:end], grad_loss[start:end]
        logits = _logits_into(buffer, x, linear_weight, linear_bias)
        counts = _counted_rows(t, g, ignore_index)
        grad = _logits_grad(logits, t, weight, lse[start:end], mass[start:end], g, counts, options, use_triton)
        zero = rows_to_zero(counts, lse[start:end])
        first = start == 0
        _accumulate(x, grad, zero, linear_weight, has_bias, first, grad_input[start:end], grad_weight, grad_bias)
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
    ctx.set_materialize_grads(False)  # no zero-filled gradients for lse and mass, which nobody uses


def _backward(ctx, grad_loss, grad_lse, grad_mass):
    if grad_loss is None:  # no gradient reached the loss (grads are not materialised)
        return (None,) * 11
    input, linear_weight, linear_bias, target, weight, lse, mass = ctx.saved_tensors
    weight_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    grad_input, grad_weight, grad_bias = torch.ops.exportable_loss.linear_cross_entropy_rows_backward(
        grad_loss, input, linear_weight, linear_bias, target, weight, lse, mass, **ctx.options, weight_grad=weight_grad
    )
    if not weight_grad:
        return grad_input, None, None, None, None, None, None, None, None, None, None
    return grad_input, grad_weight, grad_bias if ctx.has_bias else None, None, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::linear_cross_entropy_rows", _backward, setup_context=_setup)


_NO_DOUBLE_BACKWARD = (
    "FusedLinearCrossEntropyLoss does not support double backward (a gradient of the loss's "
    "gradient); compute the logits with F.linear and use CrossEntropyLoss for it"
)
forbid_double_backward("exportable_loss::linear_cross_entropy_rows_backward", _NO_DOUBLE_BACKWARD)


# ---------------------------------------------------------------- the gradient during the forward


@torch.library.custom_op("exportable_loss::linear_cross_entropy_reduced", mutates_args=())
def linear_cross_entropy_reduced(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    coefficient: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
    use_triton: bool,
    weight_grad: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``sum(coefficient * loss)`` over the (M,) rows, with its gradients computed chunk by chunk
    in the same pass: each chunk's logits are computed once, turned into the loss and then, in
    place, into the gradient (three matmuls per step, as the unfused form). The backward only
    scales the saved gradients by the final scalar ``grad_output``.

    Returns ``(total, loss, lse, mass, grad_input, grad_weight, grad_bias)``: the 0-dim sum, the
    per-row loss, log-sum-exp and target mass (for a second backward, which recomputes), and the
    gradients of ``total`` (the classifier's and bias's empty without ``weight_grad``).
    """
    rows, num_classes = input.shape[0], linear_weight.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    loss = input.new_empty((rows,), dtype=acc)
    lse, mass = torch.empty_like(loss), torch.empty_like(loss)
    grad_input = torch.empty_like(input)
    grad_weight, grad_bias = _parameter_grads(linear_weight, weight_grad, rows)
    options = (ignore_index, label_smoothing, z_loss, softcap)
    has_bias = linear_bias is not None
    step, ranges = _chunks(rows, input.shape[1], num_classes, chunk_size)
    buffer = _logits_buffer(input, linear_weight, step)
    for start, end in ranges:
        x, t, g = input[start:end], target[start:end], coefficient[start:end]
        logits = _logits_into(buffer, x, linear_weight, linear_bias)
        counts = _counted_rows(t, g, ignore_index)
        loss[start:end], lse[start:end], mass[start:end], grad = _chunk_forward_and_grad(
            logits, t, weight, g, counts, options, use_triton
        )
        zero = rows_to_zero(counts, lse[start:end])
        first = start == 0
        _accumulate(x, grad, zero, linear_weight, has_bias, first, grad_input[start:end], grad_weight, grad_bias)
    total = torch.where(coefficient != 0, coefficient * loss, torch.zeros_like(loss)).sum()
    return total, loss, lse, mass, grad_input, grad_weight.to(linear_weight.dtype), grad_bias.to(linear_weight.dtype)


@linear_cross_entropy_reduced.register_fake
def _(input, linear_weight, linear_bias, target, weight, coefficient, *options):
    weight_grad = options[-1]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    parameters = (linear_weight.shape[0], linear_weight.shape[1]) if weight_grad else (0, 0)
    grad_weight = linear_weight.new_empty(parameters)
    loss = input.new_empty((input.shape[0],), dtype=acc)
    grad_bias = grad_weight.new_empty(parameters[0])
    return (
        loss.new_empty(()),
        loss,
        torch.empty_like(loss),
        torch.empty_like(loss),
        torch.empty_like(input),
        grad_weight,
        grad_bias,
    )


class _FirstOrderOnly(torch.autograd.Function):
    """``t`` (a saved gradient) as a function of ``input`` whose own gradient is an error: the
    saved gradients are constants, so a second derivative through them would be silently 0."""

    @staticmethod
    def forward(ctx, t: Tensor, input: Tensor) -> Tensor:
        return t.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, Tensor]:
        raise RuntimeError(_NO_DOUBLE_BACKWARD)


_OPTIONS = ("ignore_index", "label_smoothing", "z_loss", "softcap", "chunk_size", "use_triton")


def _reduced_setup(ctx, inputs, output):
    input, linear_weight, linear_bias, target, weight, coefficient = inputs[:6]
    ctx.options = dict(zip(_OPTIONS, inputs[6:12]))
    ctx.weight_grad = inputs[12]
    ctx.has_bias = linear_bias is not None
    _, loss, lse, mass, grad_input, grad_weight, grad_bias = output
    ctx.save_for_backward(input, linear_weight, linear_bias, target, weight, coefficient, loss, lse, mass)
    # Held apart from the saved tensors (detached: no reference cycle through the outputs' graph)
    # so the first backward can hand them over, scaled in place, as the gradients themselves.
    ctx.grads = [grad_input.detach(), grad_weight.detach(), grad_bias.detach()]
    # the outputs beside the total are never used: no zero-filled gradients of their sizes (a
    # classifier-sized one among them)
    ctx.set_materialize_grads(False)


def _reduced_backward(ctx, grad_total, *unused):
    if grad_total is None:  # no gradient reached the total (grads are not materialised)
        return (None,) * 13
    input, linear_weight, linear_bias, target, weight, coefficient, loss, lse, mass = ctx.saved_tensors
    grad_coefficient = torch.where(coefficient != 0, loss, torch.zeros_like(loss)) * grad_total
    grads = ctx.grads
    if grads is None or torch.is_grad_enabled():
        if grads is None:
            # a second backward through the graph (retain_graph=True): the forward's pass again,
            # so that its gradients are the first backward's to the bit
            with torch.no_grad():
                grads = list(
                    torch.ops.exportable_loss.linear_cross_entropy_reduced(
                        input, linear_weight, linear_bias, target, weight, coefficient,
                        **ctx.options, weight_grad=ctx.weight_grad,
                    )[4:]
                )  # fmt: skip
            if not torch.is_grad_enabled():  # fresh tensors: scaled in place
                grads = [t.mul_(grad_total.to(t.dtype)) for t in grads]
        if torch.is_grad_enabled():  # create_graph=True: a second derivative must fail, not be 0
            grads = [_FirstOrderOnly.apply(t, input) * grad_total.to(t.dtype) for t in grads]
    else:
        # the first backward: scaled in place and handed over (ctx lets go of them, so autograd
        # takes them as the gradients without a copy)
        ctx.grads = None
        # where grad_output reads for free, 1 (loss.backward()) needs no pass over the gradients
        if not reads_free(grad_total) or float(grad_total) != 1.0:
            grads = [t.mul_(grad_total.to(t.dtype)) for t in grads]
    parameters = (grads[1], grads[2] if ctx.has_bias else None) if ctx.weight_grad else (None, None)
    return (grads[0], *parameters, None, None, grad_coefficient) + (None,) * 7


torch.library.register_autograd(
    "exportable_loss::linear_cross_entropy_reduced", _reduced_backward, setup_context=_reduced_setup
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
    autocast = input.dtype != torch.float64 and torch.amp.is_autocast_available(device)  # autocast leaves float64
    if autocast and torch.is_autocast_enabled(device):
        # as the unfused form under autocast: the matmul in the autocast dtype, the loss in float32
        low = torch.get_autocast_dtype(device)
        input, linear_weight = input.to(low), linear_weight.to(low)
        linear_bias = linear_bias.to(low) if linear_bias is not None else None
        out_dtype = torch.float32
    num_classes, hidden = linear_weight.shape[0], linear_weight.shape[1]
    probabilities = target.is_floating_point()
    rows_target = (
        target.movedim(1, -1).reshape(-1, num_classes) if probabilities else target.reshape(-1).long()
    ).contiguous()
    weight = weight.contiguous() if weight is not None else None
    options = dict(
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=0.0 if logit_softcap is None else logit_softcap,
        chunk_size=0 if chunk_size is None else chunk_size,
        use_triton=_use_triton(backend, input),
    )
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    positions = input.new_empty(input.shape[:-1], dtype=acc)  # the loss's shape, for the reduction
    valid: Optional[Tensor] = None
    target_weight: Optional[Tensor] = None
    if not probabilities:
        w = weight.to(acc) if weight is not None else None
        valid, _, _, target_weight = counted_targets(target.long(), w, ignore_index, num_classes)
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, linear_weight, linear_bias)
    )
    if wants_grad and reduction in ("mean", "sum"):
        # the gradient during the forward: the final scalar grad_output only scales it
        coefficient = reduction_coefficients(positions, reduction, sample_weight, normalizer, valid, target_weight)
        weight_grad = linear_weight.requires_grad or (linear_bias is not None and linear_bias.requires_grad)
        total = torch.ops.exportable_loss.linear_cross_entropy_reduced(
            input.reshape(-1, hidden), linear_weight, linear_bias, rows_target, weight,
            coefficient.reshape(-1), **options, weight_grad=weight_grad,
        )[0]  # fmt: skip
        return total.to(out_dtype)
    loss, _, _ = torch.ops.exportable_loss.linear_cross_entropy_rows(
        input.reshape(-1, hidden), linear_weight, linear_bias, rows_target, weight, **options
    )
    loss = loss.reshape(input.shape[:-1])
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight).to(out_dtype)
