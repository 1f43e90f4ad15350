"""Element-wise losses: binary cross entropy with logits, squared and absolute error, smooth
L1, Huber, Kullback-Leibler divergence and the sigmoid focal loss.

In eager mode, under ``torch.compile`` and under ``torch.export`` a loss uses the fused ATen
operator where one exists (``F.mse_loss`` is about twice as fast as ``(x - y) ** 2`` on a CPU);
under ``torch.jit.script`` and while an ONNX exporter traces, it uses primitive operators that
both ONNX exporters translate faithfully (the exporters cannot export ``l1_loss`` or write an
unstable ``Log(Sigmoid(x))``). Tests hold both formulations to ``torch.nn``'s numbers. With
``backend="triton"`` every loss here runs the fused op of ``exportable_loss._ops.pointwise``.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._dispatch import primitive_path, use_triton
from exportable_loss._numerics import focal_modulator, softplus
from exportable_loss._ops.pointwise import fused_pointwise
from exportable_loss._reduction import (
    DENOMINATOR_DTYPE,
    KL_REDUCTIONS,
    REDUCTIONS,
    counted_gradient,
    element_positions,
    every_element,
    guard_counted_gradient,
    reduce_loss,
    sample_counts,
)
from exportable_loss._registry import declare


def _plain_reduction(
    input: Tensor, reduction: str, sample_weight: Optional[Tensor], normalizer: Optional[Tensor]
) -> bool:
    """True where the fused ATen loss may reduce by itself, exactly as ``reduce_loss`` would:
    an unweighted, non-empty float32/float64 sum or mean (fp16/bf16 accumulate in float32, and
    an empty mean is 0 here, NaN in ATen). It saves the extra passes of a separate reduction."""
    return (
        (reduction == "mean" or reduction == "sum")
        and sample_weight is None
        and normalizer is None
        and (input.dtype == torch.float32 or input.dtype == torch.float64)
        and input.numel() > 0
    )


def _counted(input: Tensor, target: Tensor, sample_weight: Optional[Tensor]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """``input`` and ``target`` through ``counted_gradient``, and the mask of the samples that
    count: samples of weight 0 get exactly 0 gradient in both, even where they hold NaN or Inf."""
    counts = sample_counts(sample_weight, input)
    return counted_gradient(input, counts), counted_gradient(target, counts), counts


def _reduce(
    loss: Tensor,
    x: Tensor,
    t: Tensor,
    counts: Optional[Tensor],
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
) -> Tensor:
    """The reduction of the term computed from ``x, t, counts = _counted(input, target, ...)``."""
    if not torch.jit.is_scripting():
        guard_counted_gradient([x, t], counts, loss)
    return reduce_loss(loss, reduction, sample_weight, normalizer)


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
        input: logits of any shape; dim 0 is the batch when it has a dimension.
        target: probabilities of ``input``'s shape.
        weight: optional element weights, broadcast to ``input``'s shape (as ``torch.nn``).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        pos_weight: optional weight of positive examples, broadcast along the last dimension.
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: ``input``'s shape for ``"none"``, ``(N,)`` for
        ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.

    Examples:
        >>> binary_cross_entropy_with_logits(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
        tensor(1.4100)
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, REDUCTIONS, backend
        )
        _checks.check_device("weight", weight, input)
        _checks.check_device("pos_weight", pos_weight, input)
        # only here: a TorchScript artifact calls the op through its module's forward
        if use_triton(backend, input):
            return fused_pointwise(
                "bce_logits", input, target, reduction, sample_weight, normalizer, weight=weight, pos_weight=pos_weight
            )
    x, target, counts = _counted(input, target, sample_weight)
    if primitive_path():
        log_term = softplus(-x)
        if pos_weight is not None:
            log_term = (1.0 + (pos_weight - 1.0) * target) * log_term
        loss = (1.0 - target) * x + log_term
        if weight is not None:
            loss = loss * weight
        loss = loss.to(input.dtype)
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction, pos_weight=pos_weight)
    else:
        loss = F.binary_cross_entropy_with_logits(x, target, weight, reduction="none", pos_weight=pos_weight).to(
            input.dtype
        )
    return _reduce(loss, x, target, counts, reduction, sample_weight, normalizer)


def mse_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Squared error ``(input - target) ** 2``, as ``torch.nn.functional.mse_loss``.

    Args:
        input: any shape; dim 0 is the batch when it has a dimension.
        target: ``input``'s shape.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: ``input``'s shape for ``"none"``, ``(N,)`` for
        ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.

    Examples:
        >>> mse_loss(torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.zeros(2, 2), reduction="per_sample")
        tensor([ 2.5000, 17.0000])
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, REDUCTIONS, backend
        )
        if use_triton(backend, input):
            return fused_pointwise("mse", input, target, reduction, sample_weight, normalizer)
    x, target, counts = _counted(input, target, sample_weight)
    if primitive_path():
        diff = x - target
        loss = diff * diff
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.mse_loss(input, target, reduction=reduction)
    else:
        loss = F.mse_loss(x, target, reduction="none")
    return _reduce(loss, x, target, counts, reduction, sample_weight, normalizer)


def l1_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Absolute error ``|input - target|``, as ``torch.nn.functional.l1_loss``.

    Args:
        input: any shape; dim 0 is the batch when it has a dimension.
        target: ``input``'s shape.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: ``input``'s shape for ``"none"``, ``(N,)`` for
        ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.

    Examples:
        >>> l1_loss(torch.tensor([1.0, -2.0]), torch.zeros(2), reduction="sum")
        tensor(3.)
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, REDUCTIONS, backend
        )
        if use_triton(backend, input):
            return fused_pointwise("l1", input, target, reduction, sample_weight, normalizer)
    x, target, counts = _counted(input, target, sample_weight)
    if primitive_path():
        loss = torch.abs(x - target)
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.l1_loss(input, target, reduction=reduction)
    else:
        loss = F.l1_loss(x, target, reduction="none")
    return _reduce(loss, x, target, counts, reduction, sample_weight, normalizer)


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

    Args:
        input: any shape; dim 0 is the batch when it has a dimension.
        target: ``input``'s shape.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        beta: the threshold between the quadratic and the linear part (non-negative).
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: ``input``'s shape for ``"none"``, ``(N,)`` for
        ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.

    Examples:
        >>> smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction="none")
        tensor([0.1250, 2.5000])
    """
    if not torch.jit.is_scripting():
        if beta < 0:
            raise ValueError(f"beta must be non-negative; got {beta}")
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, REDUCTIONS, backend
        )
        if use_triton(backend, input):
            return fused_pointwise("smooth_l1", input, target, reduction, sample_weight, normalizer, p1=beta)
    x, target, counts = _counted(input, target, sample_weight)
    if primitive_path():
        diff = torch.abs(x - target)
        if beta == 0.0:
            loss = diff
        else:
            loss = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.smooth_l1_loss(input, target, reduction=reduction, beta=beta)
    else:
        loss = F.smooth_l1_loss(x, target, reduction="none", beta=beta)
    return _reduce(loss, x, target, counts, reduction, sample_weight, normalizer)


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

    Args:
        input: any shape; dim 0 is the batch when it has a dimension.
        target: ``input``'s shape.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        delta: the threshold between the quadratic and the linear part (positive).
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: ``input``'s shape for ``"none"``, ``(N,)`` for
        ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.

    Examples:
        >>> huber_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction="none", delta=2.0)
        tensor([0.1250, 4.0000])
    """
    if not torch.jit.is_scripting():
        if delta <= 0:
            raise ValueError(f"delta must be positive; got {delta}")
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, REDUCTIONS, backend
        )
        if use_triton(backend, input):
            return fused_pointwise("huber", input, target, reduction, sample_weight, normalizer, p1=delta)
    x, target, counts = _counted(input, target, sample_weight)
    if primitive_path():
        diff = torch.abs(x - target)
        loss = torch.where(diff < delta, 0.5 * diff * diff, delta * (diff - 0.5 * delta))
    elif _plain_reduction(input, reduction, sample_weight, normalizer):
        return F.huber_loss(input, target, reduction=reduction, delta=delta)
    else:
        loss = F.huber_loss(x, target, reduction="none", delta=delta)
    return _reduce(loss, x, target, counts, reduction, sample_weight, normalizer)


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

    Args:
        input: log-probabilities, any shape; dim 0 is the batch when it has a dimension.
        target: probabilities (log-probabilities with ``log_target=True``) of ``input``'s shape.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"``, ``"sum"`` or ``"batchmean"`` (the
            sum divided by the batch size, whatever the sample weights); see
            [Reductions][reductions].
        log_target: whether ``target`` holds log-probabilities.
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"`` and
            ``"batchmean"``; no gradient flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: ``input``'s shape for ``"none"``, ``(N,)`` for
        ``"per_sample"``, 0-dim for ``"mean"``, ``"sum"`` and ``"batchmean"``.

    Examples:
        >>> logp = torch.log(torch.tensor([[0.5, 0.5]]))
        >>> kl_div(logp, torch.tensor([[0.9, 0.1]]), reduction="batchmean")
        tensor(0.3681)
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, KL_REDUCTIONS, backend
        )
        if use_triton(backend, input):
            return fused_pointwise(
                "kl_log_target" if log_target else "kl", input, target, reduction, sample_weight, normalizer
            )
    x, target, counts = _counted(input, target, sample_weight)
    if log_target:
        loss = torch.exp(target) * (target - x)
    elif primitive_path():
        entropy = torch.where(target == 0, torch.zeros_like(target), target * torch.log(target))
        loss = entropy - target * x
    else:
        loss = F.kl_div(x, target, reduction="none", log_target=False)
    return _reduce(loss, x, target, counts, reduction, sample_weight, normalizer)


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

    Args:
        input: logits of any shape; dim 0 is the batch when it has a dimension.
        target: binary labels (or probabilities) of ``input``'s shape.
        alpha: weight of the positive class (``1 - alpha`` weighs the negative); a negative value
            turns the class balancing off.
        gamma: the focusing exponent (non-negative).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: ``input``'s shape for ``"none"``, ``(N,)`` for
        ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.

    Examples:
        >>> sigmoid_focal_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]), reduction="none")
        tensor([0.0433, 1.2376])
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, REDUCTIONS, backend
        )
        if use_triton(backend, input):
            return fused_pointwise("focal", input, target, reduction, sample_weight, normalizer, p1=alpha, p2=gamma)
    x, target, counts = _counted(input, target, sample_weight)
    p = torch.sigmoid(x)
    if primitive_path():
        ce = (1.0 - target) * x + softplus(-x)
    else:
        ce = F.binary_cross_entropy_with_logits(x, target, reduction="none")
    p_t = p * target + (1.0 - p) * (1.0 - target)
    loss = ce * focal_modulator(1.0 - p_t, gamma)
    if alpha >= 0:
        loss = (alpha * target + (1.0 - alpha) * (1.0 - target)) * loss
    return _reduce(loss, x, target, counts, reduction, sample_weight, normalizer)


def _kl_denominator(
    module: nn.Module, target: Tensor, sample_weight: Optional[Tensor] = None, num_classes: Optional[int] = None
) -> Tensor:
    """``"batchmean"`` divides by the batch size (whatever the sample weights), ``"mean"`` by the
    weighted element count."""
    if module.reduction == "batchmean":
        batch = target.shape[0] if target.dim() > 0 else 1
        return torch.full((), batch, dtype=DENOMINATOR_DTYPE, device=target.device)
    return every_element(module, target, sample_weight, num_classes)


def _pair(n: int, g: torch.Generator) -> Tuple[Tensor, ...]:
    return torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)


# Modules


@declare(
    name="bce_with_logits",
    function=binary_cross_entropy_with_logits,
    denominator=every_element,
    positions=element_positions,
    kernel="pointwise",
    example=lambda n, g: (torch.randn(n, 3, generator=g), torch.rand(n, 3, generator=g)),
    example_options=(("pos_weight", torch.tensor([1.0, 2.0, 0.5])),),
)
class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy on logits, as ``torch.nn.BCEWithLogitsLoss``.

    The functional twin is
    [binary_cross_entropy_with_logits][exportable_loss.functional.binary_cross_entropy_with_logits].

    Args:
        weight: optional element weights, broadcast to the input's shape (a buffer).
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        pos_weight: optional weight of positive examples, broadcast along the last dimension (a
            buffer).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))(torch.zeros(2, 1), torch.ones(2, 1))
        tensor(1.3863)
    """

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        pos_weight: Optional[Tensor] = None,
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.weight: Optional[Tensor]
        self.pos_weight: Optional[Tensor]

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: logits of any shape; dim 0 is the batch when it has a dimension.
            target: probabilities of ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_pointwise(
                    "bce_logits",
                    input,
                    target,
                    self.reduction,
                    sample_weight,
                    normalizer,
                    weight=self.weight,
                    pos_weight=self.pos_weight,
                )
        return binary_cross_entropy_with_logits(
            input,
            target,
            weight=self.weight,
            reduction=self.reduction,
            pos_weight=self.pos_weight,
            sample_weight=sample_weight,
            normalizer=normalizer,
            backend=self.backend,
        )


