"""Cross entropy over a vocabulary sharded across the ranks of a process group (tensor parallelism).

Rank ``r`` of ``P`` holds the classes ``[r * V_local, (r + 1) * V_local)``: their logits
(`vocab_parallel_cross_entropy`), or their classifier rows with the hidden states whole
(`vocab_parallel_linear_cross_entropy`). Each rank reduces its shard to three statistics per
position (`_ops.vocab_parallel.local_statistics`); two all-reduces of
position-sized tensors combine them, the maximum logit (MAX) and the three sums stacked (SUM), and
every position's loss follows from the combined statistics (`_position_loss`), the same on
every rank, then the shared reduction. No logits cross the network and nothing waits on the host.

The sums enter autograd through `_SumOverRanks`, whose backward is the identity: each rank
differentiates the (replicated) loss through its own statistics only, which is exactly its slice
of the full gradient. The hidden states of the linear form, whole on every rank, pass through
`_SumGradientOverRanks`, which sums their gradient over the ranks (as Megatron-LM's "copy to
tensor-parallel region" does). Under ``torch.compile`` the collectives are
``torch.distributed._functional_collectives``, which it traces; in eager mode c10d's. Without an
initialised process group there is one rank.
"""

from typing import Any, Optional, Tuple, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from exportable_loss import _checks
from exportable_loss._dispatch import chunked_linear
from exportable_loss._numerics import accumulation_dtype
from exportable_loss._ops.vocab_parallel import local_statistics, vocab_parallel_linear_statistics
from exportable_loss._reduction import REDUCTIONS, counted_gradient, guard_counted_gradient, reduce_loss
from exportable_loss._targets import (
    class_dimension,
    counted_positions,
    counted_rows,
    counted_targets,
    without_uncounted_rows,
)

# ---------------------------------------------------------------- the group and its collectives


def _group(process_group: Optional["dist.ProcessGroup"]) -> Optional["dist.ProcessGroup"]:
    """The group the shards span; None for a single process (no initialised process group)."""
    if process_group is not None:
        return process_group
    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    return None


def _rank_and_size(group: Optional["dist.ProcessGroup"]) -> Tuple[int, int]:
    if group is None:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _all_reduce(t: Tensor, op: str, group: "dist.ProcessGroup") -> Tensor:
    """A reduced copy of ``t``: functional collectives while ``torch.compile`` traces; c10d's in
    eager mode (the functional ones import ``torch._dynamo`` there, seconds on first use)."""
    if torch.compiler.is_compiling():
        from torch.distributed import _functional_collectives as funcol

        return funcol.wait_tensor(funcol.all_reduce(t, op, group))
    out = t.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=group)
    return out


def _max_over_ranks(t: Tensor, group: Optional["dist.ProcessGroup"]) -> Tensor:
    return t if group is None else _all_reduce(t, "max", group)


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum over the ranks. Backward: the identity, since every rank differentiates
    the same loss and only through its own part of the sum."""

    @staticmethod
    def forward(ctx, local: Tensor, group: "dist.ProcessGroup") -> Tensor:
        return _all_reduce(local, "sum", group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class _SumGradientOverRanks(torch.autograd.Function):
    """Forward: the identity on a tensor every rank holds whole. Backward: the gradient summed
    over the ranks, since every rank's shard of the loss depends on it."""

    @staticmethod
    def forward(ctx, input: Tensor, group: "dist.ProcessGroup") -> Tensor:
        ctx.group = group
        return input.view_as(input)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _all_reduce(grad, "sum", ctx.group), None


def _sum_over_ranks(local: Tensor, group: Optional["dist.ProcessGroup"]) -> Tensor:
    return local if group is None else _SumOverRanks.apply(local, group)


