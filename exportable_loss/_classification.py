"""Cross entropy and negative log likelihood over class indices or class probabilities.

The functions compute ``torch.nn``'s element-wise term with ``log_softmax`` + ``gather`` (one
formulation on every path: the exporters' own translations of ``cross_entropy`` drop
``label_smoothing`` and mistranslate probability targets), then the shared reduction. With
``backend="triton"`` cross entropy runs the fused op of ``exportable_loss._ops.cross_entropy``.
"""

import math
from typing import Optional, Tuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._dispatch import reads_free, use_triton
from exportable_loss._numerics import accumulation_dtype, to_dtype
from exportable_loss._ops.cross_entropy import fused_cross_entropy
from exportable_loss._reduction import (
    DENOMINATOR_DTYPE,
    counted_gradient,
    guard_counted_gradient,
    mean_denominator,
    reduce_loss,
)
from exportable_loss._registry import EXAMPLE_CLASSES, declare, example_class_indices
from exportable_loss._targets import class_dimension, class_terms, counted_positions, counted_targets
from exportable_loss._vocab_parallel import dtensor_cross_entropy, is_dtensor


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
    class_dim: int = 1,
) -> Tensor:
    """Cross entropy between logits and class indices or class probabilities.

    Matches ``torch.nn.functional.cross_entropy`` for ``"none"``, ``"mean"`` and ``"sum"``, and
    adds the per-sample reduction, ``sample_weight``, ``normalizer``, ``z_loss`` and
    ``logit_softcap``.

    Args:
        input: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``; with ``class_dim=-1``
            ``(N, d1, ..., dk, C)``, as a language model's ``(B, T, V)``.
        target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)`` (any integer dtype), or
            class probabilities of ``input``'s shape (floating dtype).
        weight: optional ``(C,)`` class weights.
        ignore_index: class index whose positions do not count (class-index targets only).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution.
        sample_weight: optional weights, ``(N,)`` (one per sample) or of the positions' shape
            ``(N, d1, ..., dk)`` (one per position); see [Reductions][reductions].
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        z_loss: adds ``z_loss * logsumexp(logits) ** 2`` to every counted position, before
            its class weight is applied.
        logit_softcap: ``c`` replaces the logits by ``c * tanh(logits / c)`` first.
        validate: check every class index in eager mode (synchronises with the device).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].
        inplace_backward: Triton backend, eager mode only: the backward writes the gradient into
            ``input``'s memory (saves one logits-sized buffer; ``input`` must not be used again).
        class_dim: where the classes are: 1 (``torch.nn``'s layout) or -1 (last); no copy of
            the logits either way, on every backend.

    Returns:
        The loss in ``input``'s dtype: ``"none"`` has the target's shape (positions),
        ``"per_sample"`` is ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> cross_entropy(logits, target, sample_weight=torch.tensor([1.0, 0.0]))
        tensor(0.2413)
    """
    if not torch.jit.is_scripting():
        # logits sharded over the classes: the vocabulary-parallel loss (a subclass; plain tensors skip the test)
        if type(input) is not Tensor and is_dtensor(input):
            return dtensor_cross_entropy(
                input, target, weight, ignore_index, reduction, label_smoothing, sample_weight, normalizer,
                z_loss, logit_softcap, validate, backend, class_dim,
            )  # fmt: skip
        common = _checks.common_class_call(
            input, target, weight, reduction, sample_weight, normalizer, validate, backend, class_dim
        )
        if not common:
            input, target = _checks.prepare_class(
                input, target, weight, ignore_index, reduction, sample_weight, normalizer, validate, backend, class_dim
            )
        # only here: a TorchScript artifact calls the op through its module (CrossEntropyLoss.forward)
        if use_triton(backend, input):
            return fused_cross_entropy(
                input,
                target,
                weight=weight,
                ignore_index=ignore_index,
                reduction=reduction,
                label_smoothing=label_smoothing,
                sample_weight=sample_weight,
                normalizer=normalizer,
                z_loss=z_loss,
                logit_softcap=logit_softcap,
                inplace_backward=inplace_backward,
                class_dim=class_dim,
            )
        if common and z_loss == 0.0 and logit_softcap is None and input.shape[0] > 0 and reads_free(input):
            fast = _aten_class_loss(
                input, target, weight, ignore_index, reduction, label_smoothing, sample_weight, logits=True
            )
            if fast is not None:
                return fast
    dim = class_dimension(input.dim(), class_dim)
    num_classes = input.shape[dim]
    # per-position terms in float32 for half-precision logits: class weights, smoothing sums and
    # the z-loss overflow float16 long before the reduction's float32 sum
    acc = accumulation_dtype(input.dtype)
    probabilities = target.is_floating_point()
    counts = counted_positions(target, ignore_index, sample_weight, dim)
    guarded = counted_gradient(input, counts)
    x = guarded
    if logit_softcap is not None:
        x = logit_softcap * torch.tanh(x / logit_softcap)
    lse: Optional[Tensor] = None
    if z_loss != 0.0:
        lse = torch.logsumexp(x, dim, keepdim=True)
        logp = x - lse
    else:
        logp = torch.log_softmax(x, dim)
    weight_b: Optional[Tensor] = None
    if weight is not None:
        shape = [1] * input.dim()
        shape[dim] = num_classes
        weight_b = weight.to(acc).reshape(shape)

    if probabilities:
        target = counted_gradient(target, counts)  # class probabilities may take gradients too
        guarded_target = target
        if label_smoothing > 0.0:
            target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
        prod = logp * target if weight_b is None else logp * target * weight_b
        loss = -prod.sum(dim, dtype=acc)
        if lse is not None:
            loss = loss + z_loss * lse.squeeze(dim).to(acc) ** 2
        if not torch.jit.is_scripting():
            guard_counted_gradient([guarded, guarded_target], counts, loss.unsqueeze(dim))
        return to_dtype(reduce_loss(loss, reduction, sample_weight, normalizer), input.dtype)

    loss, valid, target_weight = class_terms(logp, target, weight, ignore_index, class_dim, after_log_softmax=True)
    if label_smoothing > 0.0:
        # a class masked with -inf makes this term inf, as in torch.nn
        smooth = -(logp.sum(dim, dtype=acc) if weight_b is None else (logp * weight_b).sum(dim, dtype=acc))
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / num_classes) * smooth
    if lse is not None:
        z_term = z_loss * lse.squeeze(dim).to(acc) ** 2
        loss = loss + (z_term if target_weight is None else z_term * target_weight)
    if not torch.jit.is_scripting():
        guard_counted_gradient([guarded], counts, loss.unsqueeze(dim))
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return to_dtype(reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight), input.dtype)


