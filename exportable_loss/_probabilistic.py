"""Probabilistic and ranking losses: Poisson and Gaussian NLL, margin ranking, triplet margin, cosine embedding.

Each is written with the operators ATen's own composite implementation uses, in the same order,
so eager mode gives ``torch.nn``'s numbers and gradients, and every path (TorchScript,
``torch.compile``, ``torch.export``, both ONNX exporters) sees only operators it translates
faithfully (``torch.linalg.vector_norm`` exports exactly for every ``p``). None of them has a
fused kernel: every backend runs this PyTorch formulation.
"""

import math
from typing import Optional, Union

import torch
from torch import Tensor

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._dispatch import eager, reads_free
from exportable_loss._numerics import autocast_float32
from exportable_loss._reduction import (
    REDUCTIONS,
    counted_gradient,
    element_positions,
    every_element,
    every_row,
    guard_counted_gradient,
    reduce_loss,
    sample_counts,
)
from exportable_loss._registry import declare


def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    log_input: bool = True,
    full: bool = False,
    eps: float = 1e-8,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Poisson negative log likelihood, as ``torch.nn.functional.poisson_nll_loss``.

    ``exp(input) - target * input`` (``log_input=True``: ``input`` is the log-rate), or
    ``input - target * log(input + eps)`` (``log_input=False``: ``input`` is the rate). With
    ``full=True`` the Stirling approximation of ``log(target!)``,
    ``target * log(target) - target + 0.5 * log(2 * pi * target)``, is added where
    ``target > 1`` (0 elsewhere), as ``torch.nn`` does. Matches ``torch.nn`` for ``"none"``,
    ``"mean"`` and ``"sum"``; the gradient with respect to ``target`` is finite where
    ``target <= 0`` (``torch.nn``'s is NaN there, though the Stirling term is not added).

    Args:
        input: log-rates (or rates), any shape; dim 0 is the batch when it has a dimension.
        target: counts of ``input``'s shape (floating or integer dtype).
        log_input: whether ``input`` holds log-rates.
        full: add the Stirling term.
        eps: added to ``input`` before the log when ``log_input=False``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: ``"none"`` has ``input``'s shape, ``"per_sample"`` is
        ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> rate = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
        >>> poisson_nll_loss(rate, torch.tensor([[1.0, 3.0], [0.0, 2.0]]), full=True, reduction="per_sample")
        tensor([1.2412, 5.2044])
    """
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_pointwise(
            input, target, reduction, sample_weight, normalizer, REDUCTIONS, backend
        )
    # samples of weight 0 get exactly 0 gradient, even where they hold NaN or Inf
    counts = sample_counts(sample_weight, input)
    input, target = counted_gradient(input, counts), counted_gradient(target, counts)
    if log_input:
        loss = torch.exp(input) - target * input
    else:
        loss = input - target * torch.log(input + eps)
    if full:
        # `target <= 1` (not `~(target > 1)`) keeps a NaN target's NaN, as ATen's masked_fill does;
        # the masked positions see target 1, so no log(0) reaches the gradients.
        small = target <= 1
        t = torch.where(small, torch.ones_like(target), target)
        stirling = t * torch.log(t) - t + 0.5 * torch.log(2 * math.pi * t)
        loss = loss + torch.where(small, torch.zeros_like(stirling), stirling)
    if not torch.jit.is_scripting():
        guard_counted_gradient([input, target], counts, loss)
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def _check_gaussian(input: Tensor, target: Tensor, var: Union[Tensor, float]) -> None:
    """torch.nn's shape rules for var, with ValueErrors naming the shapes (metadata only)."""
    _checks.check_tensors(["input", "target"], [input, target], ["input"])
    _checks.check_same_shapes(["input", "target"], [input, target])
    if not isinstance(var, Tensor):
        if not isinstance(var, (float, int)) or isinstance(var, bool):
            raise ValueError(f"var must be a tensor or a float; got {type(var).__name__}")
        if var < 0:
            raise ValueError(f"var must be non-negative; got {var}")
        return
    _checks.check_tensors(["input", "var"], [input, var], ["input", "var"])
    if var.shape == input.shape or var.shape == input.shape[:-1]:
        return
    # torch.nn: same rank, and the sizes of var where it differs from input sum to 1 (one
    # dimension of size 1, broadcast over input's); that var must also broadcast to input.
    if var.dim() == input.dim():
        differing = [(i, v) for i, v in zip(input.shape, var.shape) if i != v]
        if sum(v for _, v in differing) == 1 and all(v == 1 for _, v in differing):
            return
    raise ValueError(
        f"var must have input's shape {tuple(input.shape)}, that shape with one dimension of size 1, "
        f"or that shape without its last dimension {tuple(input.shape[:-1])} (or be a float); "
        f"got var {tuple(var.shape)}"
    )


def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    var: Union[Tensor, float],
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    validate: bool = True,
    backend: str = "torch",
) -> Tensor:
    """Gaussian negative log likelihood, as ``torch.nn.functional.gaussian_nll_loss``.

    ``0.5 * (log(max(var, eps)) + (input - target) ** 2 / max(var, eps))``, plus
    ``0.5 * log(2 * pi)`` with ``full=True``. The clamp is invisible to autograd, as in
    ``torch.nn``: where ``var < eps`` the gradient with respect to ``var`` is the derivative at
    ``eps``, never 0. Matches ``torch.nn`` for ``"none"``, ``"mean"`` and ``"sum"``.

    Args:
        input: means, any shape; dim 0 is the batch when it has a dimension.
        target: samples of ``input``'s shape.
        var: variances: ``input``'s shape (heteroscedastic); that shape without the last
            dimension, or with one dimension of size 1 (homoscedastic: broadcast over it); or
            a non-negative float.
        full: add the constant ``0.5 * log(2 * pi)``.
        eps: lower clamp of ``var``.
        validate: in eager mode, raise ``ValueError`` when ``var`` holds a negative entry, as
            ``torch.nn`` does; that reads ``var``'s values (a device synchronisation). It is
            skipped under ``torch.compile``, ``torch.export``, tracing, scripting, ONNX export
            and ``torch.func`` transforms (graphs stay free of syncs), and for meta tensors;
            there a negative variance is clamped to ``eps`` like any other below it.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: ``"none"`` has ``input``'s shape, ``"per_sample"`` is
        ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> mean, target = torch.tensor([[0.0, 1.0], [2.0, 0.5]]), torch.tensor([[0.5, 1.0], [0.0, 0.0]])
        >>> gaussian_nll_loss(mean, target, torch.tensor([0.5, 2.0]), reduction="per_sample")
        tensor([-0.2216,  0.8778])
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        _check_gaussian(input, target, var)
        _checks.check_reduction_args(
            reduction, input, input.dim() > 0, sample_weight, normalizer, REDUCTIONS, input.shape
        )
        if isinstance(var, Tensor):
            if validate and var.device.type != "meta" and eager() and bool((var < 0).any()):
                raise ValueError("var must be non-negative; it holds a negative entry")
            input, target, var = autocast_float32([input, target, var])
        else:
            input, target = autocast_float32([input, target])
    counts = sample_counts(sample_weight, input)
    input, target = counted_gradient(input, counts), counted_gradient(target, counts)
    if isinstance(var, Tensor):
        v = var
        if v.dim() != input.dim():
            v = v.unsqueeze(-1)  # homoscedastic: one variance per row of the last dimension
        if counts is not None:
            # a variance shared by several positions: guarded at each of them
            v = counted_gradient(v.expand_as(input), counts)
    else:
        v = torch.full_like(input, float(var))
    counted = [input, target, v]
    if not _at_least(v, eps):
        # max(v, eps) in the forward, the identity in the backward (torch.nn clamps under no_grad).
        # `v - v.detach()` is exactly 0 for every finite v below eps (NaN and +inf keep v itself;
        # -inf, which validation rejects, gives NaN).
        v = torch.where(v < eps, (v - v.detach()) + eps, v)
    diff = input - target
    loss = 0.5 * (torch.log(v) + diff**2 / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    if not torch.jit.is_scripting():
        guard_counted_gradient(counted, counts, loss)
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def _at_least(v: Tensor, eps: float) -> bool:
    """Every variance is at least ``eps``, read for free (``reads_free``): the clamp is then the
    identity and its four passes over the variances, forward and backward, are spared."""
    if torch.jit.is_scripting():
        return False
    else:
        return v.numel() > 0 and reads_free(v) and float(v.detach().min()) >= eps


def margin_ranking_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0.0,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Margin ranking loss ``max(0, -target * (input1 - input2) + margin)``.

    As ``torch.nn.functional.margin_ranking_loss``: ``target = 1`` asks for ``input1`` to rank
    above ``input2`` by ``margin``, ``-1`` for the opposite. Gradients flow into ``target`` as in
    ``torch.nn`` when it requires them.

    Args:
        input1: scores, any shape (``(N,)`` or ``()`` usually); dim 0 is the batch when it has one.
        input2: scores of ``input1``'s shape.
        target: ``1`` or ``-1`` of ``input1``'s shape (floating or integer dtype).
        margin: the margin.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input1``'s dtype: ``"none"`` has ``input1``'s shape, ``"per_sample"`` is
        ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> margin_ranking_loss(torch.tensor([0.8, 0.1]), torch.tensor([0.5, 0.4]), torch.tensor([1.0, 1.0]),
        ...                     margin=0.5, reduction="none")
        tensor([0.2000, 0.8000])
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        names = ["input1", "input2", "target"]
        _checks.check_tensors(names, [input1, input2, target], ["input1", "input2"])
        _checks.check_same_shapes(names, [input1, input2, target])
        _checks.check_reduction_args(reduction, input1, input1.dim() > 0, sample_weight, normalizer, REDUCTIONS)
        input1, input2, target = autocast_float32([input1, input2, target])
    counts = sample_counts(sample_weight, input1)
    counted = [counted_gradient(input1, counts), counted_gradient(input2, counts), counted_gradient(target, counts)]
    # clamp_min, not relu: a term exactly at the hinge passes its gradient, as in ATen.
    hinge = -counted[2] * (counted[0] - counted[1]) + margin
    loss = hinge.clamp_min(0)
    if not torch.jit.is_scripting():
        # the hinge, not the clamped loss: an Inf below the hinge gives a loss of 0 and NaN gradients
        guard_counted_gradient(counted, counts, hinge)
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def _pairwise_distance(x1: Tensor, x2: Tensor, p: float, eps: float) -> Tensor:
    # torch.pairwise_distance exactly: eps is added to the difference, not to the norm.
    return torch.linalg.vector_norm(x1 - x2 + eps, p, -1)


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    swap: bool = False,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Triplet margin loss ``max(0, margin + d(anchor, positive) - d(anchor, negative))``.

    As ``torch.nn.functional.triplet_margin_loss``: ``d(x, y) = ||x - y + eps||_p`` over the last
    dimension (``torch.pairwise_distance``; any ``p`` ``torch.nn`` takes, ``inf`` and ``p <= 0``
    included); ``swap=True`` uses ``min(d(anchor, negative), d(positive, negative))`` as the
    negative distance (Balntas et al.).

    Args:
        anchor: embeddings ``(N, D)``, ``(N, d1, ..., D)`` or unbatched ``(D,)``.
        positive: ``anchor``'s shape.
        negative: ``anchor``'s shape.
        margin: positive margin.
        p: the norm degree.
        eps: added to every difference before the norm.
        swap: the distance swap.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; the element-wise loss
            has ``anchor``'s shape without the last dimension (dim 0 is the batch when that
            shape has a dimension); see [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``anchor``'s dtype: ``"none"`` is ``(N,)`` (0-dim for an unbatched input),
        ``"per_sample"`` is ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> anchor, positive = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> triplet_margin_loss(anchor, positive, torch.tensor([[3.0, 0.0], [1.0, 2.0]]), reduction="none")
        tensor([0.0000, 1.0000])
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        if not margin > 0:
            raise ValueError(f"margin must be greater than 0; got {margin}")
        names = ["anchor", "positive", "negative"]
        tensors = [anchor, positive, negative]
        _checks.check_tensors(names, tensors, names)
        _checks.check_same_shapes(names, tensors)
        _checks.check_reduction_args(reduction, anchor, anchor.dim() > 1, sample_weight, normalizer, REDUCTIONS)
        anchor, positive, negative = autocast_float32(tensors)
    counts = sample_counts(sample_weight, anchor)
    anchor, positive, negative = (counted_gradient(t, counts) for t in (anchor, positive, negative))
    dist_pos = _pairwise_distance(anchor, positive, p, eps)
    dist_neg = _pairwise_distance(anchor, negative, p, eps)
    if swap:
        dist_neg = torch.minimum(dist_neg, _pairwise_distance(positive, negative, p, eps))
    hinge = margin + dist_pos - dist_neg
    loss = hinge.clamp_min(0)
    if not torch.jit.is_scripting():
        if counts is not None:
            # the hinge, not the clamped loss: an infinite distance gives a loss of 0 and NaN gradients
            guard_counted_gradient([anchor, positive, negative], counts, hinge.unsqueeze(-1))
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def cosine_embedding_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0.0,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Cosine embedding loss, as ``torch.nn.functional.cosine_embedding_loss``.

    ``1 - cos(input1, input2)`` where ``target == 1``, ``max(0, cos(input1, input2) - margin)``
    where ``target == -1``, and 0 for any other target value. The cosine is ATen's:
    ``sum(x1 * x2) / sqrt((sum(x1 * x1) + 1e-12) * (sum(x2 * x2) + 1e-12))``. ``target`` only
    selects, so no gradient flows into it.

    Args:
        input1: embeddings ``(N, D)``, or unbatched ``(D,)``.
        input2: ``input1``'s shape.
        target: ``(N,)`` (``()`` for unbatched inputs) of ``1`` or ``-1``, any real dtype.
        margin: the margin of the ``-1`` pairs.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input1``'s dtype: ``"none"`` and ``"per_sample"`` are ``(N,)`` (``"none"``
        is 0-dim for unbatched inputs), ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> x1, x2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.9]])
        >>> cosine_embedding_loss(x1, x2, torch.tensor([1, -1]), margin=0.5, reduction="none")
        tensor([0.2929, 0.4986])
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        names = ["input1", "input2", "target"]
        _checks.check_tensors(names, [input1, input2, target], ["input1", "input2"])
        if target.dim() > 1 or input1.dim() != target.dim() + 1:
            raise ValueError(
                "cosine_embedding_loss takes input1 and input2 of shape (N, D) with target (N,), or (D,) "
                f"with a 0-dim target; got {_checks.shapes(names, [input1, input2, target])}"
            )
        _checks.check_same_shapes(names[:2], [input1, input2])
        if target.shape != input1.shape[:-1]:
            raise ValueError(
                f"target must have shape {tuple(input1.shape[:-1])}, one label per row of input1 "
                f"(broadcasting is not done); got {_checks.shapes(names, [input1, input2, target])}"
            )
        _checks.check_reduction_args(reduction, input1, input1.dim() > 1, sample_weight, normalizer, REDUCTIONS)
        input1, input2, target = autocast_float32([input1, input2, target])
    counts = sample_counts(sample_weight, input1)
    input1, input2 = counted_gradient(input1, counts), counted_gradient(input2, counts)
    dim = input1.dim() - 1
    prod_sum = (input1 * input2).sum(dim)
    # ATen's EPSILON, added to each squared magnitude (a literal: TorchScript takes no float globals)
    mag_square1 = (input1 * input1).sum(dim) + 1e-12
    mag_square2 = (input2 * input2).sum(dim) + 1e-12
    cos = prod_sum / torch.sqrt(mag_square1 * mag_square2)
    zeros = torch.zeros_like(cos)
    pos = 1 - cos
    neg = (cos - margin).clamp_min(0)
    loss = torch.where(target == 1, pos, zeros) + torch.where(target == -1, neg, zeros)
    if not torch.jit.is_scripting():
        if counts is not None:
            # the cosine, not the loss: a target other than 1 and -1 gives a loss of 0 whatever it is
            guard_counted_gradient([input1, input2], counts, cos.unsqueeze(-1))
    return reduce_loss(loss, reduction, sample_weight, normalizer)


def _signs(n: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n,), generator=g).float() * 2 - 1


# Modules


@declare(
    name="poisson_nll",
    function=poisson_nll_loss,
    denominator=every_element,
    positions=element_positions,
    example=lambda n, g: (torch.randn(n, 3, generator=g), torch.poisson(torch.full((n, 3), 2.0), generator=g)),
    example_options=(("full", True),),
)
class PoissonNLLLoss(_Loss):
    """Poisson negative log likelihood, as ``torch.nn.PoissonNLLLoss``.

    The functional twin, with the formula, is
    [poisson_nll_loss][exportable_loss.functional.poisson_nll_loss].

    Args:
        log_input: whether the input holds log-rates (else rates).
        full: add the Stirling approximation of ``log(target!)``.
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        eps: added to the input before the log when ``log_input=False``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> PoissonNLLLoss()(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
        tensor(0.8591)
    """

    __constants__ = _Loss.__constants__ + ["log_input", "full", "eps"]

    def __init__(
        self,
        log_input: bool = True,
        full: bool = False,
        size_average: Optional[bool] = None,
        eps: float = 1e-8,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.log_input = bool(log_input)
        self.full = bool(full)
        self.eps = float(eps)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the (log-)rates ``input`` against the counts ``target``.

        Args:
            input: log-rates (or rates), any shape; dim 0 is the batch when it has a dimension.
            target: counts of ``input``'s shape (floating or integer dtype).
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        return poisson_nll_loss(
            input, target, self.log_input, self.full, self.eps, self.reduction, sample_weight, normalizer, self.backend
        )


@declare(
    name="gaussian_nll",
    function=gaussian_nll_loss,
    denominator=every_element,
    positions=element_positions,
    example=lambda n, g: (
        torch.randn(n, 3, generator=g),
        torch.randn(n, 3, generator=g),
        torch.rand(n, 3, generator=g) + 0.1,
    ),
)
class GaussianNLLLoss(_Loss):
    """Gaussian negative log likelihood, as ``torch.nn.GaussianNLLLoss``.

    The functional twin, with the formula, is
    [gaussian_nll_loss][exportable_loss.functional.gaussian_nll_loss].

    Args:
        full: add the constant ``0.5 * log(2 * pi)``.
        eps: lower clamp of ``var``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).
        validate: in eager mode, raise ``ValueError`` when ``var`` holds a negative entry, as
            ``torch.nn`` does (a device synchronisation; skipped while a graph is captured).

    Examples:
        >>> mean, target, var = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 1.0]]), torch.tensor([[0.5, 2.0]])
        >>> GaussianNLLLoss(full=True)(mean, target, var)
        tensor(1.0439)
    """

    __constants__ = _Loss.__constants__ + ["full", "eps", "validate"]

    def __init__(
        self,
        *,
        full: bool = False,
        eps: float = 1e-6,
        reduction: str = "mean",
        backend: str = "torch",
        validate: bool = True,
    ) -> None:
        super().__init__(reduction, backend)
        self.full = bool(full)
        self.eps = float(eps)
        self.validate = bool(validate)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        var: Union[Tensor, float],
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the means ``input`` with variances ``var`` against the samples ``target``.

        Args:
            input: means, any shape; dim 0 is the batch when it has a dimension.
            target: samples of ``input``'s shape.
            var: variances: ``input``'s shape; that shape without the last dimension, or with
                one dimension of size 1 (broadcast over it); or a non-negative float.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        return gaussian_nll_loss(
            input,
            target,
            var,
            self.full,
            self.eps,
            self.reduction,
            sample_weight,
            normalizer,
            self.validate,
            self.backend,
        )


@declare(
    name="margin_ranking",
    function=margin_ranking_loss,
    denominator=every_element,
    example=lambda n, g: (torch.randn(n, generator=g), torch.randn(n, generator=g), _signs(n, g)),
    example_options=(("margin", 0.5),),
)
class MarginRankingLoss(_Loss):
    """Margin ranking loss, as ``torch.nn.MarginRankingLoss``.

    The functional twin, with the formula, is
    [margin_ranking_loss][exportable_loss.functional.margin_ranking_loss].

    Args:
        margin: the margin.
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> MarginRankingLoss(margin=0.5)(torch.tensor([0.8, 0.1]), torch.tensor([0.5, 0.4]), torch.tensor([1.0, -1.0]))
        tensor(0.2000)
    """

    __constants__ = _Loss.__constants__ + ["margin"]

    def __init__(
        self,
        margin: float = 0.0,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.margin = float(margin)

    def forward(
        self,
        input1: Tensor,
        input2: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ranking ``input1`` against ``input2`` as ``target`` says.

        Args:
            input1: scores, any shape (``(N,)`` or ``()`` usually); dim 0 is the batch when it
                has one.
            input2: scores of ``input1``'s shape.
            target: ``1`` or ``-1`` of ``input1``'s shape (floating or integer dtype).
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0 of ``input1``.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input1``'s dtype, shaped by ``reduction``.
        """
        return margin_ranking_loss(
            input1, input2, target, self.margin, self.reduction, sample_weight, normalizer, self.backend
        )


