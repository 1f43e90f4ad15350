"""The one reduction routine every loss goes through.

A loss hands over its element-wise term ``loss`` (positions that do not count already exactly
0) and, where it has one, the mask of counted positions and their denominator weights. This
module applies the sample weights and reduces, as the Reductions section of docs/semantics.md
says.
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from exportable_loss._dispatch import eager, reads_free
from exportable_loss._numerics import accumulation_dtype, to_dtype

REDUCTIONS = ("none", "per_sample", "mean", "sum")
KL_REDUCTIONS = REDUCTIONS + ("batchmean",)
# Denominators computed ahead of the forward pass (exportable_loss.distributed) stay exact
# counts far beyond float32's 2**24.
DENOMINATOR_DTYPE = torch.float64


def _safe_divide(total: Tensor, denominator: Tensor) -> Tensor:
    # A zero denominator gives 0 and zero gradients, never NaN (a deliberate difference from torch.nn).
    if not torch.jit.is_scripting():
        # a CPU in eager mode reads a scalar denominator for free: no where when it is not 0
        if denominator.dim() == 0 and reads_free(denominator) and float(denominator.detach()) != 0.0:
            return total / denominator
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(total), total / torch.where(zero, 1.0, denominator))


def sample_weights_like(sample_weight: Tensor, loss: Tensor) -> Tensor:
    """``sample_weight`` broadcastable to ``loss``: one weight per position (the loss's shape)
    as it is, one per sample (``(N,)``) over every non-batch dimension."""
    if sample_weight.dim() == loss.dim():
        return sample_weight
    return sample_weight.reshape([-1] + [1] * (loss.dim() - 1))


def reduce_loss(
    loss: Tensor,
    reduction: str,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
    position_weight: Optional[Tensor] = None,
    total: Optional[Tensor] = None,
) -> Tensor:
    """Reduce an element-wise loss.

    Args:
        loss: element-wise loss ``l``, shape ``(N, ...)`` or 0-dim for an unbatched input, with
            positions that do not count already set to exactly 0.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"``, ``"sum"`` or ``"batchmean"``.
        sample_weight: ``(N,)`` weights, broadcast over every non-batch dimension, or one weight
            per position (``loss``'s shape).
        normalizer: 0-dim denominator for ``"mean"``/``"batchmean"``; no gradient flows into it.
        valid: boolean mask of the positions that count (``ignore_index``); ``None``: all count.
        position_weight: the denominator weight of each position for ``"mean"`` (a class weight,
            0 where not counted); ``None``: 1 for every counted position.
        total: ``sum(s * l)`` computed already (a fused kernel); ``loss`` then only gives the
            shape and dtype (mean, sum and batchmean only).

    Returns:
        The reduced loss in ``loss``'s dtype; weights are applied and sums accumulate in at
        least float32.
    """
    out_dtype = loss.dtype
    acc = accumulation_dtype(out_dtype)
    batched = loss.dim() > 0
    if sample_weight is not None and total is None:
        scalar = reduction != "none" and reduction != "per_sample"
        if scalar and sample_weight.dim() == 1 and loss.dim() > 1:
            # one weight per sample, reduced to a scalar: each sample's sum times its weight,
            # without a loss-sized product (a pass and an allocation, forward and backward)
            term, s = loss.sum(dim=list(range(1, loss.dim())), dtype=acc), sample_weight
        else:
            term, s = loss, sample_weights_like(sample_weight, loss)
        # In the accumulation dtype: a half-precision product overflows long before the sum.
        term, s = to_dtype(term, acc), to_dtype(s, acc)
        finite: Optional[Tensor] = None
        if not torch.jit.is_scripting():
            if scalar:
                finite = _finite_total(term, s, sample_weight)
        if finite is not None:
            total = finite
        else:
            # A zero-weight sample contributes exactly 0, even where its loss is NaN or Inf.
            weighted = term * s
            weighted = torch.where(s != 0, weighted, torch.zeros_like(weighted))
            if scalar:
                total = weighted.sum(dtype=acc)  # loss keeps the element-wise shape, for the mean
            else:
                loss = weighted

    if reduction == "none":
        return to_dtype(loss, out_dtype)
    if reduction == "per_sample":
        if loss.dim() <= 1:
            return to_dtype(loss, out_dtype)
        dims: List[int] = list(range(1, loss.dim()))
        per_sample_total = loss.sum(dim=dims, dtype=acc)
        if sample_weight is not None and sample_weight.dim() > 1:
            # weights per position: each sample's weighted mean over its counted positions
            s_acc = to_dtype(sample_weight, acc)
            counted = s_acc if valid is None else torch.where(valid, s_acc, torch.zeros_like(s_acc))
            return to_dtype(_safe_divide(per_sample_total, counted.sum(dim=dims, dtype=acc)), out_dtype)
        if valid is None:
            count = loss.numel() // loss.shape[0] if loss.shape[0] > 0 else 1
            return to_dtype(per_sample_total / max(count, 1), out_dtype)
        count_t = valid.sum(dim=dims, dtype=acc).clamp_min(1.0)
        return to_dtype(per_sample_total / count_t, out_dtype)

    if total is None:
        total = loss.sum(dtype=acc)
    if reduction == "sum":
        return to_dtype(total, out_dtype)
    if normalizer is not None:
        return to_dtype(_safe_divide(total, to_dtype(normalizer.detach(), total.dtype)), out_dtype)
    if reduction == "batchmean":
        if not batched:
            return to_dtype(total, out_dtype)
        return to_dtype(total / max(loss.shape[0], 1), out_dtype)
    # reduction == "mean"
    if position_weight is None and valid is None and sample_weight is None:
        return to_dtype(total / max(loss.numel(), 1), out_dtype)
    return to_dtype(_safe_divide(total, mean_denominator(loss, sample_weight, valid, position_weight, acc)), out_dtype)


def _finite_total(term: Tensor, s: Tensor, sample_weight: Tensor) -> Optional[Tensor]:
    """``sum(term * s)`` where it is finite, read for free (``reads_free``): then no zero-weight
    sample holds a NaN or Inf, and the ``where`` that would zero them changes nothing. None
    otherwise, and where ``sample_weight`` takes a gradient (the ``where`` leaves a zero-weight
    sample's loss out of it). One product-sum (``dot``) where ``term`` holds one value per sample."""
    if sample_weight.requires_grad or not reads_free(term):
        return None
    total = torch.dot(term, s) if term.dim() == 1 and s.dim() == 1 else (term * s).sum(dtype=term.dtype)
    return total if math.isfinite(float(total.detach())) else None


def reduction_coefficients(
    loss: Tensor,
    reduction: str,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
    position_weight: Optional[Tensor] = None,
) -> Tensor:
    """What each position's ``l`` is multiplied by in a ``"mean"``/``"sum"``/``"batchmean"``
    result, for a fused op that computes the reduced loss and its gradient in one pass: the
    result is ``sum(where(c != 0, c * l, 0))`` and ``c`` is the gradient each position receives.
    The same rules as ``reduce_loss`` (``loss`` gives only the shape and dtype): 0 at
    positions that do not count or have sample weight 0, and everywhere for a zero denominator.
    """
    acc = accumulation_dtype(loss.dtype)
    c = torch.ones(loss.shape, dtype=acc, device=loss.device)
    if sample_weight is not None:
        c = c * sample_weights_like(sample_weight, loss).to(acc)
    if valid is not None:
        c = torch.where(valid, c, torch.zeros_like(c))
    if reduction == "sum":
        return c
    if normalizer is not None:
        denominator = normalizer.detach().to(acc)
    elif reduction == "batchmean":
        denominator = torch.full((), max(loss.shape[0], 1) if loss.dim() > 0 else 1, dtype=acc, device=loss.device)
    else:
        denominator = mean_denominator(loss, sample_weight, valid, position_weight, acc)
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(c), c / torch.where(zero, 1.0, denominator))


def sample_counts(sample_weight: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    """The samples (or positions) that count, weight not 0, as a mask broadcastable to ``like``
    (``sample_weight`` as ``sample_weights_like`` shapes it); None where every one counts: without
    sample weights, and where none is 0 and that is read for free (``reads_free``), which spares
    the mask, the views and the checks built on it."""
    if sample_weight is None:
        return None
    if not torch.jit.is_scripting():
        if reads_free(sample_weight) and bool(sample_weight.all()):
            return None
    return sample_weights_like(sample_weight, like) != 0


def counted_gradient(input: Tensor, counts: Optional[Tensor]) -> Tensor:
    """What a loss computes its term from when the positions outside ``counts`` (a boolean mask
    broadcastable to ``input``; None: all count) are zeroed afterwards: their gradient is then
    exactly 0 too, even where ``input`` (or anything the term mixes it with) is NaN or Inf
    (autograd alone gives ``0 * NaN``). Every differentiable input of a loss goes through it:
    a tensor broadcast over several positions (a shared variance) goes through it expanded to
    their shape, so each position's share of its gradient is zeroed separately.

    Beyond eager mode this is ``where(counts, input, input.detach())``, which compilers fuse. In
    eager mode that would cost a pass over ``input`` each way, so a view of ``input`` comes back
    instead; ``guard_counted_gradient`` hooks onto it once the term is computed.
    """
    if counts is None or not (input.requires_grad and torch.is_grad_enabled()):
        return input
    if torch.jit.is_scripting():
        return torch.where(counts, input, input.detach())
    else:
        if not eager():
            return torch.where(counts, input, input.detach())
        return input.view_as(input)


def guard_counted_gradient(views: List[Tensor], counts: Optional[Tensor], witness: Tensor) -> None:
    """Eager mode: zero the gradient of each of ``views`` (from ``counted_gradient``) outside
    ``counts`` where it would not be 0 already, i.e. where ``witness`` (the loss before its
    uncounted positions were zeroed, broadcastable to every view) is not finite. Zeroing there
    is always right; the witness only spares the pass where nothing needs it."""
    views = [v for v in views if v.requires_grad]
    if counts is None or len(views) == 0 or not torch.is_grad_enabled() or not eager():
        return
    if counts.device.type == "cpu" and bool(counts.all()):
        return  # every position counts (a CPU reads this for free)
    bad = ~counts & ~torch.isfinite(witness.detach())
    if bad.device.type == "cpu" and not bool(bad.any()):
        return  # nothing to zero: no pass over the gradients (a GPU would synchronise for this check,
        # so there each view's gradient takes its one `where` pass)

    def hook(grad: Optional[Tensor]) -> Optional[Tensor]:
        if grad is None:
            return grad
        return torch.where(bad, torch.zeros((), dtype=grad.dtype, device=grad.device), grad)

    for view in views:
        view.register_hook(hook)


def mean_denominator(
    loss: Tensor,
    sample_weight: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
    position_weight: Optional[Tensor] = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """What ``reduction="mean"`` divides by: the position weights (class weights of the
    counted targets, or 1 per counted position) times the sample weights (per sample or per
    position), summed; without either, the element count. ``loss`` gives only the shape (and
    the default dtype).
    """
    acc = accumulation_dtype(loss.dtype) if dtype is None else dtype
    if position_weight is None and valid is not None:
        position_weight = valid
    if position_weight is not None:
        w = to_dtype(position_weight, acc)
        if sample_weight is not None:
            w = w * to_dtype(sample_weights_like(sample_weight, loss), acc)
        return w.sum(dtype=acc)
    if sample_weight is not None:
        # per sample or per position, each weight counts for the elements it covers
        per_sample_count = loss.numel() // max(sample_weight.numel(), 1) if loss.shape[0] > 0 else 1
        weights = sample_weight.sum(dtype=acc)
        return weights if per_sample_count == 1 else weights * per_sample_count
    return torch.full((), loss.numel(), dtype=acc, device=loss.device)


def element_positions(module: nn.Module, target: Tensor) -> Tuple[int, ...]:
    """The positions of a loss whose element-wise term has ``target``'s shape."""
    return tuple(target.shape)


def every_element(
    module: nn.Module, target: Tensor, sample_weight: Optional[Tensor] = None, num_classes: Optional[int] = None
) -> Tensor:
    """The ``"mean"`` denominator of a loss whose element-wise term has ``target``'s shape and
    counts everywhere: the elements, each sample's times its weight."""
    return mean_denominator(target, sample_weight, dtype=DENOMINATOR_DTYPE)


def every_row(
    module: nn.Module, target: Tensor, sample_weight: Optional[Tensor] = None, num_classes: Optional[int] = None
) -> Tensor:
    """The ``"mean"`` denominator of a loss with one term per row of ``target`` (its last
    dimension holds a box, an embedding, a class distribution): the rows, times their weights."""
    rows = target.select(-1, 0) if target.dim() > 0 else target
    return mean_denominator(rows, sample_weight, dtype=DENOMINATOR_DTYPE)