def _aten_class_loss(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    sample_weight: Optional[Tensor],
    logits: bool,
) -> Optional[Tensor]:
    """Cross entropy (``logits``) or NLL of the common call (``_checks.common_class_call``) by
    ``F.cross_entropy`` / ``F.nll_loss``: the operators ``torch.nn`` runs, plus a few reads of
    values a CPU makes for free (``reads_free``), which pick this formulation where it gives the
    general path's numbers exactly by the same rules. None where it does not (the caller then
    takes the general path, whose result it would have had to reproduce): a class index outside
    ``[0, C)`` (ATen raises, the general path gives NaN), a zero denominator, a sample-weighted
    sum that is not finite (a zero-weight sample may hold the NaN), and the configurations it
    does not cover: a sample-weighted ``none``, sample weights with label
    smoothing or requiring grad (a zero weight's gradient leaves its sample's loss out, see
    ``reduce_loss``), class weights requiring grad. Per-position sample weights of ``(N, C)``
    logits are per-sample ones.
    """
    reduced = reduction == "mean" or reduction == "sum"
    if sample_weight is not None and (not reduced or label_smoothing > 0.0 or sample_weight.requires_grad):
        return None
    if weight is not None and weight.requires_grad:
        return None  # ATen's NLL does not differentiate its class weights; the general path does
    if weight is not None and weight.dtype != input.dtype:
        weight = weight.to(input.dtype)
    mode = reduction if reduced and sample_weight is None else "none"
    try:
        if logits:
            loss = F.cross_entropy(
                input, target, weight, ignore_index=ignore_index, reduction=mode, label_smoothing=label_smoothing
            )
        else:
            loss = F.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=mode)
    except IndexError:
        return None  # a class index outside [0, C) that is not ignore_index
    every_row: Optional[bool] = None  # whether no row is ignored, once known
    grad = logits and input.requires_grad and torch.is_grad_enabled()
    if grad:
        every_row = _no_row_ignored(target, ignore_index, input.shape[1])
    if sample_weight is not None:
        s = to_dtype(sample_weight, loss.dtype)
        total = torch.dot(loss, s)
        if not math.isfinite(float(total.detach())):
            return None  # a sample of weight 0 may hold the NaN: the general path zeroes it
        if reduction == "sum":
            loss = total
        else:
            if every_row is None:
                every_row = _no_row_ignored(target, ignore_index, input.shape[1])
            position_weight: Optional[Tensor] = None
            if weight is not None:
                position_weight = counted_targets(target, weight, ignore_index, input.shape[1])[3]
            counts = None if every_row else target != ignore_index
            denominator = mean_denominator(loss, s, counts, position_weight, loss.dtype)
            if float(denominator.detach()) == 0.0:
                return None
            loss = total / denominator
    elif mode == "mean" and not (every_row and weight is None) and not math.isfinite(float(loss.detach())):
        # torch.nn's 0 / 0 (every row ignored) or x / 0 (class weights summing to 0), where the
        # semantics give 0; or a NaN or Inf the general path gives too (rare: it recomputes).
        # Every row counted without class weights: the denominator is N, the value is torch.nn's.
        return None
    if grad and not every_row:
        # an ignored row's gradient is 0 * NaN where its log-sum-exp is not finite (a NaN or +inf
        # logit, or all -inf: then so is the row's max): the general path zeroes it
        # (counted_gradient). Rare, so the common path holds no view of the logits for a hook.
        ignored = input.detach()[target == ignore_index]
        if bool((~torch.isfinite(ignored.amax(1))).any()):
            return None
    return loss  # in input's dtype: the denominators are computed in it