def all_reduce_gradient(input: Tensor, process_group: Optional["dist.ProcessGroup"] = None) -> Tensor:
    """``input`` itself, whose gradient is summed over the ranks in the backward.

    For a tensor every rank holds whole that enters each rank's shard of the vocabulary: the hidden
    states before this rank's rows of the output layer, when the logits are computed outside the
    loss (Megatron-LM's "copy to tensor-parallel region"). ``VocabParallelLinearCrossEntropyLoss``
    does it itself.

    Args:
        input: the tensor, whole on every rank.
        process_group: the ranks (default: the world; one process: ``input`` as it is).

    Returns:
        ``input`` (a view of it), whose gradient is summed over the ranks.

    Examples:
        >>> hidden = torch.ones(2, 3, requires_grad=True)
        >>> all_reduce_gradient(hidden).sum().backward()  # one process: the gradient as it is
        >>> hidden.grad
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    group = _group(process_group)
    return input if group is None else _SumGradientOverRanks.apply(input, group)


# ---------------------------------------------------------------- the loss from the statistics


def _position_loss(
    max_logit: Tensor,
    totals: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    num_classes: int,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Every position's loss from the statistics summed over the ranks: ``(loss, counted positions,
    their class weights)``, as ``cross_entropy`` computes them on the whole logits.

    ``totals`` stacks ``sum exp(z - max_logit)`` and the two other sums of ``local_statistics``.
    """
    sum_exp, second, third = totals.unbind(0)
    lse = max_logit + torch.log(sum_exp)
    if target.is_floating_point():  # second: sum_c q_c w_c z_c, third: sum_c q_c w_c
        return third * lse - second + z_loss * lse * lse, None, None
    w = weight.to(lse.dtype) if weight is not None else None
    valid, in_range, _, target_weight = counted_targets(target.long(), w, ignore_index, num_classes)
    loss = (1.0 - label_smoothing) * (lse - second)  # second: the target's logit
    if z_loss != 0.0:
        loss = loss + z_loss * lse * lse
    if target_weight is not None:
        loss = loss * target_weight
    if label_smoothing > 0.0:  # third: sum_c w_c z_c
        total_weight = w.sum() if w is not None else float(num_classes)
        loss = loss + (label_smoothing / num_classes) * (total_weight * lse - third)
    loss = torch.where(in_range, loss, torch.full_like(loss, float("nan")))
    return torch.where(valid, loss, torch.zeros_like(loss)), valid, target_weight


def _reduce(
    loss: Tuple[Tensor, Optional[Tensor], Optional[Tensor]],
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    dtype: torch.dtype,
) -> Tensor:
    values, valid, target_weight = loss
    return reduce_loss(values, reduction, sample_weight, normalizer, valid, target_weight).to(dtype)


def _shard_of(weight: Optional[Tensor], class_offset: int, local_classes: int) -> Optional[Tensor]:
    return weight.narrow(0, class_offset, local_classes) if weight is not None else None


# ---------------------------------------------------------------- logits


def sharded_cross_entropy(
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
    class_dim: int,
    class_offset: int,
    num_classes: int,
    group: Optional["dist.ProcessGroup"],
) -> Tensor:
    """Cross entropy of this rank's logits, the classes ``[class_offset, class_offset +
    input.shape[class_dim])`` of ``num_classes`` (arguments checked already)."""
    # positions that do not count get exactly 0 gradient, even where they hold NaN or Inf
    counts = counted_positions(target, ignore_index, sample_weight, class_dim)
    x = counted_gradient(input, counts)
    q = counted_gradient(target, counts) if target.is_floating_point() else target
    z = x if logit_softcap is None else logit_softcap * torch.tanh(x / logit_softcap)
    max_logit = _max_over_ranks(z.detach().amax(class_dim).to(accumulation_dtype(z.dtype)), group)
    local_weight = _shard_of(weight, class_offset, input.shape[class_dim])
    statistics = local_statistics(z, q, local_weight, class_offset, num_classes, label_smoothing, class_dim, max_logit)
    totals = _sum_over_ranks(torch.stack(statistics), group)
    if not torch.jit.is_scripting():
        if counts is not None:
            # the statistics of every rank: non-finite wherever some rank's logits at the position are
            guard_counted_gradient([x, q], counts, (max_logit + totals.sum(0)).unsqueeze(class_dim))
    loss = _position_loss(max_logit, totals, target, weight, ignore_index, label_smoothing, z_loss, num_classes)
    return _reduce(loss, reduction, sample_weight, normalizer, input.dtype)


