"""Distillation losses: generalised Jensen-Shannon divergence and temperature-scaled knowledge distillation.

Both compare a student with a teacher distribution over the classes on dim 1 (dim 0 for an
unbatched ``(C,)`` input), as ``torch.nn.CrossEntropyLoss`` lays out logits. An optional integer
``label`` of the position shape marks positions that do not count (``ignore_index``) and, for
``distillation_loss``, gives the hard targets.

Numerics: every term is written with ``log_softmax``, ``exp`` of log-probabilities (at most 1)
and a stable softplus, so logits of +-1e4 and log-probabilities of ``-inf`` (classes with zero
probability) stay finite; a class whose weighting probability is 0 contributes exactly 0 (never
``0 * log 0``). Half inputs compute and accumulate in float32. Only primitive operators are used
(no ``F.kl_div``, no ``F.cross_entropy``), so every path, both ONNX exporters included, computes
the same formula.
"""

import math
from typing import List, Optional, Tuple, cast

import torch
from torch import Tensor, nn

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._numerics import accumulation_dtype, autocast_float32, softplus
from exportable_loss._reduction import (
    DENOMINATOR_DTYPE,
    REDUCTIONS,
    counted_gradient,
    guard_counted_gradient,
    mean_denominator,
    reduce_loss,
)
from exportable_loss._registry import EXAMPLE_CLASSES, declare, example_class_indices
from exportable_loss._targets import class_terms, counted_positions


def _check_inputs(
    input: Tensor,
    target: Tensor,
    label: Optional[Tensor],
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
) -> None:
    """Metadata checks shared by both losses (eager only)."""
    if input.dim() == 0:
        raise ValueError("input must have a class dimension: shape (C,), (N, C) or (N, C, d1, ...); got a 0-dim tensor")
    _checks.check_floating("input", input)
    _checks.check_floating("target", target)
    _checks.check_device("target", target, input)
    _checks.check_same_shapes(["input", "target"], [input, target])
    if label is not None:
        _checks.check_device("label", label, input)
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise ValueError(f"label must hold integer class indices; got dtype {label.dtype}")
        class_dim = 0 if input.dim() == 1 else 1
        expected = tuple(input.shape[:class_dim]) + tuple(input.shape[class_dim + 1 :])
        if tuple(label.shape) != expected:
            raise ValueError(
                f"label must have shape {expected} (input {tuple(input.shape)} without its class dimension); "
                f"got label {tuple(label.shape)}"
            )
    positions = input.shape[:1] + input.shape[2:]
    _checks.check_reduction_args(reduction, input, input.dim() > 1, sample_weight, normalizer, REDUCTIONS, positions)


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1]; got {beta}")


def _check_temperature_alpha(temperature: float, alpha: float) -> None:
    if not temperature > 0.0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")


def _prologue(
    input: Tensor, target: Tensor, label: Optional[Tensor], ignore_index: int, sample_weight: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor], int]:
    """The student and teacher through ``counted_gradient`` (positions that do not count, ignored
    or of sample weight 0, get exactly 0 gradient even where they hold NaN or Inf), upcast from
    half types to float32. Returns ``(input, target, valid, counts, class_dim)``."""
    class_dim = 0 if input.dim() == 1 else 1
    valid = label != ignore_index if label is not None else None
    counts = counted_positions(label if label is not None else input, ignore_index, sample_weight, class_dim)
    x = counted_gradient(input, counts).to(accumulation_dtype(input.dtype))
    y = counted_gradient(target, counts).to(x.dtype)
    return x, y, valid, counts, class_dim


def _reduce(
    loss: Tensor,
    counted: List[Tensor],
    counts: Optional[Tensor],
    valid: Optional[Tensor],
    class_dim: int,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
) -> Tensor:
    """The reduction of the position terms ``loss`` computed from ``counted``, ``_prologue``'s
    student and teacher."""
    if not torch.jit.is_scripting():
        if counts is not None:
            guard_counted_gradient(counted, counts, loss.unsqueeze(class_dim))
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid)


