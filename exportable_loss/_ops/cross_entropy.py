"""Cross entropy over rows of logits, fused: the op behind ``cross_entropy(backend="triton")``.

Logits are viewed as ``(N, C, D)`` (``D`` the product of the dimensions after the class
dimension) and each of the ``N * D`` rows gets its loss, log-sum-exp and target mass (``sum_c
q_c w_c``) in one pass over its logits: the Triton kernels of ``triton_kernels/cross_entropy.py``
on a GPU (or under ``TRITON_INTERPRET=1``), ``rows_loss`` elsewhere. The backward turns the
saved log-sum-exp and mass into the gradient in one more pass (``rows_grad`` off-GPU),
optionally in the logits' own memory. ``fused_cross_entropy`` is the adapter
``cross_entropy`` calls; the chunked linear cross entropy uses the same two reference functions
on chunks of rows.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

import exportable_loss.triton_kernels as tk
from exportable_loss._checks import check_fused_grads
from exportable_loss._dispatch import reads_free
from exportable_loss._ops import forbid_double_backward
from exportable_loss._reduction import mean_denominator, reduce_loss
from exportable_loss._targets import counted_targets

# ---------------------------------------------------------------- the reference, on (rows, C)


def _softcapped(logits: Tensor, softcap: float) -> Tensor:
    return torch.tanh(logits / softcap).mul_(softcap) if softcap > 0 else logits


def _rows_forward_(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    inplace: bool = True,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """The kernels' forward formula in PyTorch on (r, C) float32/64 logits, in their memory
    (``inplace=False``: out of place, for autograd to differentiate).

    Returns ``(loss, lse, mass, e, s, dcap)``: the per-row loss, log-sum-exp and target mass
    (``sum_c q_c w_c``); ``e = exp(z - max z)`` written over ``logits`` (``z`` the soft-capped
    logits) and its row sums ``s``, so the softmax is ``e / s`` and ``log_softmax(z) = (z - max
    z) - log s``; and ``d z / d logits`` (None without soft-capping). The passes: max, shift,
    exp, sum (log_softmax's own), no second buffer of the logits' size.
    """
    num_classes = logits.shape[1]
    dcap: Optional[Tensor] = None
    z = logits
    if softcap > 0:
        z = logits.div_(softcap).tanh_() if inplace else torch.tanh(logits / softcap)
        dcap = 1.0 - z * z  # d(c * tanh(x / c)) / dx
        z = z.mul_(softcap) if inplace else z * softcap
    top = z.amax(1, keepdim=True)  # NaN for a row holding a NaN; -inf masked classes stay -inf below
    shifted = z.sub_(top) if inplace else z - top
    w = weight.to(z.dtype) if weight is not None else None
    probabilities = target.is_floating_point()
    # what reads the shifted logits, before they turn into exponentials:
    # sum_c q_c w_c log p_c = sum_c q_c w_c shifted_c - log(s) * mass
    if probabilities:
        q = target.to(z.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        wq = (q.mul_(w) if inplace else q * w) if w is not None else q
        mass = wq.sum(1)
        target_term = torch.bmm(wq.unsqueeze(1), shifted.unsqueeze(2)).reshape(-1)
    else:
        counted, in_range, safe, target_weight = counted_targets(target, w, ignore_index, num_classes)
        target_term = shifted.gather(1, safe.unsqueeze(1)).squeeze(1)
        mass = w.sum().expand_as(target_term) if w is not None else torch.full_like(target_term, float(num_classes))
        if label_smoothing > 0:
            # inf where a class is masked with -inf, as in torch.nn (without smoothing, no 0 * inf)
            smooth_term = shifted @ w if w is not None else shifted.sum(1)
    e = shifted.exp_() if inplace else shifted.exp()
    s = e.sum(1)
    log_s = s.log()
    lse = top.squeeze(1) + log_s
    if probabilities:
        return -(target_term - log_s * mass) + z_loss * lse * lse, lse, mass, e, s, dcap
    w_t = target_weight if target_weight is not None else torch.ones_like(lse)
    loss = (1.0 - label_smoothing) * w_t * (log_s - target_term) + z_loss * lse * lse * w_t
    if label_smoothing > 0:
        loss = loss - label_smoothing / num_classes * (smooth_term - log_s * mass)
    loss = torch.where(in_range, loss, torch.full_like(loss, float("nan")))
    return torch.where(counted, loss, torch.zeros_like(loss)), lse, mass, e, s, dcap


def rows_loss(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Loss, log-sum-exp and target mass of (r, C) float32/64 logits: the kernels' formula in
    PyTorch. ``target`` is (r,) int64 class indices or (r, C) probabilities. Out of place, so
    autograd can differentiate it (see ``rows_loss_`` for the in-place form)."""
    loss, lse, mass, _, _, _ = _rows_forward_(
        logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, inplace=False
    )
    return loss, lse, mass


def rows_loss_(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``rows_loss``, overwriting ``logits`` (a buffer of the caller's that it no longer needs)."""
    loss, lse, mass, _, _, _ = _rows_forward_(logits, target, weight, ignore_index, label_smoothing, z_loss, softcap)
    return loss, lse, mass


def rows_grad(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    grad_rows: Tensor,
    counts: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """Gradient of ``sum(grad_rows * loss)`` for (r, C) float32/64 logits, computed in
    ``logits``' memory from the saved log-sum-exp and target mass; rows outside ``counts``
    (ignored, or zero upstream gradient) get exactly 0, even from NaN logits."""
    dcap: Optional[Tensor] = None
    if softcap > 0:
        z = torch.tanh(logits / softcap)
        dcap = 1.0 - z * z  # d(c * tanh(x / c)) / dx
        logits = z.mul_(softcap)
    p = logits.sub_(lse.unsqueeze(1)).exp_()
    return _grad_from_exponentials(
        p, None, dcap, target, weight, lse, mass, grad_rows, counts, ignore_index, label_smoothing, z_loss
    )


def rows_loss_and_grad_(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    grad_rows: Tensor,
    counts: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``rows_loss`` and ``rows_grad`` in one pass over (r, C) float32/64 logits: the gradient
    comes from the exponentials the loss computed, in the logits' memory (no second buffer, no
    second exponential). Returns ``(loss, lse, mass, grad)``; ``grad`` is ``logits``."""
    loss, lse, mass, e, s, dcap = _rows_forward_(logits, target, weight, ignore_index, label_smoothing, z_loss, softcap)
    grad = _grad_from_exponentials(
        e, s, dcap, target, weight, lse, mass, grad_rows, counts, ignore_index, label_smoothing, z_loss
    )
    return loss, lse, mass, grad


def _grad_from_exponentials(
    e: Tensor,
    s: Optional[Tensor],
    dcap: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    grad_rows: Tensor,
    counts: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
) -> Tensor:
    """The gradient of ``sum(grad_rows * loss)`` in the memory of ``e``, where the softmax is
    ``e / s`` (``s`` None: ``e`` is the softmax)."""
    num_classes = e.shape[1]
    # a row outside counts gets a zero scale: its gradient is exactly 0 where its logits are finite
    g = torch.where(counts, grad_rows.to(e.dtype), 0.0)
    # d loss / d z_j = p_j * (mass + 2 z_loss lse [w_t]) - (the weight the target puts on class j)
    w = weight.to(e.dtype) if weight is not None else None
    if target.is_floating_point():
        q = target.to(e.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        wq = q.mul_(w) if w is not None else q
        scale = (mass + 2.0 * z_loss * lse) * g
        grad = e.mul_((scale if s is None else scale / s).unsqueeze(1)).sub_(wq.mul_(g.unsqueeze(1)))
    else:
        _, _, safe, target_weight = counted_targets(target, w, ignore_index, num_classes)
        w_t = target_weight if target_weight is not None else torch.ones_like(lse)
        hard = (1.0 - label_smoothing) * w_t * g
        total = hard + label_smoothing / num_classes * mass * g + 2.0 * z_loss * lse * w_t * g
        grad = e.mul_((total if s is None else total / s).unsqueeze(1))
        grad.scatter_add_(1, safe.unsqueeze(1), -hard.unsqueeze(1))
        if label_smoothing > 0:
            uniform = w.unsqueeze(0) if w is not None else torch.ones_like(grad[:1])
            grad.sub_(uniform * (label_smoothing / num_classes) * g.unsqueeze(1))
    if dcap is not None:
        grad.mul_(dcap)
    zero = rows_to_zero(counts, lse)
    return grad if zero is None else grad.masked_fill_(zero.unsqueeze(1), 0.0)


def rows_to_zero(counts: Tensor, lse: Tensor) -> Optional[Tensor]:
    """The rows outside ``counts`` whose gradient a zero scale leaves NaN (their logits are not
    finite, so neither is their log-sum-exp ``lse``), to be zeroed; None when there is none. A
    CPU reads that for free (``reads_free``); elsewhere it is every row outside ``counts``."""
    outside = ~counts
    if not reads_free(lse):
        return outside
    outside = outside & ~torch.isfinite(lse)
    return outside if bool(outside.any()) else None


def _as_rows(t: Tensor) -> Tensor:
    """(N, C, D) -> (N * D, C); (N, D) index targets -> (N * D,)."""
    if t.dim() == 2:
        return t.reshape(-1)
    return t.permute(0, 2, 1).reshape(-1, t.shape[1])


def _reduce_rows(
    loss: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    ignore_index: int,
    num_classes: int,
    reduction: str,
) -> Tuple[Tensor, Tensor]:
    """What the kernels' second stage computes, through the one reduction routine: the ``mean``
    or ``sum`` of the (N * D,) float32 row losses of (N, C, D) logits, and what it divided by
    (0-dim float32; 1 for a sum)."""
    n = target.shape[0]
    loss = loss.reshape(n, -1) if n > 0 else loss.reshape(0, 1)
    if reduction == "sum":
        return reduce_loss(loss, "sum", sample_weight), torch.ones((), device=loss.device)
    valid: Optional[Tensor] = None
    target_weight: Optional[Tensor] = None
    if not target.is_floating_point():
        w32 = weight.to(torch.float32) if weight is not None else None
        valid, _, _, target_weight = counted_targets(target.reshape(loss.shape), w32, ignore_index, num_classes)
    if normalizer is not None:
        den = normalizer.to(torch.float32, copy=True)  # an output may not alias an input
    else:
        den = mean_denominator(loss, sample_weight, valid, target_weight, torch.float32)
    return reduce_loss(loss, "mean", sample_weight, normalizer, valid, target_weight), den


def _reduced_row_grads(grad: Tensor, denominator: Tensor, sample_weight: Optional[Tensor], rows: int) -> Tensor:
    """Each row's share of the 0-dim gradient of a reduced loss, as the backward kernel computes
    it: ``grad / denominator * s``, 0 where the denominator or ``s`` is 0."""
    zero = denominator == 0
    g = torch.where(zero, torch.zeros_like(denominator), grad.float() / torch.where(zero, 1.0, denominator))
    g = g.expand(rows)
    if sample_weight is None:
        return g
    s = sample_weight.float().reshape(-1).repeat_interleave(rows // sample_weight.numel()) if rows > 0 else g
    return torch.where(s != 0, g * s, torch.zeros_like(g))


# ---------------------------------------------------------------- the op


@torch.library.custom_op("exportable_loss::cross_entropy", mutates_args=())
def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    inplace_backward: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cross entropy of (N, C, D) logits: ``(loss, lse, mass, denominator)``.

    ``reduction="none"``: the float32 (N*D,) row losses (the caller applies ``sample_weight``;
    ``denominator`` is empty). ``"mean"``/``"sum"``: the 0-dim loss in the logits' dtype with
    ``sample_weight`` and ``normalizer`` applied, and the 0-dim float32 ``denominator`` it
    divided by. ``lse`` and ``mass`` (float32, (N*D,)): what the backward reads.
    """
    reduced = reduction != "none"
    if tk.can_run(logits):
        kernels = tk.kernels("cross_entropy")
        if reduced:
            return kernels.cross_entropy_reduced_forward(
                logits, target, weight, sample_weight, normalizer,
                ignore_index, label_smoothing, z_loss, softcap, mean=reduction == "mean",
            )  # fmt: skip
        loss, lse, mass = kernels.cross_entropy_forward(
            logits, target, weight, ignore_index, label_smoothing, z_loss, softcap
        )
        return loss, lse, mass, lse.new_empty(0)
    rows_target = _as_rows(target)
    # in place on a copy, unless autograd differentiates this code (an exported training step
    # replaces the op by it; the dispatcher runs the op with gradients disabled)
    rows = _as_rows(logits)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss, lse, mass = rows_loss(rows.float(), rows_target, weight, ignore_index, label_smoothing, z_loss, softcap)
    else:
        rows = rows.to(torch.float32, copy=True)
        loss, lse, mass = rows_loss_(rows, rows_target, weight, ignore_index, label_smoothing, z_loss, softcap)
    if not reduced:
        return loss, lse, mass, lse.new_empty(0)
    out, den = _reduce_rows(loss, target, weight, sample_weight, normalizer, ignore_index, logits.shape[1], reduction)
    return out.to(logits.dtype), lse, mass, den


@cross_entropy.register_fake
def _(logits, target, weight, sample_weight, normalizer, reduction, ignore_index, label_smoothing, z_loss, softcap, ip):
    rows = logits.new_empty((logits.shape[0] * logits.shape[2],), dtype=torch.float32)
    if reduction == "none":
        return torch.empty_like(rows), torch.empty_like(rows), torch.empty_like(rows), rows.new_empty(0)
    out = logits.new_empty(())
    return out, torch.empty_like(rows), torch.empty_like(rows), rows.new_empty(())


@torch.library.custom_op("exportable_loss::cross_entropy_backward", mutates_args=())
def cross_entropy_backward(
    grad: Tensor,
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    sample_weight: Optional[Tensor],
    denominator: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """Gradient with respect to the (N, C, D) logits: of ``sum(grad * loss)`` for (N*D,) row
    gradients (``denominator`` None), or of the reduced loss for its 0-dim ``grad``."""
    if tk.can_run(logits):
        return tk.kernels("cross_entropy").cross_entropy_backward(
            grad, logits, target, weight, lse, mass, ignore_index, label_smoothing, z_loss, softcap,
            sample_weight=sample_weight, denominator=denominator,
        )  # fmt: skip
    rows_target = _as_rows(target)
    rows = lse.shape[0]
    grad_rows = grad if denominator is None else _reduced_row_grads(grad, denominator, sample_weight, rows)
    counts = grad_rows != 0  # as the kernel: a row with zero upstream gradient gets exactly 0
    if not rows_target.is_floating_point():
        counts = counts & (rows_target != ignore_index)
    x = _as_rows(logits).to(torch.float32, copy=True)  # rows_grad writes into it
    g = rows_grad(x, rows_target, weight, lse, mass, grad_rows, counts, ignore_index, label_smoothing, z_loss, softcap)
    out = torch.empty_like(logits)
    n, num_classes, spatial = logits.shape
    out.copy_(g.reshape(n, spatial, num_classes).permute(0, 2, 1))
    return out


@cross_entropy_backward.register_fake
def _(grad, logits, target, weight, sample_weight, denominator, lse, mass, ignore_index, label_smoothing, z_loss, cap):
    return torch.empty_like(logits)


def _setup(ctx, inputs, output):
    logits, target, weight, sample_weight, _, ctx.reduction, *options, ctx.inplace = inputs
    ctx.ignore_index, ctx.label_smoothing, ctx.z_loss, ctx.softcap = options
    _, lse, mass, denominator = output
    ctx.save_for_backward(logits, target, weight, sample_weight, lse, mass, denominator)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the outputs nobody uses


def _backward(ctx, grad, grad_lse, grad_mass, grad_denominator):
    logits, target, weight, sample_weight, lse, mass, denominator = ctx.saved_tensors
    if ctx.reduction == "none":
        sample_weight, denominator = None, None
    options = dict(
        ignore_index=ctx.ignore_index, label_smoothing=ctx.label_smoothing, z_loss=ctx.z_loss, softcap=ctx.softcap
    )
    if ctx.inplace and tk.can_run(logits):
        # opt-in: the gradient overwrites the caller's logits (they must not be needed again)
        grad_logits = tk.kernels("cross_entropy").cross_entropy_backward(
            grad, logits, target, weight, lse, mass, **options,
            inplace=True, sample_weight=sample_weight, denominator=denominator,
        )  # fmt: skip
    else:
        grad_logits = torch.ops.exportable_loss.cross_entropy_backward(
            grad, logits, target, weight, sample_weight, denominator, lse, mass, **options
        )
    return grad_logits, None, None, None, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::cross_entropy", _backward, setup_context=_setup)
forbid_double_backward(
    "exportable_loss::cross_entropy_backward",
    "backend='triton' does not support double backward (a gradient of the loss's gradient); use backend='torch' for it",
)

# ---------------------------------------------------------------- the adapter cross_entropy calls


def fused_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    z_loss: float,
    logit_softcap: Optional[float],
    inplace_backward: bool,
    class_dim: int = 1,
) -> Tensor:
    """Cross entropy through the fused op (arguments checked already). Classes last
    (``class_dim=-1``) are moved to dim 1 as a view: the op reads the logits through their
    strides, so no layout takes a copy. ``mean`` and ``sum`` come out of the op reduced (two
    kernel launches); ``none`` and ``per_sample`` reduce the row losses with the shared routine."""
    if not torch.jit.is_scripting():
        check_fused_grads(target, sample_weight)
        inplace_backward = inplace_backward and not torch.compiler.is_compiling()
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    t = target.unsqueeze(0) if unbatched else target
    if class_dim != 1 and x.dim() > 2:
        x = x.movedim(-1, 1)
        t = t.movedim(-1, 1) if t.is_floating_point() else t
    n, num_classes = x.shape[0], x.shape[1]
    spatial = 1
    for size in x.shape[2:]:
        spatial *= size
    x3 = x.reshape(n, num_classes, spatial)
    probabilities = t.is_floating_point()
    if probabilities:
        t3 = t.reshape(n, num_classes, spatial)
        if t3.stride() != x3.stride():  # the kernel walks target and logits with one set of strides
            x3, t3 = x3.contiguous(), t3.contiguous()
    else:
        t3 = t.reshape(n, spatial).long().contiguous()
    reduced = reduction == "mean" or reduction == "sum"
    s: Optional[Tensor] = None
    if reduced and sample_weight is not None:
        # one weight per sample (N,), or one per position as (N, D): the rows' order
        s = (sample_weight.reshape(n, spatial) if sample_weight.dim() > 1 else sample_weight).contiguous()
    loss, lse, mass, den = torch.ops.exportable_loss.cross_entropy(
        x3,
        t3,
        weight.contiguous() if weight is not None else None,
        s,
        normalizer if reduced else None,
        reduction="none" if not reduced else reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=0.0 if logit_softcap is None else logit_softcap,
        inplace_backward=inplace_backward,
    )
    if reduced:
        return loss
    loss = loss.reshape(x.shape[:1] + x.shape[2:])
    if unbatched:
        loss = loss.squeeze(0)
    valid: Optional[Tensor] = None
    if reduction == "per_sample" and not probabilities:
        valid = counted_targets(target.long(), None, ignore_index, num_classes)[0]
    return reduce_loss(loss, reduction, sample_weight, None, valid).to(input.dtype)