@declare(
    name="triplet_margin",
    function=triplet_margin_loss,
    denominator=every_row,
    denominator_arg="anchor",
    example=lambda n, g: tuple(torch.randn(n, 4, generator=g) for _ in range(3)),
)
class TripletMarginLoss(_Loss):
    """Triplet margin loss, as ``torch.nn.TripletMarginLoss``.

    The functional twin, with the formula, is
    [triplet_margin_loss][exportable_loss.functional.triplet_margin_loss].

    Args:
        margin: positive margin.
        p: the norm degree.
        eps: added to every difference before the norm.
        swap: the distance swap (Balntas et al.).
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> anchor, positive = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> TripletMarginLoss(p=1.0, swap=True)(anchor, positive, torch.tensor([[3.0, 0.0], [1.0, 2.0]]))
        tensor(0.5000)
    """

    __constants__ = _Loss.__constants__ + ["margin", "p", "eps", "swap"]

    def __init__(
        self,
        margin: float = 1.0,
        p: float = 2.0,
        eps: float = 1e-6,
        swap: bool = False,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        if not margin > 0:
            raise ValueError(f"margin must be greater than 0; got {margin}")
        self.margin = float(margin)
        self.p = float(p)
        self.eps = float(eps)
        self.swap = bool(swap)

    def forward(
        self,
        anchor: Tensor,
        positive: Tensor,
        negative: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the triplets ``(anchor, positive, negative)``.

        Args:
            anchor: embeddings ``(N, D)``, ``(N, d1, ..., D)`` or unbatched ``(D,)``.
            positive: ``anchor``'s shape.
            negative: ``anchor``'s shape.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0 of ``anchor``.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``anchor``'s dtype, shaped by ``reduction``.
        """
        return triplet_margin_loss(
            anchor,
            positive,
            negative,
            self.margin,
            self.p,
            self.eps,
            self.swap,
            self.reduction,
            sample_weight,
            normalizer,
            self.backend,
        )


@declare(
    name="cosine_embedding",
    function=cosine_embedding_loss,
    denominator=every_element,
    example=lambda n, g: (torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g), _signs(n, g)),
    example_options=(("margin", 0.2),),
)
class CosineEmbeddingLoss(_Loss):
    """Cosine embedding loss, as ``torch.nn.CosineEmbeddingLoss``.

    The functional twin, with the formula, is
    [cosine_embedding_loss][exportable_loss.functional.cosine_embedding_loss].

    Args:
        margin: the margin of the ``-1`` pairs.
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> x1, x2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.9]])
        >>> CosineEmbeddingLoss(margin=0.5)(x1, x2, torch.tensor([1.0, -1.0]))
        tensor(0.3958)
    """

    __constants__ = _Loss.__constants__ + ["margin"]

    def __init__(
        self,
        margin: float = 0.0,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.margin = float(margin)

    def forward(
        self,
        input1: Tensor,
        input2: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the pairs ``(input1, input2)`` labelled ``target``.

        Args:
            input1: embeddings ``(N, D)``, or unbatched ``(D,)``.
            input2: ``input1``'s shape.
            target: ``(N,)`` (``()`` for unbatched inputs) of ``1`` or ``-1``, any real dtype.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0 of ``input1``.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input1``'s dtype, shaped by ``reduction``.
        """
        return cosine_embedding_loss(
            input1, input2, target, self.margin, self.reduction, sample_weight, normalizer, self.backend
        )
