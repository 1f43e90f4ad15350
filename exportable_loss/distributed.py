"""Exact loss normalisation across micro-batches (gradient accumulation) and data-parallel ranks.

The mean of per-micro-batch means is not the mean of the step: ``(x1/n1 + x2/n2) / 2`` differs
from ``(x1 + x2) / (n1 + n2)`` whenever micro-batches hold different numbers of counted targets.
The fix: every micro-batch divides its loss sum by the denominator of the *whole* step, passed
as ``normalizer``::

    normalizer = step_normalizer(loss_fn, [t for _, t in micro_batches])   # one all-reduce
    for i, (x, t) in enumerate(micro_batches):
        with ddp.no_sync() if i < len(micro_batches) - 1 else nullcontext():
            loss = loss_fn(ddp(x), t, normalizer=normalizer)            # reduction="mean"
            loss.backward()
    optimizer.step()

DDP (and FSDP2's ``fully_shard``) average gradients over the ranks, dividing by the world size;
``step_normalizer`` divides the global denominator by the world size too, so the gradient is
exactly the single-process gradient of the full step's mean. Nothing leaves the device: no
``.item()``, no host synchronisation.
"""

from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from exportable_loss._reduction import mean_denominator
from exportable_loss._targets import counted_targets
from exportable_loss.losses import CrossEntropyLoss, KLDivLoss, NLLLoss

DENOMINATOR_DTYPE = torch.float64  # counts stay exact far beyond float32's 2**24


def denominator(loss_fn: nn.Module, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
    """What ``loss_fn(input, target, sample_weight)`` divides by with ``reduction="mean"``
    (``"batchmean"`` for KL): a 0-dim float64 tensor on ``target``'s device.

    Only the target is needed (the input of an element-wise loss has the target's shape), so
    the denominator of a whole step is known before any forward pass.

    Args:
        loss_fn: a loss module of this library.
        target: the micro-batch's target.
        sample_weight: its ``(N,)`` sample weights, if the loss call passes them.

    Example:
        >>> from exportable_loss import MSELoss
        >>> denominator(MSELoss(), torch.zeros(4, 3), sample_weight=torch.full((4,), 0.5))
        tensor(6., dtype=torch.float64)
    """
    if isinstance(loss_fn, KLDivLoss) and loss_fn.reduction == "batchmean":
        return torch.full((), target.shape[0] if target.dim() else 1, dtype=DENOMINATOR_DTYPE, device=target.device)
    if isinstance(loss_fn, (CrossEntropyLoss, NLLLoss)):
        if target.is_floating_point():  # class probabilities: every position counts
            positions = target.select(1, 0) if target.dim() > 1 else target.sum()
            return mean_denominator(positions, sample_weight, dtype=DENOMINATOR_DTYPE)
        weight = loss_fn.weight.to(DENOMINATOR_DTYPE) if loss_fn.weight is not None else None
        num_classes = weight.shape[0] if weight is not None else 0  # only bounds the weight lookup
        valid, _, _, position_weight = counted_targets(target.long(), weight, loss_fn.ignore_index, num_classes)
        return mean_denominator(target, sample_weight, valid, position_weight, DENOMINATOR_DTYPE)
    return mean_denominator(target, sample_weight, dtype=DENOMINATOR_DTYPE)


def step_normalizer(
    loss_fn: nn.Module,
    targets: Sequence[Tensor],
    sample_weights: Optional[Sequence[Optional[Tensor]]] = None,
    process_group: Optional[dist.ProcessGroup] = None,
    average_across_ranks: bool = True,
) -> Tensor:
    """The ``normalizer`` for every micro-batch of one optimizer step on this rank.

    Sums :func:`denominator` over this rank's micro-batches and all-reduces the sum over the
    process group (one all-reduce, on the device, when ``torch.distributed`` is initialised).

    Args:
        loss_fn: the loss module (``reduction="mean"`` or KL's ``"batchmean"``).
        targets: this rank's micro-batch targets.
        sample_weights: their sample weights (None entries where a micro-batch has none).
        process_group: the data-parallel group (default: the world).
        average_across_ranks: True where gradients are averaged over the ranks (DDP, FSDP2):
            the global denominator is divided by the world size to undo that average. False
            where they are summed.

    Returns:
        A 0-dim float64 tensor to pass as ``normalizer``.

    Example:
        >>> from exportable_loss import CrossEntropyLoss
        >>> loss_fn = CrossEntropyLoss()
        >>> targets = [torch.tensor([1, -100, 2]), torch.tensor([0, 1])]   # 2 + 2 counted
        >>> step_normalizer(loss_fn, targets)   # single process: the sum
        tensor(4., dtype=torch.float64)
    """
    if sample_weights is None:
        sample_weights = [None] * len(targets)
    if len(sample_weights) != len(targets):
        raise ValueError(f"sample_weights must have one entry per target; got {len(sample_weights)} for {len(targets)}")
    if not targets:
        raise ValueError("targets must hold at least one micro-batch target")
    total = torch.stack([denominator(loss_fn, t, s) for t, s in zip(targets, sample_weights)]).sum()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=process_group)
        if average_across_ranks:
            total = total / dist.get_world_size(process_group)
    return total


def logged_loss(
    step_loss: Tensor, process_group: Optional[dist.ProcessGroup] = None, average_across_ranks: bool = True
) -> Tensor:
    """The exact mean loss of the whole step, for logging, from this rank's accumulated loss.

    ``step_loss`` is the sum of this rank's micro-batch losses computed with the
    :func:`step_normalizer`; the result is the same on every rank (one all-reduce, no sync).
    """
    total = step_loss.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=process_group)
        if average_across_ranks:
            total = total / dist.get_world_size(process_group)
    return total