@declare(
    name="mse",
    function=mse_loss,
    denominator=every_element,
    positions=element_positions,
    kernel="pointwise",
    example=_pair,
)
class MSELoss(_Loss):
    """Squared error, as ``torch.nn.MSELoss``.

    The functional twin is [mse_loss][exportable_loss.functional.mse_loss].

    Args:
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> MSELoss(reduction="per_sample")(torch.ones(2, 3), torch.zeros(2, 3))
        tensor([1., 1.])
    """

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: any shape; dim 0 is the batch when it has a dimension.
            target: ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_pointwise("mse", input, target, self.reduction, sample_weight, normalizer)
        return mse_loss(input, target, self.reduction, sample_weight, normalizer, self.backend)


@declare(
    name="l1",
    function=l1_loss,
    denominator=every_element,
    positions=element_positions,
    kernel="pointwise",
    example=_pair,
)
class L1Loss(_Loss):
    """Absolute error, as ``torch.nn.L1Loss``.

    The functional twin is [l1_loss][exportable_loss.functional.l1_loss].

    Args:
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> L1Loss(reduction="sum")(torch.tensor([1.0, -2.0]), torch.zeros(2))
        tensor(3.)
    """

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: any shape; dim 0 is the batch when it has a dimension.
            target: ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_pointwise("l1", input, target, self.reduction, sample_weight, normalizer)
        return l1_loss(input, target, self.reduction, sample_weight, normalizer, self.backend)