def vocab_parallel_cross_entropy(
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
    class_dim: int = 1,
    process_group: Optional["dist.ProcessGroup"] = None,
) -> Tensor:
    """Cross entropy of logits sharded over the vocabulary across ``process_group``.

    Rank ``r`` of ``P`` holds the logits of the classes ``[r * V_local, (r + 1) * V_local)`` (pad
    the vocabulary to a multiple of ``P``; a padded class that is never a target changes nothing
    if its logit is ``-inf``). The result is the same on every rank: that of
    [cross_entropy][exportable_loss.functional.cross_entropy] on the whole logits with the same options,
    and each rank's gradient is its slice of the whole gradient. Communication: two all-reduces
    of position-sized tensors (a MAX, then three sums stacked); no host synchronisation.

    Args:
        input: this rank's logits ``(V_local,)``, ``(N, V_local)`` or ``(N, V_local, d1, ..., dk)``;
            with ``class_dim=-1`` ``(N, d1, ..., dk, V_local)``.
        target: class indices of the whole vocabulary, the same on every rank, shaped as for
            ``cross_entropy``; or class probabilities of this rank's classes (``input``'s shape).
        weight: optional ``(V,)`` class weights of the whole vocabulary, the same on every rank.
        ignore_index: class index whose positions do not count.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``.
        label_smoothing: as ``cross_entropy``'s (over the whole vocabulary).
        sample_weight: optional ``(N,)`` weights, one per sample.
        normalizer: optional 0-dim denominator of ``"mean"``; no gradient flows into it.
        z_loss: as ``cross_entropy``'s (of the whole vocabulary's log-sum-exp).
        logit_softcap: as ``cross_entropy``'s.
        validate: check every class index against the whole vocabulary in eager mode (synchronises).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch code.
        class_dim: where the classes are: 1 or -1 (last).
        process_group: the ranks the vocabulary is sharded over (default: the world; one process
            without an initialised process group).

    Returns:
        The loss in ``input``'s dtype, shaped as ``cross_entropy``'s.

    Examples:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])  # one process: every class
        >>> vocab_parallel_cross_entropy(logits, torch.tensor([0, 2]))
        tensor(0.1755)
    """
    group = _group(process_group)
    rank, size = _rank_and_size(group)
    dim = class_dimension(input.dim(), class_dim)
    local_classes = input.shape[dim] if input.dim() > 0 else 0
    if not torch.jit.is_scripting():
        input, target = _checks.prepare_class(
            input, target, weight, ignore_index, reduction, sample_weight, normalizer, validate, backend, class_dim,
            num_classes=size * local_classes,
        )  # fmt: skip
    return sharded_cross_entropy(
        input, target, weight, ignore_index, reduction, label_smoothing, sample_weight, normalizer, z_loss,
        logit_softcap, dim, rank * local_classes, size * local_classes, group,
    )  # fmt: skip


# ---------------------------------------------------------------- the linear form


def vocab_parallel_linear_cross_entropy(
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
    process_group: Optional["dist.ProcessGroup"] = None,
) -> Tensor:
    """Cross entropy of ``input @ linear_weight.T + linear_bias`` with the classifier sharded over
    the vocabulary across ``process_group``, without materialising this rank's logits.

    Rank ``r`` of ``P`` holds the classifier rows (and bias) of the classes ``[r * V_local, (r +
    1) * V_local)``; every rank holds the whole hidden states. The result is the same on every
    rank: that of [linear_cross_entropy][exportable_loss.functional.linear_cross_entropy] with the whole
    classifier. Each rank's classifier and bias gradients are its slices of the whole gradients;
    the hidden states' gradient is summed over the ranks in the backward (one all-reduce of
    ``input``'s size), so every rank holds the whole of it: do not all-reduce it again.
    Communication otherwise: two all-reduces of position-sized tensors; no host synchronisation.
    In eager mode and under ``torch.compile`` the forward computes ``chunk_size`` rows of logits at
    a time and keeps three numbers per row; the backward recomputes them.

    Args:
        input: hidden states ``(H,)``, ``(N, H)`` or ``(N, d1, ..., dk, H)``, the same on every rank.
        linear_weight: this rank's classifier rows ``(V_local, H)``, ``input``'s dtype.
        target: class indices of the whole vocabulary, the same on every rank; or class
            probabilities of this rank's classes (class dimension at position 1).
        linear_bias: optional ``(V_local,)`` bias of this rank's classes.
        weight: optional ``(V,)`` class weights of the whole vocabulary.
        ignore_index: as ``linear_cross_entropy``'s.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``.
        label_smoothing: as ``linear_cross_entropy``'s.
        sample_weight: optional ``(N,)`` weights, one per sample.
        normalizer: optional 0-dim denominator of ``"mean"``; no gradient flows into it.
        z_loss: as ``linear_cross_entropy``'s.
        logit_softcap: as ``linear_cross_entropy``'s.
        chunk_size: rows of hidden states per chunk; ``None`` picks one automatically.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch code.
        process_group: the ranks the vocabulary is sharded over (default: the world; one process
            without an initialised process group).

    Returns:
        The loss in ``input``'s dtype, shaped as ``linear_cross_entropy``'s.

    Examples:
        >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> classifier = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])  # one process
        >>> vocab_parallel_linear_cross_entropy(hidden, classifier, torch.tensor([0, 2, -100]))
        tensor(0.5159)
    """
    group = _group(process_group)
    rank, size = _rank_and_size(group)
    local_classes = linear_weight.shape[0]
    class_offset, num_classes = rank * local_classes, size * local_classes
    if not torch.jit.is_scripting():
        _checks.check_linear_cross_entropy(input, linear_weight, target, linear_bias, chunk_size)
        _checks.check_class_weight(weight, num_classes, input, f"the vocabulary ({num_classes} classes)")
        _checks.check_reduction_args(
            reduction, input, input.dim() > 1, sample_weight, normalizer, REDUCTIONS, input.shape[:-1]
        )
        _checks.check_backend(backend)
    input = all_reduce_gradient(input, group)
    if not chunked_linear(input, target):
        input = without_uncounted_rows(input, linear_weight, target, ignore_index, sample_weight)
        logits = F.linear(input, linear_weight, linear_bias)
        if logits.dim() > 2:  # the class dimension to position 1 (a view)
            last = logits.dim() - 1
            logits = logits.permute([0, last] + list(range(1, last)))
        return sharded_cross_entropy(
            logits, target, weight, ignore_index, reduction, label_smoothing, sample_weight, normalizer, z_loss,
            logit_softcap, 0 if logits.dim() == 1 else 1, class_offset, num_classes, group,
        )  # fmt: skip
    hidden = input.shape[-1]
    probabilities = target.is_floating_point()
    rows_target = target.movedim(1, -1).reshape(-1, local_classes) if probabilities else target.reshape(-1).long()
    statistics = vocab_parallel_linear_statistics(
        input.reshape(-1, hidden),
        linear_weight,
        linear_bias,
        rows_target.contiguous(),
        _shard_of(weight, class_offset, local_classes),
        class_offset,
        num_classes,
        label_smoothing,
        0.0 if logit_softcap is None else logit_softcap,
        0 if chunk_size is None else chunk_size,
    )
    # rows that do not count get exactly 0 gradient in the statistics (the op then leaves them out
    # of every gradient), even where their hidden states are NaN or Inf
    rows = counted_rows(target, ignore_index, sample_weight)
    counts = rows.expand(list(input.shape[:-1]) + [1]).reshape(-1) if rows is not None else None
    statistics = counted_gradient(statistics, counts)
    log_sum_exp = statistics[0]
    max_logit = _max_over_ranks(log_sum_exp.detach(), group)
    local = torch.stack([torch.exp(log_sum_exp - max_logit), statistics[1], statistics[2]])
    totals = _sum_over_ranks(local, group)
    if not torch.jit.is_scripting():
        if counts is not None:
            guard_counted_gradient([statistics], counts, max_logit + totals.sum(0))
    totals = totals.reshape((3,) + tuple(input.shape[:-1]))
    max_logit = max_logit.reshape(input.shape[:-1])
    loss = _position_loss(max_logit, totals, target, weight, ignore_index, label_smoothing, z_loss, num_classes)
    return _reduce(loss, reduction, sample_weight, normalizer, input.dtype)


