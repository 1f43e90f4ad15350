"""Class-index targets: which positions count, their class weights, the NLL gathered at them, and
the causal language model's shift. Shared by cross entropy, NLL, the fused ops, distillation and
the distributed denominator."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from exportable_loss._numerics import accumulation_dtype
from exportable_loss._reduction import sample_weights_like


def class_dimension(input_dim: int, class_dim: int) -> int:
    """The class dimension of logits with ``input_dim`` dimensions: 0 unbatched, else
    ``class_dim`` (1, or -1 for classes last) as a non-negative index."""
    if input_dim == 1:
        return 0
    return 1 if class_dim == 1 else input_dim - 1


def counted_targets(
    target: Tensor, weight: Optional[Tensor], ignore_index: int, num_classes: int
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Which int64 class-index positions count, and their class weights.

    Returns ``(valid, in_range, safe, target_weight)``: positions that are not ``ignore_index``;
    indices inside ``[0, num_classes)``; the index with out-of-range ones replaced by 0 (safe
    to gather with); ``weight[target]`` at counted positions and 0 elsewhere (None without
    ``weight``).
    """
    valid = target != ignore_index
    in_range = (target >= 0) & (target < num_classes)
    safe = torch.where(in_range, target, torch.zeros_like(target))
    target_weight: Optional[Tensor] = None
    if weight is not None:
        gathered = weight[safe]
        target_weight = torch.where(valid, gathered, torch.zeros_like(gathered))
    return valid, in_range, safe, target_weight


def counted_positions(target: Tensor, ignore_index: int, sample_weight: Optional[Tensor], dim: int) -> Optional[Tensor]:
    """The positions that count (not ``ignore_index``, sample weight not 0), with a class
    dimension of 1 at ``dim`` to broadcast over the logits; None where every position counts.

    ``target``: class indices, or a floating tensor with the class dimension at ``dim`` (class
    probabilities, or the logits where a loss has no labels), whose positions all count but for
    their sample weights.
    """
    probabilities = target.is_floating_point()
    counts: Optional[Tensor] = None
    if not probabilities:
        counts = target != ignore_index
    if sample_weight is not None:
        positions = target.select(dim, 0) if probabilities else target
        nonzero = sample_weights_like(sample_weight, positions) != 0
        counts = nonzero if counts is None else counts & nonzero
    return counts.unsqueeze(dim) if counts is not None else None


def counted_rows(target: Tensor, ignore_index: int, sample_weight: Optional[Tensor]) -> Optional[Tensor]:
    """The rows of a linear cross entropy's hidden states ``(N, d1, ..., dk, H)`` that count, shaped
    ``(N, d1, ..., dk, 1)``; ``target`` holds class indices or probabilities (class dimension 1)."""
    if target.is_floating_point():
        dim = 1 if target.dim() > 1 else 0
        counts = counted_positions(target, ignore_index, sample_weight, dim)
        return None if counts is None else counts.movedim(dim, -1)
    return counted_positions(target, ignore_index, sample_weight, target.dim())


def without_uncounted_rows(
    input: Tensor, linear_weight: Tensor, target: Tensor, ignore_index: int, sample_weight: Optional[Tensor]
) -> Tensor:
    """A linear cross entropy's hidden states with the rows that do not count zeroed, where the
    classifier takes gradients (its unfused form). That gradient sums ``grad_logits.T @ input``
    over the rows, and a NaN or Inf row times its logits' zero gradient would be NaN; the rows'
    loss is zeroed anyway. The chunked ops leave such rows out of their sums themselves."""
    if not (linear_weight.requires_grad and torch.is_grad_enabled()):
        return input
    counts = counted_rows(target, ignore_index, sample_weight)
    if counts is None:
        return input
    return torch.where(counts, input, torch.zeros_like(input))


def _at_targets(logp: Tensor, safe: Tensor, class_dim: int, after_log_softmax: bool) -> Tensor:
    """``logp`` at the in-range class indices ``safe``, the class dimension removed.

    ``gather`` everywhere but for a ``log_softmax``'s output under ``torch.compile``, which gets
    ``F.nll_loss`` (the same numbers): Inductor turns its backward into a comparison with the
    class index that fuses with the log-softmax's, where ``gather``'s backward scatters into a
    logits-sized buffer of its own (cross entropy at (512, 32000): 1.47 times compiled
    ``torch.nn`` before, 1.00 after). Without a log-softmax to fuse with (NLL of given
    log-probabilities) the scatter is the cheaper (0.84 against 1.11 at (4096, 1000)). Exported
    graphs keep ``gather``, which every exporter translates faithfully.
    """
    if not torch.jit.is_scripting():
        if after_log_softmax and torch.compiler.is_compiling() and not torch.compiler.is_exporting():
            num_classes = logp.shape[class_dim]
            if class_dim == 1 or logp.dim() == 1:
                return -F.nll_loss(logp, safe, reduction="none")
            # classes last, (N, d1, ..., C): rows of classes, as F.nll_loss reads them
            return -F.nll_loss(logp.reshape(-1, num_classes), safe.reshape(-1), reduction="none").reshape(safe.shape)
    return logp.gather(class_dim, safe.unsqueeze(class_dim)).squeeze(class_dim)


def class_terms(
    logp: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    class_dim: int = 1,
    after_log_softmax: bool = False,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """NLL at class-index targets: (class-weighted nll, counted-position mask, target weights),
    the classes of ``logp`` at ``class_dim`` (1 or -1).

    An index outside [0, C) that is not ignore_index gives NaN: never an out-of-bounds read or
    a device-side assert. The terms are in the accumulation dtype (float32 for half-precision
    ``logp``: a class weight of 4000 times an NLL of 30 overflows float16). ``after_log_softmax``:
    ``logp`` was computed by the caller from logits (cross entropy); see ``_at_targets``.
    """
    class_dim = class_dimension(logp.dim(), class_dim)
    num_classes = logp.shape[class_dim]
    acc = accumulation_dtype(logp.dtype)
    target = target.long()
    if weight is not None:
        weight = weight.to(acc)
    valid, in_range, safe, target_weight = counted_targets(target, weight, ignore_index, num_classes)
    nll = -_at_targets(logp, safe, class_dim, after_log_softmax).to(acc)
    if target_weight is not None:
        nll = nll * target_weight
    nll = torch.where(in_range | ~valid, nll, torch.full_like(nll, float("nan")))
    return nll, valid, target_weight


def shift_labels(labels: Tensor, ignore_index: int = -100) -> Tensor:
    """The targets of a causal language model: position ``t`` predicts ``labels[..., t + 1]``.

    Returns ``labels`` shifted left by one along the last dimension, the last position set to
    ``ignore_index``, as Hugging Face's ``ForCausalLMLoss`` does: the logits stay as they are (no
    copy of the largest tensor), the last position does not count. Shift per-position sample
    weights the same way with ``ignore_index=0``.

    Examples:
        >>> shift_labels(torch.tensor([[5, 6, 7, -100]]))
        tensor([[   6,    7, -100, -100]])
    """
    end = torch.full_like(labels[..., :1], ignore_index)
    return torch.cat([labels[..., 1:], end], -1)
