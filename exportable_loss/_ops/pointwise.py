"""Element-wise losses, fused: the op behind the element-wise losses' ``backend="triton"``.

One op computes the element-wise loss ``kind`` and, for ``"mean"``/``"sum"``, the sample-weighted
sum in the same pass (``triton_kernels/pointwise.py``; ``_reference`` off-GPU); its backward
recomputes the derivative from the inputs. The kinds are the table ``POINTWISE_KINDS`` of the
kernel registry; ``fused_pointwise`` is the adapter the element-wise losses call.
"""

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import exportable_loss.triton_kernels as tk
from exportable_loss._checks import check_choice, check_fused_grads
from exportable_loss._numerics import focal_modulator
from exportable_loss._ops import forbid_double_backward
from exportable_loss._reduction import mean_denominator, reduce_loss, sample_weights_like


def _focal(x: Tensor, y: Tensor, alpha: float, gamma: float) -> Tensor:
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * focal_modulator(1 - p_t, gamma)  # a finite gradient for 0 < gamma < 1, as the kernel's
    return (alpha * y + (1 - alpha) * (1 - y)) * loss if alpha >= 0 else loss


# (x, y, weight, pos_weight, p1, p2) -> l, in float32, for each kind of the kernel's table
_REFERENCES: Dict[str, Callable[..., Tensor]] = {
    "mse": lambda x, y, w, pw, p1, p2: (x - y) ** 2,
    "l1": lambda x, y, w, pw, p1, p2: (x - y).abs(),
    "smooth_l1": lambda x, y, w, pw, p1, p2: F.smooth_l1_loss(x, y, reduction="none", beta=p1),
    "huber": lambda x, y, w, pw, p1, p2: F.huber_loss(x, y, reduction="none", delta=p1),
    "bce_logits": lambda x, y, w, pw, p1, p2: F.binary_cross_entropy_with_logits(
        x, y, None if w is None else w.float(), reduction="none", pos_weight=None if pw is None else pw.float()
    ),
    "kl": lambda x, y, w, pw, p1, p2: F.kl_div(x, y, reduction="none"),
    "kl_log_target": lambda x, y, w, pw, p1, p2: F.kl_div(x, y, reduction="none", log_target=True),
    "focal": lambda x, y, w, pw, p1, p2: _focal(x, y, p1, p2),
}
if tuple(_REFERENCES) != tk.POINTWISE_KINDS:
    raise ImportError(
        f"the pointwise references {tuple(_REFERENCES)} do not match the kernel's kinds {tk.POINTWISE_KINDS}"
    )


def _reference(
    x: Tensor, y: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor], kind: str, p1: float, p2: float
) -> Tensor:
    """What the kernel computes per element, in PyTorch (float32)."""
    return _REFERENCES[kind](x.float(), y.float(), weight, pos_weight, p1, p2)


def _weighted_sum(loss: Tensor, sample_weight: Optional[Tensor]) -> Tensor:
    if sample_weight is not None:
        s = sample_weights_like(sample_weight, loss).float()
        loss = torch.where(s != 0, loss * s, torch.zeros_like(loss))
    return loss.sum()


def _denominator(
    input: Tensor, sample_weight: Optional[Tensor], normalizer: Optional[Tensor], reduction: str
) -> Tensor:
    """What ``reduce_loss`` divides ``sum(s * l)`` by, as the kernels' second stage saves it for the
    backward (0-dim float32; 1 for a sum)."""
    if reduction == "sum" or (reduction == "batchmean" and input.dim() == 0):
        return torch.ones((), device=input.device)
    if normalizer is not None:
        return normalizer.to(torch.float32, copy=True)  # an output may not alias an input
    if reduction == "batchmean":
        return torch.full((), float(max(input.shape[0], 1)), device=input.device)
    den = mean_denominator(input, sample_weight, dtype=torch.float32)
    return den if sample_weight is not None else den.clamp_min(1.0)


def _scaled(grad: Tensor, denominator: Tensor) -> Tensor:
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(denominator), grad.float() / torch.where(zero, 1.0, denominator))


@torch.library.custom_op("exportable_loss::pointwise_loss", mutates_args=())
def pointwise_loss(
    input: Tensor,
    target: Tensor,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    weight: Optional[Tensor],
    pos_weight: Optional[Tensor],
    kind: str,
    p1: float,
    p2: float,
    reduction: str,
) -> Tuple[Tensor, Tensor]:
    """Element-wise loss ``kind``: ``(loss, denominator)``.

    ``reduction="none"``: ``l`` in ``input``'s dtype (``sample_weight`` and ``normalizer``
    unused; ``denominator`` empty). ``"mean"``, ``"sum"``, ``"batchmean"``: the 0-dim reduced
    loss in ``input``'s dtype and the 0-dim float32 denominator it divided ``sum(s * l)`` by.
    All tensors contiguous, ``weight``/``pos_weight`` expanded to ``input``'s shape.
    """
    check_choice("kind", kind, tk.POINTWISE_KINDS)
    if tk.can_run(input):
        kernels = tk.kernels("pointwise")
        if reduction == "none":
            loss = kernels.pointwise_forward(input, target, None, weight, pos_weight, kind, p1, p2)
            return loss, loss.new_empty(0, dtype=torch.float32)
        return kernels.pointwise_reduced_forward(
            input, target, sample_weight, weight, pos_weight, normalizer, kind, p1, p2, reduction
        )
    loss = _reference(input, target, weight, pos_weight, kind, p1, p2)
    if reduction == "none":
        return loss.to(input.dtype), loss.new_empty(0)
    total = _weighted_sum(loss, sample_weight)
    return reduce_loss(input, reduction, sample_weight, normalizer, total=total), _denominator(
        input, sample_weight, normalizer, reduction
    )