def _no_row_ignored(target: Tensor, ignore_index: int, num_classes: int) -> bool:
    """Whether no class index of ``target`` (``(N,)``, N > 0, which ATen's NLL accepted: each index
    in ``[0, num_classes)`` or ``ignore_index``) is ``ignore_index``: one reduction and a read
    where ``ignore_index`` lies outside the classes (the default -100), not a comparison too."""
    if ignore_index < 0:
        return int(target.min()) >= 0
    if ignore_index >= num_classes:
        return int(target.max()) < num_classes
    return not bool((target == ignore_index).any())


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    validate: bool = False,
    backend: str = "torch",
) -> Tensor:
    """Negative log likelihood of log-probabilities at class indices.

    Matches ``torch.nn.functional.nll_loss`` for ``"none"``, ``"mean"`` and ``"sum"``.

    Args:
        input: log-probabilities ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)``.
        weight: optional ``(C,)`` class weights.
        ignore_index: class index whose positions do not count.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        validate: check every class index in eager mode (synchronises with the device).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch code
            (a gather has nothing to fuse).

    Returns:
        The loss in ``input``'s dtype, shaped as
        [cross_entropy][exportable_loss.functional.cross_entropy]'s.

    Examples:
        >>> logp = torch.log_softmax(torch.tensor([[2.0, 0.5], [0.1, 0.2]]), dim=1)
        >>> nll_loss(logp, torch.tensor([0, -100]), reduction="per_sample")
        tensor([0.2014, 0.0000])
    """
    if not torch.jit.is_scripting():
        if target.is_floating_point():
            raise ValueError(f"target must hold integer class indices; got dtype {target.dtype}")
        common = _checks.common_class_call(
            input, target, weight, reduction, sample_weight, normalizer, validate, backend
        )
        if not common:
            input, target = _checks.prepare_class(
                input, target, weight, ignore_index, reduction, sample_weight, normalizer, validate, backend
            )
        if common and input.shape[0] > 0 and reads_free(input):
            fast = _aten_class_loss(input, target, weight, ignore_index, reduction, 0.0, sample_weight, logits=False)
            if fast is not None:
                return fast
    loss, valid, target_weight = class_terms(input, target, weight, ignore_index)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight).to(input.dtype)