@declare(
    name="smooth_l1",
    function=smooth_l1_loss,
    denominator=every_element,
    positions=element_positions,
    kernel="pointwise",
    example=_pair,
    example_options=(("beta", 0.5),),
)
class SmoothL1Loss(_Loss):
    """Smooth L1, as ``torch.nn.SmoothL1Loss``.

    The functional twin is [smooth_l1_loss][exportable_loss.functional.smooth_l1_loss].

    Args:
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        beta: the threshold between the quadratic and the linear part (non-negative; 0 is L1).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> SmoothL1Loss(beta=0.5)(torch.tensor([0.25, 2.0]), torch.zeros(2))
        tensor(0.9062)
    """

    __constants__ = _Loss.__constants__ + ["beta"]

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        beta: float = 1.0,
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        if beta < 0.0:
            raise ValueError(f"beta must be non-negative; got {beta}")
        self.beta = float(beta)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: any shape; dim 0 is the batch when it has a dimension.
            target: ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_pointwise(
                    "smooth_l1", input, target, self.reduction, sample_weight, normalizer, p1=self.beta
                )
        return smooth_l1_loss(input, target, self.reduction, self.beta, sample_weight, normalizer, self.backend)


@declare(
    name="huber",
    function=huber_loss,
    denominator=every_element,
    positions=element_positions,
    kernel="pointwise",
    example=_pair,
    example_options=(("delta", 0.5),),
)
class HuberLoss(_Loss):
    """Huber loss, as ``torch.nn.HuberLoss``.

    The functional twin is [huber_loss][exportable_loss.functional.huber_loss].

    Args:
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        delta: the threshold between the quadratic and the linear part (positive).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> HuberLoss(delta=2.0, reduction="none")(torch.tensor([0.5, 3.0]), torch.zeros(2))
        tensor([0.1250, 4.0000])
    """

    __constants__ = _Loss.__constants__ + ["delta"]

    def __init__(self, reduction: str = "mean", delta: float = 1.0, backend: str = "torch") -> None:
        super().__init__(reduction, backend)
        if delta <= 0.0:
            raise ValueError(f"delta must be positive; got {delta}")
        self.delta = float(delta)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: any shape; dim 0 is the batch when it has a dimension.
            target: ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_pointwise("huber", input, target, self.reduction, sample_weight, normalizer, p1=self.delta)
        return huber_loss(input, target, self.reduction, self.delta, sample_weight, normalizer, self.backend)


