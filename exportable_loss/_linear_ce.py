"""Fused linear cross entropy: classifier and cross entropy without materialising the logits."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._dispatch import use_triton
from exportable_loss._reduction import REDUCTIONS, reduce_loss
from exportable_loss._targets import counted_targets
from exportable_loss.functional import cross_entropy


def _check(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Optional[Tensor],
    chunk_size: Optional[int],
) -> None:
    _checks.check_floating("input", input)
    _checks.check_floating("linear_weight", linear_weight)
    if linear_weight.dim() != 2:
        raise ValueError(f"linear_weight must have shape (C, H); got {tuple(linear_weight.shape)}")
    if input.dim() == 0 or input.shape[-1] != linear_weight.shape[1]:
        raise ValueError(
            f"input must have shape (..., H) with H = linear_weight.shape[1] = {linear_weight.shape[1]}; "
            f"got input {tuple(input.shape)}"
        )
    if input.dtype != linear_weight.dtype:
        raise ValueError(f"input and linear_weight must have one dtype; got {input.dtype} and {linear_weight.dtype}")
    _checks.check_device("linear_weight", linear_weight, input)
    if linear_bias is not None:
        _checks.check_device("linear_bias", linear_bias, input)
        if tuple(linear_bias.shape) != (linear_weight.shape[0],):
            raise ValueError(
                f"linear_bias must have shape ({linear_weight.shape[0]},), one per class; "
                f"got {tuple(linear_bias.shape)}"
            )
    _checks.check_chunk_size(chunk_size)
    if target.is_floating_point():
        positions = list(input.shape[:-1])
        expected = tuple(positions[:1] + [linear_weight.shape[0]] + positions[1:])
        kind = "class-probability target (class dimension at position 1)"
    else:
        expected = tuple(input.shape[:-1])
        kind = "class-index target"
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{kind} must have shape {expected} for input {tuple(input.shape)} and linear_weight "
            f"{tuple(linear_weight.shape)}; got target {tuple(target.shape)}"
        )


def _fused(input: Tensor, linear_weight: Tensor, target: Tensor) -> bool:
    """Whether this call runs the chunked op: in eager mode and under torch.compile. Exported
    graphs (TorchScript, torch.export, ONNX) hold the unfused form. So do a target that
    requires grad (the op differentiates input and parameters only) and torch.func transforms
    (the op has no batching rule)."""
    if torch.jit.is_scripting():
        return False
    else:
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            return False
        if not torch.compiler.is_compiling() and any(
            torch._C._functorch.is_functorch_wrapped_tensor(t) for t in (input, linear_weight)
        ):
            return False
        return input.dim() > 1 and not target.requires_grad


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

    Equals :func:`cross_entropy` on those logits (class dimension moved to position 1) with the
    same options, without materialising the ``(positions, C)`` logits in eager mode and under
    ``torch.compile``: ``chunk_size`` rows at a time, the forward keeps only each row's loss,
    log-sum-exp and target mass, and the backward recomputes each chunk's logits to produce the
    gradients of ``input``, ``linear_weight`` and ``linear_bias``. With ``backend="triton"`` each
    chunk's loss and gradient come from the cross-entropy kernels, the gradient written over the
    chunk's logits. Exported graphs (TorchScript, ``torch.export``, ONNX) hold the unfused form.

    Args:
        input: hidden states ``(H,)``, ``(N, H)`` or ``(N, d1, ..., dk, H)``.
        linear_weight: classifier matrix ``(C, H)``, ``input``'s dtype.
        target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dk)``, or class probabilities
            of the logits' shape with the class dimension at position 1 (as
            :func:`cross_entropy` takes them).
        linear_bias: optional ``(C,)`` bias.
        weight: optional ``(C,)`` class weights, as :func:`cross_entropy`'s.
        ignore_index: as :func:`cross_entropy`'s.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``.
        label_smoothing: as :func:`cross_entropy`'s.
        sample_weight: optional ``(N,)`` weights, one per sample.
        normalizer: optional 0-dim denominator of ``"mean"``; no gradient flows into it.
        z_loss: as :func:`cross_entropy`'s.
        logit_softcap: as :func:`cross_entropy`'s.
        chunk_size: rows of hidden states per chunk; ``None`` picks a power of two that keeps a
            chunk's logits about the size of ``input``.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``.

    Returns:
        The loss in ``input``'s dtype, shaped as :func:`cross_entropy`'s.

    Example:
        >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> classifier = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
        >>> linear_cross_entropy(hidden, classifier, torch.tensor([0, 2, -100]), chunk_size=2)
        tensor(0.5159)
    """
    if not torch.jit.is_scripting():
        _check(input, linear_weight, target, linear_bias, chunk_size)
        _checks.check_reduction_args(reduction, input, input.dim() > 1, sample_weight, normalizer, REDUCTIONS)
    if not _fused(input, linear_weight, target):
        logits = F.linear(input, linear_weight, linear_bias)
        if logits.dim() > 2:
            # the class dimension to position 1 (permute: the ONNX exporters mistranslate movedim(-1, 1))
            last = logits.dim() - 1
            logits = logits.permute([0, last] + list(range(1, last)))
        return cross_entropy(
            logits, target, weight, ignore_index, reduction, label_smoothing, sample_weight, normalizer,
            z_loss, logit_softcap,
        )  # fmt: skip
    return _chunked(
        input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing,
        sample_weight, normalizer, z_loss, logit_softcap, chunk_size, backend,
    )  # fmt: skip


@torch.jit.unused
def _chunked(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Optional[Tensor],
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    z_loss: float,
    logit_softcap: Optional[float],
    chunk_size: Optional[int],
    backend: str,
) -> Tensor:
    """The chunked op and the reduction (never compiled by TorchScript: see :func:`_fused`)."""
    out_dtype = input.dtype
    device = input.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        # as the unfused form under autocast: the matmul in the autocast dtype, the loss in float32
        low = torch.get_autocast_dtype(device)
        input, linear_weight = input.to(low), linear_weight.to(low)
        linear_bias = linear_bias.to(low) if linear_bias is not None else None
        out_dtype = torch.float32
    num_classes, hidden = linear_weight.shape[0], linear_weight.shape[1]
    probabilities = target.is_floating_point()
    rows_target = target.movedim(1, -1).reshape(-1, num_classes) if probabilities else target.reshape(-1).long()
    loss, _, _ = torch.ops.exportable_loss.linear_cross_entropy_rows(
        input.reshape(-1, hidden),
        linear_weight,
        linear_bias,
        rows_target.contiguous(),
        weight.contiguous() if weight is not None else None,
        ignore_index,
        label_smoothing,
        z_loss,
        0.0 if logit_softcap is None else logit_softcap,
        0 if chunk_size is None else chunk_size,
        use_triton(backend, input),
    )
    loss = loss.reshape(input.shape[:-1])
    if probabilities:
        return reduce_loss(loss, reduction, sample_weight, normalizer).to(out_dtype)
    w = weight.to(loss.dtype) if weight is not None else None
    valid, _, _, target_weight = counted_targets(target.long(), w, ignore_index, num_classes)
    return reduce_loss(loss, reduction, sample_weight, normalizer, valid, target_weight).to(out_dtype)


# Modules


class FusedLinearCrossEntropyLoss(_Loss):
    """Classifier and cross entropy in one, without the ``(positions, C)`` logits in memory.

    Same options as :class:`CrossEntropyLoss` plus ``chunk_size``; see
    :func:`exportable_loss.functional.linear_cross_entropy`.

    Example:
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
