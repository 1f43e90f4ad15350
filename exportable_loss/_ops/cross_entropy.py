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
from exportable_loss._ops import forbid_double_backward
from exportable_loss._reduction import reduce_loss
from exportable_loss._targets import counted_targets

# ---------------------------------------------------------------- the reference, on (rows, C)


def _softcapped(logits: Tensor, softcap: float) -> Tensor:
    return torch.tanh(logits / softcap).mul_(softcap) if softcap > 0 else logits


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
    PyTorch. ``target`` is (r,) int64 class indices or (r, C) probabilities."""
    num_classes = logits.shape[1]
    z = _softcapped(logits, softcap)
    logp = torch.log_softmax(z, 1)
    # max(logp) = max(z) - lse, finite wherever the row has a finite logit (logp[:, 0] alone is
    # -inf for a class masked with -inf)
    lse = z.amax(1) - logp.amax(1)
    w = weight.to(z.dtype) if weight is not None else None
    if target.is_floating_point():
        q = target.to(z.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        wq = q * w if w is not None else q
        return -(logp * wq).sum(1) + z_loss * lse * lse, lse, wq.sum(1)
    counted, in_range, safe, target_weight = counted_targets(target, w, ignore_index, num_classes)
    w_t = target_weight if target_weight is not None else torch.ones_like(lse)
    mass = w.sum().expand_as(lse) if w is not None else torch.full_like(lse, float(num_classes))
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = (1.0 - label_smoothing) * w_t * nll + z_loss * lse * lse * w_t
    if label_smoothing > 0:
        # inf where a class is masked with -inf, as in torch.nn (without smoothing, no 0 * inf)
        loss = loss - label_smoothing / num_classes * (logp @ w if w is not None else logp.sum(1))
    loss = torch.where(in_range, loss, torch.full_like(loss, float("nan")))
    return torch.where(counted, loss, torch.zeros_like(loss)), lse, mass


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
    num_classes = logits.shape[1]
    g = grad_rows.to(logits.dtype)
    dcap: Optional[Tensor] = None
    if softcap > 0:
        z = torch.tanh(logits / softcap)
        dcap = 1.0 - z * z  # d(c * tanh(x / c)) / dx
        logits = z.mul_(softcap)
    # d loss / d z_j = p_j * (mass + 2 z_loss lse [w_t]) - (the weight the target puts on class j)
    p = logits.sub_(lse.unsqueeze(1)).exp_()
    w = weight.to(p.dtype) if weight is not None else None
    if target.is_floating_point():
        q = target.to(p.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        wq = q.mul_(w) if w is not None else q
        grad = p.mul_(((mass + 2.0 * z_loss * lse) * g).unsqueeze(1)).sub_(wq.mul_(g.unsqueeze(1)))
    else:
        _, _, safe, target_weight = counted_targets(target, w, ignore_index, num_classes)
        w_t = target_weight if target_weight is not None else torch.ones_like(lse)
        hard = (1.0 - label_smoothing) * w_t * g
        total = hard + label_smoothing / num_classes * mass * g + 2.0 * z_loss * lse * w_t * g
        grad = p.mul_(total.unsqueeze(1))
        grad.scatter_add_(1, safe.unsqueeze(1), -hard.unsqueeze(1))
        if label_smoothing > 0:
            uniform = w.unsqueeze(0) if w is not None else torch.ones_like(grad[:1])
            grad.sub_(uniform * (label_smoothing / num_classes) * g.unsqueeze(1))
    if dcap is not None:
        grad.mul_(dcap)
    return torch.where(counts.unsqueeze(1), grad, torch.zeros_like(grad))


def _as_rows(t: Tensor) -> Tensor:
    """(N, C, D) -> (N * D, C); (N, D) index targets -> (N * D,)."""
    if t.dim() == 2:
        return t.reshape(-1)
    return t.permute(0, 2, 1).reshape(-1, t.shape[1])


# ---------------------------------------------------------------- the op


@torch.library.custom_op("exportable_loss::cross_entropy_rows", mutates_args=())
def cross_entropy_rows(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    inplace_backward: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-row cross entropy of (N, C, D) logits: float32 (N*D,) loss, log-sum-exp, target mass."""
    if tk.can_run(logits):
        return tk.kernels("cross_entropy").cross_entropy_forward(
            logits, target, weight, ignore_index, label_smoothing, z_loss, softcap
        )
    return rows_loss(_as_rows(logits).float(), _as_rows(target), weight, ignore_index, label_smoothing, z_loss, softcap)


