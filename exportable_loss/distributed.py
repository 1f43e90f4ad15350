"""Exact loss normalisation across micro-batches (gradient accumulation) and data-parallel ranks.

The mean of per-micro-batch means is not the mean of the step: ``(x1/n1 + x2/n2) / 2`` differs
from ``(x1 + x2) / (n1 + n2)`` whenever micro-batches hold different numbers of counted targets.
The fix: every micro-batch divides its loss sum by the denominator of the *whole* step, passed
as ``normalizer``:

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

from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from exportable_loss._classification import CrossEntropyLoss
from exportable_loss._linear_ce import FusedLinearCrossEntropyLoss
from exportable_loss._reduction import DENOMINATOR_DTYPE
from exportable_loss._registry import spec_of
from exportable_loss._vocab_parallel import (
    all_reduce_gradient,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

__all__ = [
    "denominator",
    "step_normalizer",
    "logged_loss",
    "VocabParallelCrossEntropyLoss",
    "VocabParallelLinearCrossEntropyLoss",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
    "all_reduce_gradient",
]


def denominator(
    loss_fn: nn.Module, target: Tensor, sample_weight: Optional[Tensor] = None, num_classes: Optional[int] = None
) -> Tensor:
    """What ``loss_fn`` divides its loss sum by with ``reduction="mean"`` (``"batchmean"`` for
    KL), for one micro-batch: a 0-dim float64 tensor on ``target``'s device.

    It reads only what is known before the forward pass, so the denominator of a whole step is
    known before any forward pass. Each loss declares its own (its ``spec.denominator``): the
    class weights of the counted targets for cross entropy, the counted positions for the
    losses with ``ignore_index``, the (image, class) pairs for Dice and Tversky, the elements or
    rows for the others, each sample's times its weight.

    Args:
        loss_fn: a loss module of this library (``TypeError`` for any other module).
        target: the micro-batch's forward argument named ``loss_fn.spec.denominator_arg``:
            ``target`` for most losses, ``label`` for ``JSDLoss`` and ``DistillationLoss`` (or
            their ``target`` when they are called without a label), ``anchor`` for
            ``TripletMarginLoss``.
        sample_weight: its sample weights, if the loss call passes them: ``(N,)``, or one per
            position for a loss that takes those (its declaration's ``positions``).
        num_classes: the input's number of classes, needed only where the target does not show
            it (``DiceLoss``/``TverskyLoss`` with class-index targets).

    Raises:
        TypeError: ``loss_fn`` is not a loss of this library.
        ValueError: the loss's mean cannot be split across micro-batches (``DiceLoss`` and
            ``TverskyLoss`` with ``per_image=False``), or ``sample_weight`` has the wrong shape.

    Examples:
        >>> from exportable_loss import MSELoss
        >>> denominator(MSELoss(), torch.zeros(4, 3), sample_weight=torch.full((4,), 0.5))
        tensor(6., dtype=torch.float64)
    """
    spec = spec_of(loss_fn)
    if sample_weight is not None:
        batch = target.shape[0] if target.dim() > 0 else None
        positions = spec.positions(loss_fn, target) if spec.positions is not None else None
        per_position = positions is not None and len(positions) > 1 and tuple(sample_weight.shape) == positions
        if not per_position and (batch is None or tuple(sample_weight.shape) != (batch,)):
            alternative = "" if positions is None or len(positions) < 2 else f" or {positions}, one per position"
            raise ValueError(
                f"sample_weight must have shape ({batch},), one weight per sample of {spec.denominator_arg} "
                f"{tuple(target.shape)}{alternative}; got {tuple(sample_weight.shape)}"
            )
    total = spec.denominator(loss_fn, target, sample_weight, num_classes)
    return total.to(DENOMINATOR_DTYPE)


def step_normalizer(
    loss_fn: nn.Module,
    targets: Sequence[Tensor],
    sample_weights: Optional[Sequence[Optional[Tensor]]] = None,
    process_group: Optional[dist.ProcessGroup] = None,
    average_across_ranks: bool = True,
    num_classes: Optional[int] = None,
) -> Tensor:
    """The ``normalizer`` for every micro-batch of one optimizer step on this rank.

    Sums [denominator][exportable_loss.distributed.denominator] over this rank's micro-batches
    and all-reduces the sum over the process group (one all-reduce, on the device, when
    ``torch.distributed`` is initialised).

    Args:
        loss_fn: the loss module (``reduction="mean"`` or KL's ``"batchmean"``).
        targets: this rank's micro-batch targets (the argument
            [denominator][exportable_loss.distributed.denominator] reads).
        sample_weights: their sample weights (None entries where a micro-batch has none).
        process_group: the data-parallel group (default: the world).
        average_across_ranks: True where gradients are averaged over the ranks (DDP, FSDP2):
            the global denominator is divided by the world size to undo that average. False
            where they are summed.
        num_classes: as for [denominator][exportable_loss.distributed.denominator].

    Returns:
        A 0-dim float64 tensor to pass as ``normalizer``.

    Examples:
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
    if getattr(loss_fn, "reduction", None) not in ("mean", "batchmean"):
        raise ValueError(
            "step_normalizer is the normalizer of reduction='mean' (or KL's 'batchmean'); got a loss with "
            f"reduction={getattr(loss_fn, 'reduction', None)!r}"
        )
    total = torch.stack([denominator(loss_fn, t, s, num_classes) for t, s in zip(targets, sample_weights)]).sum()
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
    [step_normalizer][exportable_loss.distributed.step_normalizer]; the result is the same on
    every rank (one all-reduce, no sync).
    """
    total = step_loss.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=process_group)
        if average_across_ranks:
            total = total / dist.get_world_size(process_group)
    return total


# ---------------------------------------------------------------- vocabulary parallelism


class VocabParallelCrossEntropyLoss(CrossEntropyLoss):
    """[CrossEntropyLoss][exportable_loss.losses.CrossEntropyLoss] of logits sharded over the
    vocabulary across the ranks of ``process_group`` (tensor parallelism).

    Rank ``r`` of ``P`` passes the logits of the classes ``[r * V_local, (r + 1) * V_local)``;
    targets (class indices) and ``weight`` are those of the whole vocabulary. Every rank gets the
    loss of the whole logits and its slice of their gradient; the functional twin is
    [vocab_parallel_cross_entropy][exportable_loss.distributed.vocab_parallel_cross_entropy].
    Where the logits come from hidden states every rank holds whole, pass those through
    [all_reduce_gradient][exportable_loss.distributed.all_reduce_gradient] first. Its ``"mean"``
    divides by what ``CrossEntropyLoss``'s does: [denominator][exportable_loss.distributed.denominator]
    and [step_normalizer][exportable_loss.distributed.step_normalizer] take it as they take that one.

    Args:
        process_group: the ranks the vocabulary is sharded over (default: the world; a single
            process without an initialised process group).
        **options: every option of ``CrossEntropyLoss`` (``weight`` of the whole vocabulary,
            ``ignore_index``, ``reduction``, ``label_smoothing``, ``z_loss``, ``logit_softcap``,
            ``validate``, ``backend``, ``class_dim``) but ``inplace_backward``.

    Examples:
        >>> loss = VocabParallelCrossEntropyLoss(label_smoothing=0.1)  # one process: every class
        >>> loss(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0]))
        tensor(0.3913)
    """

    def __init__(self, process_group: Optional[dist.ProcessGroup] = None, **options: Any) -> None:
        if options.get("inplace_backward"):
            raise ValueError("inplace_backward is not supported by VocabParallelCrossEntropyLoss; got True")
        super().__init__(**options)
        self.process_group = process_group

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of this rank's logits ``input`` against ``target``.

        Args:
            input: this rank's logits ``(V_local,)``, ``(N, V_local)`` or ``(N, V_local, d1, ..., dk)``
                (``(N, d1, ..., dk, V_local)`` with ``class_dim=-1``).
            target: class indices of the whole vocabulary, the same on every rank; or class
                probabilities of this rank's classes (``input``'s shape).
            sample_weight: optional ``(N,)`` weights, one per sample.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``.

        Returns:
            The loss of the whole vocabulary, the same on every rank, shaped as
            ``CrossEntropyLoss``'s.
        """
        return vocab_parallel_cross_entropy(
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
            class_dim=self.class_dim,
            process_group=self.process_group,
        )