def class_positions(module: nn.Module, target: Tensor) -> Tuple[int, ...]:
    """The positions of a class-index target (its shape) or a class-probability target (its
    shape without the class dimension, ``module.class_dim`` or 1)."""
    if not target.is_floating_point():
        return tuple(target.shape)
    dim = class_dimension(target.dim(), getattr(module, "class_dim", 1))
    return tuple(target.shape[:dim]) + tuple(target.shape[dim + 1 :])


def class_denominator(
    module: nn.Module, target: Tensor, sample_weight: Optional[Tensor] = None, num_classes: Optional[int] = None
) -> Tensor:
    """The ``"mean"`` denominator of a class-index or class-probability target: the class
    weights of the counted targets (1 each without class weights) times the sample weights;
    every position for probabilities. Reads ``module.weight``, ``module.ignore_index`` and
    ``module.class_dim`` (1 where it has none)."""
    if target.is_floating_point():  # class probabilities: every position counts
        positions = target.new_empty(class_positions(module, target))
        return mean_denominator(positions, sample_weight, dtype=DENOMINATOR_DTYPE)
    weight = cast(Optional[Tensor], module.weight)  # typing: a module attribute reads as Tensor | Module
    if weight is not None:
        weight = weight.to(device=target.device, dtype=DENOMINATOR_DTYPE)
    num_classes = weight.shape[0] if weight is not None else 0  # only bounds the weight lookup
    valid, _, _, position_weight = counted_targets(target.long(), weight, cast(int, module.ignore_index), num_classes)
    return mean_denominator(target, sample_weight, valid, position_weight, DENOMINATOR_DTYPE)


def _logits_example(n: int, g: torch.Generator) -> Tuple[Tensor, ...]:
    return torch.randn(n, EXAMPLE_CLASSES, generator=g), example_class_indices(n, g)


def _log_probs_example(n: int, g: torch.Generator) -> Tuple[Tensor, ...]:
    return torch.log_softmax(torch.randn(n, EXAMPLE_CLASSES, generator=g), 1), example_class_indices(n, g)


# Modules