@declare(
    name="kl_div",
    function=kl_div,
    denominator=_kl_denominator,
    positions=element_positions,
    kernel="pointwise",
    reductions=KL_REDUCTIONS,
    example=lambda n, g: (
        torch.log_softmax(torch.randn(n, 4, generator=g), 1),
        torch.softmax(torch.randn(n, 4, generator=g), 1),
    ),
)
class KLDivLoss(_Loss):
    """Kullback-Leibler divergence, as ``torch.nn.KLDivLoss`` (also ``reduction="batchmean"``).

    The functional twin is [kl_div][exportable_loss.functional.kl_div].

    Args:
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"``, ``"sum"`` or ``"batchmean"`` (the
            sum divided by the batch size, whatever the sample weights); see
            [Reductions][reductions].
        log_target: whether the target holds log-probabilities.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> KLDivLoss(reduction="batchmean")(torch.log(torch.tensor([[0.5, 0.5]])), torch.tensor([[0.9, 0.1]]))
        tensor(0.3681)
    """

    __constants__ = _Loss.__constants__ + ["log_target"]

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        log_target: bool = False,
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.log_target = log_target

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: log-probabilities, any shape; dim 0 is the batch when it has a dimension.
            target: probabilities (log-probabilities with ``log_target=True``) of ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"`` and
                ``"batchmean"``; no gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_pointwise(
                    "kl_log_target" if self.log_target else "kl",
                    input,
                    target,
                    self.reduction,
                    sample_weight,
                    normalizer,
                )
        return kl_div(input, target, self.reduction, self.log_target, sample_weight, normalizer, self.backend)