class VocabParallelLinearCrossEntropyLoss(FusedLinearCrossEntropyLoss):
    """[FusedLinearCrossEntropyLoss][exportable_loss.losses.FusedLinearCrossEntropyLoss] with the
    classifier sharded over the vocabulary across the ranks of ``process_group``.

    Rank ``r`` of ``P`` passes the whole hidden states and the classifier rows (and bias) of the
    classes ``[r * V_local, (r + 1) * V_local)``. Every rank gets the loss of the whole
    classifier, its slices of the classifier's and bias's gradients, and the whole hidden states'
    gradient (summed over the ranks in the backward). The functional twin is
    [vocab_parallel_linear_cross_entropy][exportable_loss.distributed.vocab_parallel_linear_cross_entropy].

    Args:
        process_group: the ranks the vocabulary is sharded over (default: the world; a single
            process without an initialised process group).
        **options: every option of ``FusedLinearCrossEntropyLoss`` (``weight`` of the whole
            vocabulary, ``ignore_index``, ``reduction``, ``label_smoothing``, ``z_loss``,
            ``logit_softcap``, ``chunk_size``, ``backend``).

    Examples:
        >>> loss = VocabParallelLinearCrossEntropyLoss(reduction="sum")  # one process
        >>> loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([1]))
        tensor(2.1269)
    """

    def __init__(self, process_group: Optional[dist.ProcessGroup] = None, **options: Any) -> None:
        super().__init__(**options)
        self.process_group = process_group

    def forward(
        self,
        input: Tensor,
        linear_weight: Tensor,
        target: Tensor,
        linear_bias: Optional[Tensor] = None,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of ``input @ linear_weight.T + linear_bias`` against ``target``.

        Args:
            input: hidden states ``(H,)``, ``(N, H)`` or ``(N, d1, ..., dk, H)``, the same on every rank.
            linear_weight: this rank's classifier rows ``(V_local, H)``.
            target: class indices of the whole vocabulary, the same on every rank; or class
                probabilities of this rank's classes (class dimension at position 1).
            linear_bias: optional ``(V_local,)`` bias of this rank's classes.
            sample_weight: optional ``(N,)`` weights, one per sample.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``.

        Returns:
            The loss of the whole vocabulary, the same on every rank, shaped as
            ``FusedLinearCrossEntropyLoss``'s.
        """
        return vocab_parallel_linear_cross_entropy(
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
            process_group=self.process_group,
        )
