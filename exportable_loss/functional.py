"""Loss functions: the element-wise term of each loss, then the shared reduction.

Every function is pure PyTorch and scriptable. In eager mode, under ``torch.compile`` and under
``torch.export`` a loss uses the fused ATen operator where one exists (``F.mse_loss`` is about
twice as fast as ``(x - y) ** 2`` on a CPU); under ``torch.jit.script`` and while an ONNX
exporter traces, it uses primitive operators that both ONNX exporters translate faithfully
(the exporters drop ``label_smoothing``, cannot export ``l1_loss``, or write an unstable
``Log(Sigmoid(x))``). Tests hold both formulations to ``torch.nn``'s numbers.

Arguments shared by every function:
    reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"`` (``kl_div`` also
        ``"batchmean"``); see SPEC "Reductions".
    sample_weight: optional ``(N,)`` tensor, one weight per sample along dim 0.
    normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``/``"batchmean"``;
        a constant (no gradient flows into it).
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from exportable_loss import _checks, _ops  # noqa: F401  (_ops registers torch.ops.exportable_loss)
from exportable_loss._detection import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss  # noqa: F401
from exportable_loss._dispatch import primitive_path, use_triton
from exportable_loss._distillation import distillation_loss, jsd_loss  # noqa: F401
from exportable_loss._probabilistic import (  # noqa: F401
    cosine_embedding_loss,
    gaussian_nll_loss,
    margin_ranking_loss,
    poisson_nll_loss,
    triplet_margin_loss,
)
from exportable_loss._reduction import KL_REDUCTIONS, REDUCTIONS, reduce_loss
from exportable_loss._segmentation import dice_loss, tversky_loss  # noqa: F401
from exportable_loss._targets import class_terms, counted_targets

__all__ = [
    "binary_cross_entropy_with_logits",
    "complete_box_iou_loss",
    "cosine_embedding_loss",
    "cross_entropy",
    "dice_loss",
    "distance_box_iou_loss",
    "distillation_loss",
    "gaussian_nll_loss",
    "generalized_box_iou_loss",
    "huber_loss",
    "jsd_loss",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "margin_ranking_loss",
    "mse_loss",
    "nll_loss",
    "poisson_nll_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "triplet_margin_loss",
    "tversky_loss",
]


def _fused_pointwise(
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
        _checks.check_fused_grads(target, sample_weight)
    x = input.contiguous()
    y = target.contiguous()
    w = weight.expand_as(x).contiguous() if weight is not None else None
    pw = pos_weight.expand_as(x).contiguous() if pos_weight is not None else None
    if reduction == "none" or reduction == "per_sample":
        loss = torch.ops.exportable_loss.pointwise_loss(x, y, None, w, pw, kind, p1, p2, False)
        return reduce_loss(loss, reduction, sample_weight, normalizer)
    s = sample_weight.contiguous() if sample_weight is not None else None
    total = torch.ops.exportable_loss.pointwise_loss(x, y, s, w, pw, kind, p1, p2, True)
    return reduce_loss(input, reduction, sample_weight, normalizer, total=total)


def _fused_cross_entropy(
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
) -> Tensor:
    """Cross entropy through the fused op: one program per row of (N, C, D) logits."""
    if not torch.jit.is_scripting():
        _checks.check_fused_grads(target, sample_weight)
        inplace_backward = inplace_backward and not torch.compiler.is_compiling()
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    t = target.unsqueeze(0) if unbatched else target
    n, num_classes = x.shape[0], x.shape[1]
    spatial = 1
    for size in x.shape[2:]:
        spatial *= size
    x3 = x.reshape(n, num_classes, spatial)
    probabilities = t.is_floating_point()
    if probabilities:
        # the kernel walks target and logits with one set of strides
        x3 = x3.contiguous()
        t3 = t.reshape(n, num_classes, spatial).contiguous()
    else:
        t3 = t.reshape(n, spatial).long().contiguous()
    w = weight.contiguous() if weight is not None else None
    softcap = 0.0 if logit_softcap is None else logit_softcap
    rows, _, _ = torch.ops.exportable_loss.cross_entropy_rows(
        x3, t3, w, ignore_index, label_smoothing, z_loss, softcap, inplace_backward
    )
    loss = rows.reshape(x.shape[:1] + x.shape[2:])
    if unbatched:
        loss = loss.squeeze(0)
    if probabilities:
        return reduce_loss(loss, reduction, sample_weight, normalizer).to(input.dtype)
    w32 = weight.to(torch.float32) if weight is not None else None
    valid, _, _, target_weight = counted_targets(target.long(), w32, ignore_index, num_classes)
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight).to(input.dtype)


def _plain_reduction(
    input: Tensor, reduction: str, sample_weight: Optional[Tensor], normalizer: Optional[Tensor]
) -> bool:
    """True where the fused ATen loss may reduce by itself, exactly as the SPEC routine would:
    an unweighted, non-empty float32/float64 sum or mean (fp16/bf16 accumulate in float32, and
    an empty mean is 0 here, NaN in ATen). It saves the extra passes of a separate reduction."""
    return (
        (reduction == "mean" or reduction == "sum")
        and sample_weight is None
        and normalizer is None
        and (input.dtype == torch.float32 or input.dtype == torch.float64)
        and input.numel() > 0
    )


def _softplus_neg(x: Tensor) -> Tensor:
    # log(1 + exp(-x)), finite for every x once exported (Log(Sigmoid) is -inf for x <= -20).
    return torch.log1p(torch.exp(-torch.abs(x))) + torch.relu(-x)


def _class_prologue(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    validate: bool,
) -> Tuple[Tensor, Tensor]:
    probabilities = _checks.check_class_target(input, target, weight)
    _checks.check_reduction_args(reduction, input, input.dim() > 1, sample_weight, normalizer, REDUCTIONS)
    if validate and not probabilities:
        _checks.validate_class_indices(target, input.shape[0 if input.dim() == 1 else 1], ignore_index)
        _checks.validate_finite("weight", weight)
        _checks.validate_finite("sample_weight", sample_weight)
    return _checks.autocast_float32(input, target)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    z_loss: float = 0.0,
    logit_softcap: Optional[float] = None,
    validate: bool = False,
    backend: str = "torch",
    inplace_backward: bool = False,
) -> Tensor:
    """Cross entropy between logits and class indices or class probabilities.

    Matches ``torch.nn.functional.cross_entropy`` for ``"none"``, ``"mean"`` and ``"sum"``, and
    adds the SPEC reductions, ``sample_weight``, ``normalizer``, ``z_loss`` and
    ``logit_softcap``.

    Args:
        input: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)`` (any integer dtype), or
            class probabilities of ``input``'s shape (floating dtype).
        weight: optional ``(C,)`` class weights.
        ignore_index: class index whose positions do not count (class-index targets only).
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution.
        z_loss: adds ``z_loss * logsumexp(logits) ** 2`` to every counted position, before
            its class weight is applied.
        logit_softcap: ``c`` replaces the logits by ``c * tanh(logits / c)`` first.
        validate: check every class index in eager mode (synchronises with the device).
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see the backends page).
        inplace_backward: Triton backend, eager mode only: the backward writes the gradient into
            ``input``'s memory (saves one logits-sized buffer; ``input`` must not be used again).

    Returns:
        The loss in ``input``'s dtype: ``"none"`` has the target's shape (positions),
        ``"per_sample"`` is ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> cross_entropy(logits, target, sample_weight=torch.tensor([1.0, 0.0]))
        tensor(0.2413)
    """
    if not torch.jit.is_scripting():
        input, target = _class_prologue(
            input, target, weight, ignore_index, reduction, sample_weight, normalizer, validate
        )
    if use_triton(backend, input):
        return _fused_cross_entropy(
            input,
            target,
            weight,
            ignore_index,
            reduction,
            label_smoothing,
            sample_weight,
            normalizer,
            z_loss,
            logit_softcap,
            inplace_backward,
        )
    class_dim = 0 if input.dim() == 1 else 1
    num_classes = input.shape[class_dim]
    if logit_softcap is not None:
        input = logit_softcap * torch.tanh(input / logit_softcap)
    lse: Optional[Tensor] = None
    if z_loss != 0.0:
        lse = torch.logsumexp(input, class_dim, keepdim=True)
        logp = input - lse
    else:
        logp = torch.log_softmax(input, class_dim)
    weight_b: Optional[Tensor] = None
    if weight is not None:
        shape = [1] * input.dim()
        shape[class_dim] = num_classes
        weight_b = weight.to(input.dtype).reshape(shape)

    if target.is_floating_point():
        if label_smoothing > 0.0:
            target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
        prod = logp * target if weight_b is None else logp * target * weight_b
        loss = -prod.sum(class_dim)
        if lse is not None:
            loss = loss + z_loss * lse.squeeze(class_dim) ** 2
        return reduce_loss(loss, reduction, sample_weight, normalizer)

    loss, valid, target_weight = class_terms(logp, target, weight, ignore_index)
    if label_smoothing > 0.0:
        smooth = -(logp.sum(class_dim) if weight_b is None else (logp * weight_b).sum(class_dim))
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / num_classes) * smooth
    if lse is not None:
        z_term = z_loss * lse.squeeze(class_dim) ** 2
        loss = loss + (z_term if target_weight is None else z_term * target_weight)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight)


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    validate: bool = False,
) -> Tensor:
    """Negative log likelihood of log-probabilities at class indices.

    Matches ``torch.nn.functional.nll_loss`` for ``"none"``, ``"mean"`` and ``"sum"``.

    Args:
        input: log-probabilities ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)``.
        weight: optional ``(C,)`` class weights.
        ignore_index: class index whose positions do not count.
        validate: check every class index in eager mode (synchronises with the device).

    Example:
        >>> logp = torch.log_softmax(torch.tensor([[2.0, 0.5], [0.1, 0.2]]), dim=1)
        >>> nll_loss(logp, torch.tensor([0, -100]), reduction="per_sample")
        tensor([0.2014, 0.0000])
    """
    if not torch.jit.is_scripting():
        if target.is_floating_point():
            raise ValueError(f"target must hold integer class indices; got dtype {target.dtype}")
        input, target = _class_prologue(
            input, target, weight, ignore_index, reduction, sample_weight, normalizer, validate
        )
    loss, valid, target_weight = class_terms(input, target, weight, ignore_index)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    reduction: str = "mean",
    pos_weight: Optional[Tensor] = None,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Binary cross entropy on logits, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Args:
        input: logits of any shape.
        target: probabilities of ``input``'s shape.
        weight: optional element weights, broadcast to ``input``'s shape.
        pos_weight: optional weight of positive examples, broadcast along the last dimension.

    Example:
        >>> binary_cross_entropy_with_logits(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
        tensor(1.4100)
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(input, target, reduction, sample_weight, normalizer, REDUCTIONS)
        _checks.check_device("weight", weight, input)
        _checks.check_device("pos_weight", pos_weight, input)
    if use_triton(backend, input):
        return _fused_pointwise(
            "bce_logits", input, target, reduction, sample_weight, normalizer, weight=weight, pos_weight=pos_weight
        )
    if primitive_path():
        softplus = _softplus_neg(input)
        if pos_weight is not None:
            softplus = (1.0 + (pos_weight - 1.0) * target) * softplus
        loss = (1.0 - target) * input + softplus
        if weight is not None:
            loss = loss * weight
        loss = loss.to(input.dtype)
    else:
        loss = F.binary_cross_entropy_with_logits(input, target, weight, reduction="none", pos_weight=pos_weight).to(
            input.dtype
        )
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def mse_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Squared error ``(input - target) ** 2``, as ``torch.nn.functional.mse_loss``.

    Example:
        >>> mse_loss(torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.zeros(2, 2), reduction="per_sample")
        tensor([ 2.5000, 17.0000])
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(input, target, reduction, sample_weight, normalizer, REDUCTIONS)
    if use_triton(backend, input):
        return _fused_pointwise("mse", input, target, reduction, sample_weight, normalizer)
    if primitive_path():
        diff = input - target
        loss = diff * diff
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.mse_loss(input, target, reduction=reduction)
    else:
        loss = F.mse_loss(input, target, reduction="none")
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def l1_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Absolute error ``|input - target|``, as ``torch.nn.functional.l1_loss``.

    Example:
        >>> l1_loss(torch.tensor([1.0, -2.0]), torch.zeros(2), reduction="sum")
        tensor(3.)
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(input, target, reduction, sample_weight, normalizer, REDUCTIONS)
    if use_triton(backend, input):
        return _fused_pointwise("l1", input, target, reduction, sample_weight, normalizer)
    if primitive_path():
        loss = torch.abs(input - target)
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.l1_loss(input, target, reduction=reduction)
    else:
        loss = F.l1_loss(input, target, reduction="none")
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    beta: float = 1.0,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Smooth L1: ``0.5 * d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 * beta``.

    As ``torch.nn.functional.smooth_l1_loss``; ``beta=0`` is the L1 loss.

    Example:
        >>> smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction="none")
        tensor([0.1250, 2.5000])
    """
    if not torch.jit.is_scripting():
        if beta < 0:
            raise ValueError(f"beta must be non-negative; got {beta}")
        input, target = _checks.prepare_pointwise(input, target, reduction, sample_weight, normalizer, REDUCTIONS)
    if use_triton(backend, input):
        return _fused_pointwise("smooth_l1", input, target, reduction, sample_weight, normalizer, beta)
    if primitive_path():
        diff = torch.abs(input - target)
        if beta == 0.0:
            loss = diff
        else:
            loss = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.smooth_l1_loss(input, target, reduction=reduction, beta=beta)
    else:
        loss = F.smooth_l1_loss(input, target, reduction="none", beta=beta)
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Huber: ``0.5 * d**2`` where ``|d| < delta``, else ``delta * (|d| - 0.5 * delta)``.

    As ``torch.nn.functional.huber_loss``.

    Example:
        >>> huber_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction="none", delta=2.0)
        tensor([0.1250, 4.0000])
    """
    if not torch.jit.is_scripting():
        if delta <= 0:
            raise ValueError(f"delta must be positive; got {delta}")
        input, target = _checks.prepare_pointwise(input, target, reduction, sample_weight, normalizer, REDUCTIONS)
    if use_triton(backend, input):
        return _fused_pointwise("huber", input, target, reduction, sample_weight, normalizer, delta)
    if primitive_path():
        diff = torch.abs(input - target)
        loss = torch.where(diff < delta, 0.5 * diff * diff, delta * (diff - 0.5 * delta))
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.huber_loss(input, target, reduction=reduction, delta=delta)
    else:
        loss = F.huber_loss(input, target, reduction="none", delta=delta)
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def kl_div(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    log_target: bool = False,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Kullback-Leibler divergence of log-probabilities ``input`` from ``target``.

    As ``torch.nn.functional.kl_div``: ``target * (log(target) - input)``, or with
    ``log_target=True``, ``exp(target) * (target - input)``. ``"mean"`` averages over every
    element as ``torch.nn`` does; ``"batchmean"`` divides the sum by the batch size.

    Example:
        >>> logp = torch.log(torch.tensor([[0.5, 0.5]]))
        >>> kl_div(logp, torch.tensor([[0.9, 0.1]]), reduction="batchmean")
        tensor(0.3681)
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(input, target, reduction, sample_weight, normalizer, KL_REDUCTIONS)
    if use_triton(backend, input):
        return _fused_pointwise(
            "kl_log_target" if log_target else "kl", input, target, reduction, sample_weight, normalizer
        )
    if log_target:
        loss = torch.exp(target) * (target - input)
    elif primitive_path():
        entropy = torch.where(target == 0, torch.zeros_like(target), target * torch.log(target))
        loss = entropy - target * input
    else:
        loss = F.kl_div(input, target, reduction="none", log_target=False)
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def sigmoid_focal_loss(
    input: Tensor,
    target: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Sigmoid focal loss (Lin et al.), as ``torchvision.ops.sigmoid_focal_loss``.

    ``alpha_t * (1 - p_t) ** gamma * bce_with_logits(input, target)``; a negative ``alpha``
    turns the class balancing off. The default reduction is ``"mean"`` (torchvision's is
    ``"none"``).

    Example:
        >>> sigmoid_focal_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]), reduction="none")
        tensor([0.0433, 1.2376])
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(input, target, reduction, sample_weight, normalizer, REDUCTIONS)
    if use_triton(backend, input):
        return _fused_pointwise("focal", input, target, reduction, sample_weight, normalizer, alpha, gamma)
    p = torch.sigmoid(input)
    if primitive_path():
        ce = (1.0 - target) * input + _softplus_neg(input)
    else:
        ce = F.binary_cross_entropy_with_logits(input, target, reduction="none")
    p_t = p * target + (1.0 - p) * (1.0 - target)
    loss = ce * (1.0 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1.0 - alpha) * (1.0 - target)) * loss
    return reduce_loss(loss, reduction, sample_weight, normalizer)


# Last: the fused linear cross entropy builds on cross_entropy above.
from exportable_loss._linear_ce import linear_cross_entropy  # noqa: E402, F401