@cross_entropy_rows.register_fake
def _(logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, inplace_backward):
    rows = logits.new_empty((logits.shape[0] * logits.shape[2],), dtype=torch.float32)
    return rows, torch.empty_like(rows), torch.empty_like(rows)


@torch.library.custom_op("exportable_loss::cross_entropy_rows_backward", mutates_args=())
def cross_entropy_rows_backward(
    grad_loss: Tensor,
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """Gradient of sum(grad_loss * loss) with respect to the (N, C, D) logits."""
    if tk.can_run(logits):
        return tk.kernels("cross_entropy").cross_entropy_backward(
            grad_loss, logits, target, weight, lse, mass, ignore_index, label_smoothing, z_loss, softcap
        )
    rows_target = _as_rows(target)
    counts = grad_loss != 0  # as the kernel: a row with zero upstream gradient gets exactly 0
    if not rows_target.is_floating_point():
        counts = counts & (rows_target != ignore_index)
    x = _as_rows(logits).to(torch.float32, copy=True)  # rows_grad writes into it
    grad = rows_grad(
        x, rows_target, weight, lse, mass, grad_loss, counts, ignore_index, label_smoothing, z_loss, softcap
    )
    out = torch.empty_like(logits)
    n, num_classes, spatial = logits.shape
    out.copy_(grad.reshape(n, spatial, num_classes).permute(0, 2, 1))
    return out


@cross_entropy_rows_backward.register_fake
def _(grad_loss, logits, target, weight, lse, mass, ignore_index, label_smoothing, z_loss, softcap):
    return torch.empty_like(logits)


def _setup(ctx, inputs, output):
    logits, target, weight, ctx.ignore_index, ctx.label_smoothing, ctx.z_loss, ctx.softcap, ctx.inplace = inputs
    _, lse, mass = output
    ctx.save_for_backward(logits, target, weight, lse, mass)


def _backward(ctx, grad_loss, grad_lse, grad_mass):
    logits, target, weight, lse, mass = ctx.saved_tensors
    options = dict(
        ignore_index=ctx.ignore_index, label_smoothing=ctx.label_smoothing, z_loss=ctx.z_loss, softcap=ctx.softcap
    )
    if ctx.inplace and tk.can_run(logits):
        # opt-in: the gradient overwrites the caller's logits (they must not be needed again)
        grad = tk.kernels("cross_entropy").cross_entropy_backward(
            grad_loss, logits, target, weight, lse, mass, **options, inplace=True
        )
    else:
        grad = torch.ops.exportable_loss.cross_entropy_rows_backward(
            grad_loss, logits, target, weight, lse, mass, **options
        )
    return grad, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::cross_entropy_rows", _backward, setup_context=_setup)
forbid_double_backward(
    "exportable_loss::cross_entropy_rows_backward",
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
    """Cross entropy through the fused op (arguments checked already), then the reduction.
    Classes last (``class_dim=-1``) are moved to dim 1 as a view: the op reads the logits
    through their strides, so no layout takes a copy."""
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
    rows, _, _ = torch.ops.exportable_loss.cross_entropy_rows(
        x3,
        t3,
        weight.contiguous() if weight is not None else None,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=0.0 if logit_softcap is None else logit_softcap,
        inplace_backward=inplace_backward,
    )
    loss = rows.reshape(x.shape[:1] + x.shape[2:])
    if unbatched:
        loss = loss.squeeze(0)
    if probabilities:
        return reduce_loss(loss, reduction, sample_weight, normalizer).to(input.dtype)
    w32 = weight.to(torch.float32) if weight is not None else None
    valid, _, _, target_weight = counted_targets(target.long(), w32, ignore_index, num_classes)
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight).to(input.dtype)
