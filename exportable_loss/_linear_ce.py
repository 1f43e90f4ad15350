"""Fused linear cross entropy: classifier and cross entropy without materialising the logits."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._classification import class_denominator, class_positions, cross_entropy
from exportable_loss._dispatch import chunked_linear
from exportable_loss._ops.linear_cross_entropy import fused_linear_cross_entropy
from exportable_loss._reduction import REDUCTIONS
from exportable_loss._registry import EXAMPLE_CLASSES, declare, example_class_indices
from exportable_loss._targets import without_uncounted_rows


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    z_loss: float = 0.0,
    logit_softcap: Optional[float] = None,
    chunk_size: Optional[int] = None,
    backend: str = "torch",
) -> Tensor:
    """Cross entropy of ``input @ linear_weight.T + linear_bias``, chunked over positions.

    Equals [cross_entropy][exportable_loss.functional.cross_entropy] on those logits (class
    dimension moved to position 1) with the same options, without materialising the
    ``(positions, C)`` logits in eager mode and under ``torch.compile``: ``chunk_size`` rows at a
    time. For ``"mean"`` and ``"sum"`` with a gradient needed, each chunk's gradients are computed
    in the same pass (the backward only scales them by ``grad_output``); otherwise the forward
    keeps each row's loss, log-sum-exp and target mass and the backward recomputes each chunk's
    logits. With ``backend="triton"`` each chunk's loss and gradient come from the cross-entropy
    kernels, the gradient written over the chunk's logits. Exported graphs (TorchScript,
    ``torch.export``, ONNX) hold the unfused form.

    Args:
        input: hidden states ``(H,)``, ``(N, H)`` or ``(N, d1, ..., dk, H)``.
        linear_weight: classifier matrix ``(C, H)``, ``input``'s dtype.
        target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)``, or class probabilities
            of the logits' shape with the class dimension at position 1 (as
            [cross_entropy][exportable_loss.functional.cross_entropy] takes them).
        linear_bias: optional ``(C,)`` bias.
        weight: optional ``(C,)`` class weights.
        ignore_index: class index whose positions do not count (class-index targets only).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution.
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0 of ``input``.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        z_loss: adds ``z_loss * logsumexp(logits) ** 2`` to every counted position, before
            its class weight is applied.
        logit_softcap: ``c`` replaces the logits by ``c * tanh(logits / c)`` first.
        chunk_size: rows of hidden states per chunk; ``None`` picks a power of two that keeps a
            chunk's logits about the size of ``input``.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Returns:
        The loss in ``input``'s dtype: the target's shape (positions) for ``"none"``, ``(N,)``
        for ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.

    Examples:
        >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> classifier = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
        >>> linear_cross_entropy(hidden, classifier, torch.tensor([0, 2, -100]), chunk_size=2)
        tensor(0.5159)
    """
    if not torch.jit.is_scripting():
        _checks.check_linear_cross_entropy(input, linear_weight, target, linear_bias, chunk_size)
        _checks.check_reduction_args(
            reduction, input, input.dim() > 1, sample_weight, normalizer, REDUCTIONS, input.shape[:-1]
        )
        _checks.check_backend(backend)
    if not chunked_linear(input, target):
        input = without_uncounted_rows(input, linear_weight, target, ignore_index, sample_weight)
        logits = F.linear(input, linear_weight, linear_bias)
        if logits.dim() > 2:
            # the class dimension to position 1 (permute: the ONNX exporters mistranslate movedim(-1, 1))
            last = logits.dim() - 1
            logits = logits.permute([0, last] + list(range(1, last)))
        return cross_entropy(
            logits,
            target,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            sample_weight=sample_weight,
            normalizer=normalizer,
            z_loss=z_loss,
            logit_softcap=logit_softcap,
        )
    return fused_linear_cross_entropy(
        input,
        linear_weight,
        target,
        linear_bias=linear_bias,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        sample_weight=sample_weight,
        normalizer=normalizer,
        z_loss=z_loss,
        logit_softcap=logit_softcap,
        chunk_size=chunk_size,
        backend=backend,
    )


def _example(n: int, g: torch.Generator) -> Tuple[Tensor, ...]:
    return (
        torch.randn(n, 3, 4, generator=g),
        torch.randn(EXAMPLE_CLASSES, 4, generator=g),
        example_class_indices(3 * n, g).view(n, 3),
        torch.randn(EXAMPLE_CLASSES, generator=g),
    )


# Modules


@declare(
    name="linear_cross_entropy",
    function=linear_cross_entropy,
    denominator=class_denominator,
    positions=class_positions,
    kernel="cross_entropy",
    example=_example,
    example_options=(("label_smoothing", 0.1), ("chunk_size", 4)),
    batched=(0, 2),
)
class FusedLinearCrossEntropyLoss(_Loss):
    """Classifier and cross entropy in one, without the ``(positions, C)`` logits in memory.

    Same options as [CrossEntropyLoss][exportable_loss.losses.CrossEntropyLoss] plus
    ``chunk_size``. The functional twin, with the details of the chunking, is
    [linear_cross_entropy][exportable_loss.functional.linear_cross_entropy].

    Args:
        weight: optional ``(C,)`` class weights (a buffer).
        ignore_index: class index whose positions do not count (class-index targets only).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions].
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution.
        z_loss: adds ``z_loss * logsumexp(logits) ** 2`` to every counted position, before
            its class weight is applied.
        logit_softcap: ``c`` replaces the logits by ``c * tanh(logits / c)`` first.
        chunk_size: rows of hidden states per chunk; ``None`` picks a power of two that keeps a
            chunk's logits about the size of the hidden states.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; see [Backends][backends].

    Examples:
        >>> loss = FusedLinearCrossEntropyLoss(reduction="per_sample")
        >>> hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (N, T, H)
        >>> loss(hidden, torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0, 1]]))
        tensor([0.2201])
    """

    __constants__ = _Loss.__constants__ + ["ignore_index", "label_smoothing", "z_loss", "logit_softcap", "chunk_size"]

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        logit_softcap: Optional[float] = None,
        chunk_size: Optional[int] = None,
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend)
        _checks.check_cross_entropy_options(label_smoothing, z_loss, logit_softcap)
        _checks.check_chunk_size(chunk_size)
        self.register_buffer("weight", weight)
        self.weight: Optional[Tensor]
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.z_loss = float(z_loss)
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        self.chunk_size = chunk_size

    def forward(
        self,
        input: Tensor,
        linear_weight: Tensor,
        target: Tensor,
        linear_bias: Optional[Tensor] = None,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The cross entropy of the logits ``input @ linear_weight.T + linear_bias`` against ``target``.

        Args:
            input: hidden states ``(H,)``, ``(N, H)`` or ``(N, d1, ..., dk, H)``.
            linear_weight: classifier matrix ``(C, H)``, ``input``'s dtype.
            target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)``, or class
                probabilities of the logits' shape with the class dimension at position 1.
            linear_bias: optional ``(C,)`` bias.
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0 of ``input``.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        return linear_cross_entropy(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            sample_weight=sample_weight,
            normalizer=normalizer,
            z_loss=self.z_loss,
            logit_softcap=self.logit_softcap,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