@pointwise_loss.register_fake
def _(input, target, sample_weight, normalizer, weight, pos_weight, kind, p1, p2, reduction):
    check_choice("kind", kind, tk.POINTWISE_KINDS)
    if reduction == "none":
        return torch.empty_like(input), input.new_empty(0, dtype=torch.float32)
    return input.new_empty(()), input.new_empty((), dtype=torch.float32)


@torch.library.custom_op("exportable_loss::pointwise_loss_backward", mutates_args=())
def pointwise_loss_backward(
    grad: Tensor,
    input: Tensor,
    target: Tensor,
    sample_weight: Optional[Tensor],
    denominator: Optional[Tensor],
    weight: Optional[Tensor],
    pos_weight: Optional[Tensor],
    kind: str,
    p1: float,
    p2: float,
) -> Tensor:
    """Gradient with respect to ``input``: of ``sum(grad * l)`` for per-element ``grad``
    (``denominator`` None), or of the reduced loss for its 0-dim ``grad``."""
    grad = grad if denominator is not None else grad.contiguous()
    if tk.can_run(input):
        return tk.kernels("pointwise").pointwise_backward(
            grad, input, target, sample_weight, weight, pos_weight, kind, p1, p2, denominator
        )

    def reference(x: Tensor) -> Tensor:
        loss = _reference(x, target, weight, pos_weight, kind, p1, p2)
        return _weighted_sum(loss, sample_weight) if denominator is not None else loss

    # autograd is off inside an op's kernel; torch.func differentiates the reference regardless
    vjp = torch.func.vjp(reference, input)[1]
    upstream = _scaled(grad, denominator) if denominator is not None else grad.float()
    gx = vjp(upstream)[0]
    if sample_weight is not None:  # as the kernel: a zero-weight sample gets exactly 0, even where NaN
        s = sample_weights_like(sample_weight, gx)
        gx = torch.where(s != 0, gx, torch.zeros_like(gx))
    return gx.to(input.dtype)


@pointwise_loss_backward.register_fake
def _(grad, input, target, sample_weight, denominator, weight, pos_weight, kind, p1, p2):
    return torch.empty_like(input)


def _setup(ctx, inputs, output):
    input, target, sample_weight, _, weight, pos_weight, ctx.kind, ctx.p1, ctx.p2, ctx.reduction = inputs
    ctx.save_for_backward(input, target, sample_weight, weight, pos_weight, output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the outputs nobody uses


def _backward(ctx, grad, grad_denominator):
    input, target, sample_weight, weight, pos_weight, denominator = ctx.saved_tensors
    reduced = ctx.reduction != "none"
    gx = torch.ops.exportable_loss.pointwise_loss_backward(
        grad,
        input,
        target,
        sample_weight if reduced else None,
        denominator if reduced else None,
        weight,
        pos_weight,
        kind=ctx.kind,
        p1=ctx.p1,
        p2=ctx.p2,
    )
    return gx, None, None, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::pointwise_loss", _backward, setup_context=_setup)
forbid_double_backward(
    "exportable_loss::pointwise_loss_backward",
    "backend='triton' does not support double backward (a gradient of the loss's gradient); use backend='torch' for it",
)


def fused_pointwise(
    kind: str,
    input: Tensor,
    target: Tensor,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    p1: float = 0.0,
    p2: float = 0.0,
    weight: Optional[Tensor] = None,
    pos_weight: Optional[Tensor] = None,
) -> Tensor:
    """An element-wise loss through the fused op: loss, sample weights, sum and division in two
    kernel launches (``mean``, ``sum``, ``batchmean``); ``none``/``per_sample`` reduce ``l``
    with the shared routine."""
    if not torch.jit.is_scripting():
        check_fused_grads(target, sample_weight)
    x = input.contiguous()
    y = target.contiguous()
    w = weight.expand_as(x).contiguous() if weight is not None else None
    pw = pos_weight.expand_as(x).contiguous() if pos_weight is not None else None
    if reduction == "none" or reduction == "per_sample":
        loss, den = torch.ops.exportable_loss.pointwise_loss(
            x, y, None, None, w, pw, kind=kind, p1=p1, p2=p2, reduction="none"
        )
        return reduce_loss(loss, reduction, sample_weight, normalizer)
    s = sample_weight.contiguous() if sample_weight is not None else None
    loss, den = torch.ops.exportable_loss.pointwise_loss(
        x, y, s, normalizer, w, pw, kind=kind, p1=p1, p2=p2, reduction=reduction
    )
    return loss
