"""Element-wise losses, fused: the op behind the element-wise losses' ``backend="triton"``.

One op computes the element-wise loss ``kind`` and, for ``"mean"``/``"sum"``, the sample-weighted
sum in the same pass (``triton_kernels/pointwise.py``; ``_reference`` off-GPU); its backward
recomputes the derivative from the inputs. The kinds are the table ``POINTWISE_KINDS`` of the
kernel registry; ``fused_pointwise`` is the adapter the element-wise losses call.
"""

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

import exportable_loss.triton_kernels as tk
from exportable_loss._checks import check_choice, check_fused_grads
from exportable_loss._numerics import focal_modulator
from exportable_loss._ops import forbid_double_backward
from exportable_loss._reduction import reduce_loss, sample_weights_like


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


@torch.library.custom_op("exportable_loss::pointwise_loss", mutates_args=())
def pointwise_loss(
    input: Tensor,
    target: Tensor,
    sample_weight: Optional[Tensor],
    weight: Optional[Tensor],
    pos_weight: Optional[Tensor],
    kind: str,
    p1: float,
    p2: float,
    reduce: bool,
) -> Tensor:
    """Element-wise loss ``kind``: ``sum(s * l)`` (0-dim float32) if ``reduce``, else ``l``.

    All tensors contiguous, ``weight``/``pos_weight`` expanded to ``input``'s shape.
    """
    check_choice("kind", kind, tk.POINTWISE_KINDS)
    if tk.can_run(input):
        return tk.kernels("pointwise").pointwise_forward(
            input, target, sample_weight, weight, pos_weight, kind, p1, p2, reduce
        )
    loss = _reference(input, target, weight, pos_weight, kind, p1, p2)
    return _weighted_sum(loss, sample_weight) if reduce else loss.to(input.dtype)


@pointwise_loss.register_fake
def _(input, target, sample_weight, weight, pos_weight, kind, p1, p2, reduce):
    check_choice("kind", kind, tk.POINTWISE_KINDS)
    return input.new_empty((), dtype=torch.float32) if reduce else torch.empty_like(input)


@torch.library.custom_op("exportable_loss::pointwise_loss_backward", mutates_args=())
def pointwise_loss_backward(
    grad: Tensor,
    input: Tensor,
    target: Tensor,
    sample_weight: Optional[Tensor],
    weight: Optional[Tensor],
    pos_weight: Optional[Tensor],
    kind: str,
    p1: float,
    p2: float,
) -> Tensor:
    """Gradient with respect to ``input``; ``grad`` 0-dim for a reduced loss, else per element."""
    grad = grad if grad.dim() == 0 else grad.contiguous()
    if tk.can_run(input):
        return tk.kernels("pointwise").pointwise_backward(
            grad, input, target, sample_weight, weight, pos_weight, kind, p1, p2
        )

    def reference(x: Tensor) -> Tensor:
        loss = _reference(x, target, weight, pos_weight, kind, p1, p2)
        return _weighted_sum(loss, sample_weight) if grad.dim() == 0 else loss

    # autograd is off inside an op's kernel; torch.func differentiates the reference regardless
    vjp = torch.func.vjp(reference, input)[1]
    gx = vjp(grad.float())[0]
    if sample_weight is not None:  # as the kernel: a zero-weight sample gets exactly 0, even where NaN
        s = sample_weights_like(sample_weight, gx)
        gx = torch.where(s != 0, gx, torch.zeros_like(gx))
    return gx.to(input.dtype)


@pointwise_loss_backward.register_fake
def _(grad, input, target, sample_weight, weight, pos_weight, kind, p1, p2):
    return torch.empty_like(input)


def _setup(ctx, inputs, output):
    input, target, sample_weight, weight, pos_weight, ctx.kind, ctx.p1, ctx.p2, ctx.reduce = inputs
    ctx.save_for_backward(input, target, sample_weight, weight, pos_weight)


def _backward(ctx, grad):
    input, target, sample_weight, weight, pos_weight = ctx.saved_tensors
    gx = torch.ops.exportable_loss.pointwise_loss_backward(
        grad,
        input,
        target,
        sample_weight if ctx.reduce else None,
        weight,
        pos_weight,
        kind=ctx.kind,
        p1=ctx.p1,
        p2=ctx.p2,
    )
    return gx, None, None, None, None, None, None, None, None


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
    """An element-wise loss through the fused op: loss, sample weights and sum in one kernel."""
    if not torch.jit.is_scripting():
        check_fused_grads(target, sample_weight)
    x = input.contiguous()
    y = target.contiguous()
    w = weight.expand_as(x).contiguous() if weight is not None else None
    pw = pos_weight.expand_as(x).contiguous() if pos_weight is not None else None
    if reduction == "none" or reduction == "per_sample":
        loss = torch.ops.exportable_loss.pointwise_loss(x, y, None, w, pw, kind=kind, p1=p1, p2=p2, reduce=False)
        return reduce_loss(loss, reduction, sample_weight, normalizer)
    s = sample_weight.contiguous() if sample_weight is not None else None
    total = torch.ops.exportable_loss.pointwise_loss(x, y, s, w, pw, kind=kind, p1=p1, p2=p2, reduce=True)
    return reduce_loss(input, reduction, sample_weight, normalizer, total=total)