@declare(
    name="cross_entropy",
    function=cross_entropy,
    denominator=class_denominator,
    positions=class_positions,
    kernel="cross_entropy",
    example=_logits_example,
    example_options=(("weight", torch.linspace(0.5, 1.5, EXAMPLE_CLASSES)), ("label_smoothing", 0.1)),
)
class CrossEntropyLoss(_Loss):
    """Cross entropy over logits, as ``torch.nn.CrossEntropyLoss`` plus per-sample reductions,
    sample weights, ``normalizer``, z-loss, logit soft-capping and the Triton backend.

    The functional twin is [cross_entropy][exportable_loss.functional.cross_entropy].

    Args:
        weight: optional ``(C,)`` class weights (a buffer: saved in ``state_dict``, moved by ``.to()``).
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        ignore_index: class index whose positions do not count (class-index targets only).
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution.
        z_loss: adds ``z_loss * logsumexp(logits) ** 2`` to every counted position, before
            its class weight is applied.
        logit_softcap: ``c`` replaces the logits by ``c * tanh(logits / c)`` first.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].
        validate: check every class index in eager mode (synchronises with the device).
        inplace_backward: Triton backend, eager mode only: the backward writes the gradient into
            the logits' memory (the logits must not be used again).
        class_dim: where the classes are: 1 (``torch.nn``'s layout) or -1 (last, as a language
            model's ``(B, T, V)`` logits); no copy of the logits either way.

    Examples:
        >>> loss = CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 1.0]), reduction="per_sample")
        >>> loss(torch.zeros(2, 3), torch.tensor([1, -100]))
        tensor([2.1972, 0.0000])
        >>> logits = torch.zeros(2, 4, 3)  # (B, T, V): classes last
        >>> CrossEntropyLoss(class_dim=-1)(logits, torch.tensor([[0, 1, 2, -100], [2, 1, 0, 0]]))
        tensor(1.0986)
    """

    __constants__ = _Loss.__constants__ + [
        "ignore_index",
        "label_smoothing",
        "z_loss",
        "logit_softcap",
        "validate",
        "inplace_backward",
        "class_dim",
    ]

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        size_average: Optional[bool] = None,
        ignore_index: int = -100,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        logit_softcap: Optional[float] = None,
        backend: str = "torch",
        validate: bool = False,
        inplace_backward: bool = False,
        class_dim: int = 1,
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        _checks.check_cross_entropy_options(label_smoothing, z_loss, logit_softcap)
        _checks.check_class_dim(class_dim)
        self.register_buffer("weight", weight)
        self.weight: Optional[Tensor]
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.z_loss = float(z_loss)
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        self.validate = validate
        self.inplace_backward = inplace_backward
        self.class_dim = class_dim

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``; with ``class_dim=-1``
                ``(N, d1, ..., dk, C)``.
            target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)`` (any integer dtype), or
                class probabilities of ``input``'s shape.
            sample_weight: optional weights, ``(N,)`` (one per sample) or ``(N, d1, ..., dk)``
                (one per position).
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype: the target's shape (positions) for ``"none"``,
            ``(N,)`` for ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.
        """
        if torch.jit.is_scripting() and self.fused:  # a Triton-backend artifact only
            if use_triton(self.backend, input):
                return fused_cross_entropy(
                    input,
                    target,
                    weight=self.weight,
                    ignore_index=self.ignore_index,
                    reduction=self.reduction,
                    label_smoothing=self.label_smoothing,
                    sample_weight=sample_weight,
                    normalizer=normalizer,
                    z_loss=self.z_loss,
                    logit_softcap=self.logit_softcap,
                    inplace_backward=self.inplace_backward,
                    class_dim=self.class_dim,
                )
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            sample_weight=sample_weight,
            normalizer=normalizer,
            z_loss=self.z_loss,
            logit_softcap=self.logit_softcap,
            validate=self.validate,
            backend=self.backend,
            inplace_backward=self.inplace_backward,
            class_dim=self.class_dim,
        )


@declare(
    name="nll", function=nll_loss, denominator=class_denominator, positions=class_positions, example=_log_probs_example
)
class NLLLoss(_Loss):
    """Negative log likelihood, as ``torch.nn.NLLLoss`` plus per-sample reductions, sample
    weights and ``normalizer``.

    The functional twin is [nll_loss][exportable_loss.functional.nll_loss].

    Args:
        weight: optional ``(C,)`` class weights (a buffer).
        size_average: deprecated, as in ``torch.nn``: use ``reduction``.
        ignore_index: class index whose positions do not count.
        reduce: deprecated, as in ``torch.nn``: use ``reduction``.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch code
            (a gather has nothing to fuse).
        validate: check every class index in eager mode (synchronises with the device).

    Examples:
        >>> NLLLoss()(torch.log(torch.tensor([[0.25, 0.75]])), torch.tensor([1]))
        tensor(0.2877)
    """

    __constants__ = _Loss.__constants__ + ["ignore_index", "validate"]

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        size_average: Optional[bool] = None,
        ignore_index: int = -100,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
        validate: bool = False,
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.register_buffer("weight", weight)
        self.weight: Optional[Tensor]
        self.ignore_index = ignore_index
        self.validate = validate

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input`` log-probabilities against ``target``.

        Args:
            input: log-probabilities ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
            target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)`` (any integer dtype).
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped as
            [cross_entropy][exportable_loss.functional.cross_entropy]'s.
        """
        return nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            sample_weight=sample_weight,
            normalizer=normalizer,
            validate=self.validate,
            backend=self.backend,
        )