@declare(
    name="focal",
    function=sigmoid_focal_loss,
    denominator=every_element,
    positions=element_positions,
    kernel="pointwise",
    example=lambda n, g: (torch.randn(n, 3, generator=g), (torch.rand(n, 3, generator=g) > 0.5).float()),
)
class FocalLoss(_Loss):
    """Sigmoid focal loss, as ``torchvision.ops.sigmoid_focal_loss`` (default reduction ``"mean"``).

    The functional twin is [sigmoid_focal_loss][exportable_loss.functional.sigmoid_focal_loss].

    Args:
        alpha: weight of the positive class (``1 - alpha`` weighs the negative); a negative value
            turns the class balancing off.
        gamma: the focusing exponent (non-negative).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> FocalLoss(reduction="sum")(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
        tensor(1.2809)
    """

    __constants__ = _Loss.__constants__ + ["alpha", "gamma"]

    def __init__(
        self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean", backend: str = "torch"
    ) -> None:
        super().__init__(reduction, backend)
        if gamma < 0.0:
            raise ValueError(f"gamma must be non-negative; got {gamma}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: logits of any shape; dim 0 is the batch when it has a dimension.
            target: binary labels (or probabilities) of ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_pointwise(
                    "focal", input, target, self.reduction, sample_weight, normalizer, p1=self.alpha, p2=self.gamma
                )
        return sigmoid_focal_loss(
            input, target, self.alpha, self.gamma, self.reduction, sample_weight, normalizer, self.backend
        )