def _kl_terms(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Class terms of KL(A || B) from log-probabilities: ``exp(a) * (a - b)``, exactly 0 where
    ``a`` is ``-inf`` (gradients there are 0 too, not NaN)."""
    zero = log_a == float("-inf")
    a = torch.where(zero, torch.zeros_like(log_a), log_a)
    b = torch.where(zero, torch.zeros_like(log_b), log_b)
    return torch.where(zero, torch.zeros_like(a), torch.exp(a) * (a - b))


def _mixture_terms(log_a: Tensor, log_b: Tensor, w: float) -> Tensor:
    """Class terms of ``w * KL(A || M)`` with ``M = w * A + (1 - w) * B``, for 0 < w < 1.

    ``a - log M = -(log w + softplus(b - a + log((1 - w) / w)))``: no ``log M`` of an underflowed
    ``M``, so log-probabilities of -1e4 (or ``-inf`` in ``b``) stay finite. Exactly 0 where
    ``a`` is ``-inf``.
    """
    zero = log_a == float("-inf")
    a = torch.where(zero, torch.zeros_like(log_a), log_a)
    b = torch.where(zero, torch.zeros_like(log_b), log_b)
    log_w = math.log(w)
    shift = math.log1p(-w) - log_w
    terms = (-w) * torch.exp(a) * (log_w + softplus(b - a + shift))
    return torch.where(zero, torch.zeros_like(terms), terms)


def jsd_loss(
    input: Tensor,
    target: Tensor,
    label: Optional[Tensor] = None,
    beta: float = 0.5,
    ignore_index: int = -100,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Generalised Jensen-Shannon divergence between student and teacher log-probabilities.

    As Liger-Kernel's ``LigerJSD``: with ``Q = exp(input)`` (student), ``P = exp(target)``
    (teacher) and ``M = beta * P + (1 - beta) * Q``, each position's loss is
    ``beta * KL(P || M) + (1 - beta) * KL(Q || M)``, summed over the classes. ``beta = 0`` is
    defined as the forward KL ``KL(P || Q)`` and ``beta = 1`` as the reverse KL ``KL(Q || P)``
    (the formula itself would give 0 there), computed exactly. ``beta = 0.5`` is the symmetric
    Jensen-Shannon divergence. Positions whose ``label`` is ``ignore_index`` give exactly 0
    (even where their inputs are NaN) and ``"mean"`` divides by the counted positions: Liger's
    normalisation (by all positions without a label).

    Args:
        input: student log-probabilities ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: teacher log-probabilities, ``input``'s shape. Gradients flow into it when it
            requires them.
        label: optional class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)`` (any integer
            dtype); only ``ignore_index`` is read from it.
        beta: in ``[0, 1]``, the teacher's weight in the mixture.
        ignore_index: label value whose positions do not count.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: ``"none"`` has the position shape (``input``'s without
        the class dimension), ``"per_sample"`` is ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> student = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
        >>> teacher = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
        >>> jsd_loss(student, teacher, reduction="none")
        tensor([0.1017, 0.0000])
        >>> jsd_loss(student, teacher, label=torch.tensor([1, -100]), beta=0.0)
        tensor(0.3681)
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        _check_inputs(input, target, label, reduction, sample_weight, normalizer)
        _check_beta(beta)
        input, target = autocast_float32([input, target])
    out_dtype = input.dtype
    x, y, valid, counts, class_dim = _prologue(input, target, label, ignore_index, sample_weight)
    if beta == 0.0:
        terms = _kl_terms(y, x)
    elif beta == 1.0:
        terms = _kl_terms(x, y)
    else:
        terms = _mixture_terms(y, x, beta) + _mixture_terms(x, y, 1.0 - beta)
    loss = terms.sum(class_dim)
    return _reduce(loss, [x, y], counts, valid, class_dim, reduction, sample_weight, normalizer).to(out_dtype)


def distillation_loss(
    input: Tensor,
    target: Tensor,
    label: Optional[Tensor] = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Knowledge distillation (Hinton et al., 2015): softened teacher KL plus hard-label cross entropy.

    Each position's loss is
    ``alpha * T**2 * KL(softmax(target / T) || softmax(input / T))`` (summed over the classes)
    ``+ (1 - alpha) * cross_entropy(input, label)`` (hard labels, no temperature). The ``T**2``
    keeps the soft term's gradients on the scale of the hard term's as ``T`` changes. Positions
    whose ``label`` is ``ignore_index`` count in neither term and give exactly 0 (even where
    their logits are NaN); ``"mean"`` divides by the counted positions. With ``alpha = 1`` the
    label is optional (only its ``ignore_index`` positions are read); ``alpha = 0`` is plain
    cross entropy and ignores the teacher. A label outside ``[0, C)`` that is not
    ``ignore_index`` gives NaN at its position.

    Args:
        input: student logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: teacher logits, ``input``'s shape. Gradients flow into it when it requires them.
        label: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)`` (any integer dtype);
            required when ``alpha < 1``.
        temperature: ``T > 0``, divides both logits in the soft term.
        alpha: in ``[0, 1]``, the weight of the soft term.
        ignore_index: label value whose positions do not count.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: ``"none"`` has the position shape, ``"per_sample"`` is
        ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> teacher = torch.tensor([[3.0, 0.0, -2.0], [0.0, 1.0, 2.0]])
        >>> distillation_loss(student, teacher, temperature=2.0, reduction="none")
        tensor([0.2820, 0.2915])
        >>> distillation_loss(student, teacher, torch.tensor([0, 2]), temperature=2.0, alpha=0.5)
        tensor(0.2311)
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        _check_inputs(input, target, label, reduction, sample_weight, normalizer)
        _check_temperature_alpha(temperature, alpha)
        input, target = autocast_float32([input, target])
    if alpha != 1.0 and label is None:
        raise ValueError(f"alpha < 1 needs label for the hard-label term; got alpha={alpha} and no label")
    out_dtype = input.dtype
    x, y, valid, counts, class_dim = _prologue(input, target, label, ignore_index, sample_weight)
    log_student = torch.log_softmax(x, class_dim)
    if alpha != 0.0:
        if temperature != 1.0:
            soft_student = torch.log_softmax(x / temperature, class_dim)
            soft_teacher = torch.log_softmax(y / temperature, class_dim)
        else:
            soft_student = log_student
            soft_teacher = torch.log_softmax(y, class_dim)
        kl = _kl_terms(soft_teacher, soft_student).sum(class_dim)
        loss = (alpha * temperature * temperature) * kl
    else:
        # Built from the teacher's shape so that the TorchScript ONNX exporter keeps the (unused) teacher input.
        loss = torch.zeros_like(y.select(class_dim, 0))
    if alpha != 1.0 and label is not None:
        # out-of-range indices give NaN (as cross_entropy here): no out-of-bounds read
        nll, _, _ = class_terms(log_student, label, None, ignore_index)
        loss = loss + (1.0 - alpha) * nll
    return _reduce(loss, [x, y], counts, valid, class_dim, reduction, sample_weight, normalizer).to(out_dtype)


def label_positions(module: nn.Module, label: Tensor) -> Tuple[int, ...]:
    """The positions of a per-position loss: the label's shape, or the teacher's without its
    class dimension (no label)."""
    if not label.is_floating_point():
        return tuple(label.shape)
    return tuple(label.shape[:1]) + tuple(label.shape[2:]) if label.dim() > 1 else ()


def label_denominator(
    module: nn.Module, label: Tensor, sample_weight: Optional[Tensor] = None, num_classes: Optional[int] = None
) -> Tensor:
    """The ``"mean"`` denominator of a per-position loss with an optional label: the positions
    whose label is not ``module.ignore_index``, times their sample weights. A floating tensor is
    taken as the teacher (no label): its positions, with the class dimension, all count."""
    if label.is_floating_point():
        positions = label.new_empty(label_positions(module, label))
        return mean_denominator(positions, sample_weight, dtype=DENOMINATOR_DTYPE)
    valid = label != cast(int, module.ignore_index)  # typing: a module attribute reads as Tensor | Module
    return mean_denominator(label, sample_weight, valid, dtype=DENOMINATOR_DTYPE)


def _log_probs(n: int, g: torch.Generator) -> Tensor:
    return torch.log_softmax(torch.randn(n, EXAMPLE_CLASSES, generator=g), 1)


# Modules


@declare(
    name="jsd",
    function=jsd_loss,
    denominator=label_denominator,
    positions=label_positions,
    denominator_arg="label",
    example=lambda n, g: (_log_probs(n, g), _log_probs(n, g), example_class_indices(n, g)),
    example_options=(("beta", 0.3),),
)
class JSDLoss(_Loss):
    """Generalised Jensen-Shannon divergence as Liger-Kernel's ``LigerJSD``, between student and
    teacher log-probabilities.

    The functional twin, with the formula, is [jsd_loss][exportable_loss.functional.jsd_loss].

    Args:
        beta: in ``[0, 1]``, the teacher's weight in the mixture (0: forward KL, 1: reverse KL).
        ignore_index: label value whose positions do not count.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> student = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
        >>> teacher = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
        >>> JSDLoss(beta=0.5)(student, teacher)
        tensor(0.0509)
    """

    __constants__ = _Loss.__constants__ + ["beta", "ignore_index"]

    def __init__(
        self, beta: float = 0.5, ignore_index: int = -100, reduction: str = "mean", backend: str = "torch"
    ) -> None:
        super().__init__(reduction, backend)
        _check_beta(beta)
        self.beta = float(beta)
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        label: Optional[Tensor] = None,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The divergence of the student ``input`` from the teacher ``target``.

        Args:
            input: student log-probabilities ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
            target: teacher log-probabilities, ``input``'s shape.
            label: optional class indices of the position shape (``input``'s without the class
                dimension); only its ``ignore_index`` positions are read.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        return jsd_loss(
            input, target, label, self.beta, self.ignore_index, self.reduction, sample_weight, normalizer, self.backend
        )


@declare(
    name="distillation",
    function=distillation_loss,
    denominator=label_denominator,
    positions=label_positions,
    denominator_arg="label",
    example=lambda n, g: (
        torch.randn(n, EXAMPLE_CLASSES, generator=g),
        torch.randn(n, EXAMPLE_CLASSES, generator=g),
        example_class_indices(n, g),
    ),
    example_options=(("temperature", 2.0), ("alpha", 0.5)),
)
class DistillationLoss(_Loss):
    """Knowledge distillation (Hinton et al., 2015): ``alpha * T**2 * KL`` of the softened teacher
    and student plus ``(1 - alpha) *`` hard-label cross entropy, on student and teacher logits.

    The functional twin, with the formula, is
    [distillation_loss][exportable_loss.functional.distillation_loss].

    Args:
        temperature: ``T > 0``, divides both logits in the soft term.
        alpha: in ``[0, 1]``, the weight of the soft term (``alpha < 1`` needs a ``label``).
        ignore_index: label value whose positions do not count.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> teacher = torch.tensor([[3.0, 0.0, -2.0], [0.0, 1.0, 2.0]])
        >>> DistillationLoss(temperature=2.0, alpha=0.5)(student, teacher, torch.tensor([0, 2]))
        tensor(0.2311)
    """

    __constants__ = _Loss.__constants__ + ["temperature", "alpha", "ignore_index"]

    def __init__(
        self,
        temperature: float = 1.0,
        alpha: float = 1.0,
        ignore_index: int = -100,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend)
        _check_temperature_alpha(temperature, alpha)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        label: Optional[Tensor] = None,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The distillation loss of the student ``input`` against the teacher ``target`` and ``label``.

        Args:
            input: student logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
            target: teacher logits, ``input``'s shape.
            label: class indices of the position shape (``input``'s without the class
                dimension); required when ``alpha < 1``.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        return distillation_loss(
            input,
            target,
            label,
            self.temperature,
            self.alpha,
            self.ignore_index,
            self.reduction,
            sample_weight,
            normalizer,
            self.backend,
        )