# ---------------------------------------------------------------- DTensor logits


def _dtensor_type() -> Optional[type]:
    # DTensor is importable only after torch.distributed.tensor is (about a second): a tensor
    # cannot be one unless that module is loaded already.
    import sys

    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else module.DTensor


def is_dtensor(t: Tensor) -> bool:
    kind = _dtensor_type()
    return kind is not None and isinstance(t, kind)


def dtensor_cross_entropy(
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
    validate: bool,
    backend: str,
    class_dim: int,
) -> Tensor:
    """``cross_entropy`` of a DTensor sharded on its class dimension over a 1-D device mesh:
    `vocab_parallel_cross_entropy` on the local shards (a plain tensor, the same on every rank).

    Uneven shards follow DTensor's layout (``torch.chunk``'s: every shard but the last holds
    ``ceil(V / P)`` classes). ``target`` and ``sample_weight`` may be plain tensors or DTensors,
    replicated (or, for probability targets, sharded as ``input``)."""
    from torch.distributed.tensor import Shard

    dim = class_dimension(input.dim(), class_dim)
    sharded: Any = input  # a DTensor (torch's stubs type it as a Tensor)
    mesh, placements = sharded.device_mesh, tuple(sharded.placements)
    if mesh.ndim != 1 or placements != (Shard(dim),):
        raise ValueError(
            f"a DTensor input must be sharded on its class dimension {dim} over a 1-D device mesh "
            f"(placements (Shard({dim}),)); got placements {placements} over a {mesh.ndim}-D mesh"
        )
    group = mesh.get_group()
    rank, size = _rank_and_size(group)
    num_classes = input.shape[dim]
    chunk = -(-num_classes // size)
    local = sharded.to_local()
    target = cast(Any, target).to_local() if is_dtensor(target) else target
    if sample_weight is not None and is_dtensor(sample_weight):
        sample_weight = cast(Any, sample_weight).to_local()
    input, target = _checks.prepare_class(
        local, target, weight, ignore_index, reduction, sample_weight, normalizer, validate, backend, class_dim,
        num_classes=num_classes,
    )  # fmt: skip
    return sharded_cross_entropy(
        input, target, weight, ignore_index, reduction, label_smoothing, sample_weight, normalizer, z_loss,
        logit_softcap, dim, rank * chunk, num_classes, group,
    )  # fmt: skip
