"""Eager input checks: metadata only (shapes, dtypes, devices), no device synchronisation.

Called from the loss functions outside TorchScript. Under ``torch.compile`` and
``torch.export`` the shape comparisons become guards; they never read tensor values, except
``validate_class_indices``, which callers run only in eager mode.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from exportable_loss._dispatch import BACKENDS, eager
from exportable_loss._numerics import autocast_float32
from exportable_loss._reduction import REDUCTIONS
from exportable_loss._targets import class_dimension

# dtypes no autocast rule touches
_FULL = (torch.float32, torch.float64)


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_backend(backend: str) -> None:
    check_choice("backend", backend, BACKENDS)


def check_cross_entropy_options(label_smoothing: float, z_loss: float, logit_softcap: Optional[float]) -> None:
    """The options CrossEntropyLoss and FusedLinearCrossEntropyLoss share."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing}")
    if z_loss < 0.0:
        raise ValueError(f"z_loss must be non-negative; got {z_loss}")
    if logit_softcap is not None and logit_softcap <= 0.0:
        raise ValueError(f"logit_softcap must be positive or None; got {logit_softcap}")


def check_chunk_size(chunk_size: Optional[int]) -> None:
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of rows or None (automatic); got {chunk_size}")


def check_floating(name: str, t: Tensor) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {t.dtype}")


def check_real_target(target: Tensor) -> None:
    """Targets are real numbers: a complex one would lose its imaginary part or make the loss
    complex, a boolean one fails inside torch's arithmetic."""
    if target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must have a real, non-bool dtype (convert a mask with .float()); got {target.dtype}")


def check_device(name: str, t: Optional[Tensor], input: Tensor) -> None:
    if t is not None and t.device != input.device:
        raise ValueError(f"{name} must be on the input's device {input.device}; got {t.device}")


def check_reduction_args(
    reduction: str,
    input: Tensor,
    batched: bool,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    choices: Sequence[str],
    positions: Optional[Sequence[int]] = None,
) -> None:
    """Checks shared by every loss: reduction name, sample_weight, normalizer.

    ``positions``: the shape of the loss's element-wise term, for a loss whose ``sample_weight``
    may also hold one weight per position; None: one weight per sample only.
    """
    check_choice("reduction", reduction, choices)
    if reduction == "per_sample" and not batched:
        raise ValueError(
            f"reduction='per_sample' needs a batch dimension; got an unbatched input of shape {tuple(input.shape)}"
        )
    if sample_weight is not None:
        if not batched:
            raise ValueError(
                f"sample_weight needs a batch dimension; got an unbatched input of shape {tuple(input.shape)}"
            )
        expected = (input.shape[0],)
        per_position = tuple(positions) if positions is not None and len(positions) > 1 else None
        if tuple(sample_weight.shape) != expected and tuple(sample_weight.shape) != per_position:
            alternative = "" if per_position is None else f" or {per_position} (one weight per position)"
            raise ValueError(
                f"sample_weight must have shape {expected} (one weight per sample of input "
                f"{tuple(input.shape)}){alternative}; got {tuple(sample_weight.shape)}"
            )
        check_floating("sample_weight", sample_weight)
        check_device("sample_weight", sample_weight, input)
    if normalizer is not None:
        if reduction not in ("mean", "batchmean"):
            raise ValueError(f"normalizer is used only by reduction='mean' or 'batchmean'; got reduction={reduction!r}")
        if not isinstance(normalizer, Tensor) or normalizer.dim() != 0:
            shape = tuple(normalizer.shape) if isinstance(normalizer, Tensor) else type(normalizer).__name__
            raise ValueError(f"normalizer must be a 0-dim tensor; got {shape}")
        if normalizer.dtype == torch.bool or normalizer.is_complex():
            raise ValueError(f"normalizer must have a real dtype; got {normalizer.dtype}")
        check_device("normalizer", normalizer, input)


def check_class_weight(weight: Optional[Tensor], num_classes: int, input: Tensor, classes_of: str) -> None:
    """Class weights: one per class (``classes_of`` says of what), on the input's device."""
    if weight is not None:
        check_device("weight", weight, input)
        if tuple(weight.shape) != (num_classes,):
            raise ValueError(
                f"weight must have shape ({num_classes},), one weight per class of {classes_of}; "
                f"got {tuple(weight.shape)}"
            )


def check_class_dim(class_dim: int) -> None:
    if class_dim not in (1, -1):
        raise ValueError(f"class_dim must be 1 (logits (N, C, ...)) or -1 (logits (N, ..., C)); got {class_dim}")


def check_class_target(input: Tensor, target: Tensor, weight: Optional[Tensor], class_dim: int = 1) -> bool:
    """Checks a cross entropy / NLL pair (classes at ``class_dim``, 1 or -1, of a batched input);
    returns True for class-probability targets."""
    if input.dim() == 0:
        raise ValueError("input must have a class dimension: shape (C,), (N, C) or (N, C, d1, ...); got a 0-dim tensor")
    check_floating("input", input)
    check_device("target", target, input)
    check_class_dim(class_dim)
    class_dim = class_dimension(input.dim(), class_dim)
    num_classes = input.shape[class_dim]
    check_class_weight(weight, num_classes, input, f"input {tuple(input.shape)}")
    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                f"class-probability target must have the input's shape {tuple(input.shape)}; "
                f"got target {tuple(target.shape)}"
            )
        return True
    if target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must hold integer class indices or float probabilities; got dtype {target.dtype}")
    expected = tuple(input.shape[:class_dim]) + tuple(input.shape[class_dim + 1 :])
    if tuple(target.shape) != expected:
        hint = ""
        if class_dim == 1 and input.dim() > 2 and tuple(target.shape) == tuple(input.shape[:-1]):
            hint = f"; for logits with the classes last ({input.shape[-1]} classes), pass class_dim=-1"
        raise ValueError(
            f"class-index target must have shape {expected} for input {tuple(input.shape)} (classes at "
            f"dim {class_dim}); got target {tuple(target.shape)}{hint}"
        )
    return False


def check_linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Optional[Tensor],
    chunk_size: Optional[int],
) -> None:
    """Hidden states, classifier, bias and target of a linear cross entropy (metadata only)."""
    check_floating("input", input)
    check_floating("linear_weight", linear_weight)
    if linear_weight.dim() != 2:
        raise ValueError(f"linear_weight must have shape (C, H); got {tuple(linear_weight.shape)}")
    if input.dim() == 0 or input.shape[-1] != linear_weight.shape[1]:
        raise ValueError(
            f"input must have shape (..., H) with H = linear_weight.shape[1] = {linear_weight.shape[1]}; "
            f"got input {tuple(input.shape)}"
        )
    if input.dtype != linear_weight.dtype:
        raise ValueError(f"input and linear_weight must have one dtype; got {input.dtype} and {linear_weight.dtype}")
    check_device("linear_weight", linear_weight, input)
    if linear_bias is not None:
        check_device("linear_bias", linear_bias, input)
        if tuple(linear_bias.shape) != (linear_weight.shape[0],):
            raise ValueError(
                f"linear_bias must have shape ({linear_weight.shape[0]},), one per class; "
                f"got {tuple(linear_bias.shape)}"
            )
    check_chunk_size(chunk_size)
    check_real_target(target)
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


def validate_class_indices(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Raises on the first class index outside [0, num_classes) that is not ignore_index.

    Synchronises with the device; callers run it in eager mode only, when asked (validate=True).
    """
    if not eager():
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        flat = bad.reshape(-1).nonzero()[0, 0]
        position = tuple(int(i) for i in torch.unravel_index(flat, target.shape)) if target.dim() else ()
        raise ValueError(
            f"target holds class index {int(target.reshape(-1)[flat])} at position {position}, "
            f"outside the valid range [0, {num_classes - 1}] (ignore_index={ignore_index})"
        )


def validate_finite(name: str, t: Optional[Tensor]) -> None:
    if t is None or not eager():
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or Inf")


def check_tensors(names: List[str], tensors: List[Tensor], floating: List[str]) -> None:
    """Each argument is a tensor on the first one's device; those named in ``floating`` have a
    floating dtype, the others a real, non-bool one."""
    device = tensors[0].device if isinstance(tensors[0], Tensor) else None
    for name, t in zip(names, tensors):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a tensor; got {type(t).__name__}")
        if t.device != device:
            check_device(name, t, tensors[0])
        if t.dtype in _FULL:
            continue  # floating and real: the common case, without the calls below
        if name in floating:
            check_floating(name, t)
        elif t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{name} must have a real, non-bool dtype; got {t.dtype}")


def shapes(names: List[str], tensors: List[Tensor]) -> str:
    """``"a (2, 3) and b (2,)"`` or ``"a (2, 3), b (2,), c (4,)"``: two or three arguments' shapes for an error message
    (no str.join: torch.compile traces these messages)."""
    s = [tuple(t.shape) for t in tensors]
    if len(names) == 2:
        return f"{names[0]} {s[0]} and {names[1]} {s[1]}"
    return f"{names[0]} {s[0]}, {names[1]} {s[1]}, {names[2]} {s[2]}"


def check_same_shapes(names: List[str], tensors: List[Tensor]) -> None:
    """Every tensor (two or three) has the first one's shape; torch.nn would broadcast, we raise."""
    first = tensors[0].shape
    if tensors[1].shape != first or (len(tensors) > 2 and tensors[2].shape != first):
        listed = f"{names[0]} and {names[1]}" if len(names) == 2 else f"{names[0]}, {names[1]} and {names[2]}"
        raise ValueError(f"{listed} must have the same shape; got {shapes(names, tensors)} (broadcasting is not done)")


def prepare_pointwise(
    input: Tensor,
    target: Tensor,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    choices: Sequence[str],
    backend: str,
) -> Tuple[Tensor, Tensor]:
    """Checks for the element-wise losses (dim 0 is the batch whenever input has a dimension)."""
    # the common call, accepted in a few attribute reads (every check below passes, no autocast
    # applies): at small sizes the full checks cost as much as the loss (issue 15)
    if input.dtype in _FULL and target.dtype == input.dtype and target.shape == input.shape and input.dim() > 0:
        if normalizer is None and target.device == input.device and backend in BACKENDS and reduction in choices:
            if sample_weight is None or _one_per_sample(sample_weight, input):
                return input, target
    check_floating("input", input)
    check_real_target(target)
    check_device("target", target, input)
    check_same_shapes(["input", "target"], [input, target])
    check_reduction_args(reduction, input, input.dim() > 0, sample_weight, normalizer, choices, input.shape)
    check_backend(backend)
    input, target = autocast_float32([input, target])
    return input, target


def common_class_call(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    validate: bool,
    backend: str,
    class_dim: int = 1,
) -> bool:
    """The common call of cross entropy / NLL, which would pass every check of ``prepare_class``
    and needs no autocast: ``(N, C)`` float32/float64 logits, ``(N,)`` int64 indices, ``(C,)``
    class weights and ``(N,)`` float32/float64 sample weights on the logits' device, no
    normalizer, no ``validate``. Told in a few attribute reads, where the checks cost as much as
    a small loss (issue 15); the caller runs ``prepare_class`` where it is False."""
    if input.dim() != 2 or target.dim() != 1 or input.dtype not in _FULL or target.dtype != torch.int64:
        return False
    if normalizer is not None or validate or target.shape[0] != input.shape[0] or target.device != input.device:
        return False
    if weight is not None and (weight.dim() != 1 or weight.shape[0] != input.shape[1] or weight.device != input.device):
        return False
    if sample_weight is not None and not _one_per_sample(sample_weight, input):
        return False
    return reduction in REDUCTIONS and backend in BACKENDS and (class_dim == 1 or class_dim == -1)


def _one_per_sample(sample_weight: Tensor, input: Tensor) -> bool:
    """``sample_weight`` passes ``check_reduction_args``'s checks as one float32/float64 weight per
    sample of a batched ``input``."""
    shaped = sample_weight.dim() == 1 and sample_weight.shape[0] == input.shape[0]
    return shaped and sample_weight.dtype in _FULL and sample_weight.device == input.device


def prepare_class(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    validate: bool,
    backend: str,
    class_dim: int = 1,
    num_classes: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """Checks for cross entropy and NLL (``validate``: the class indices and weights' values too).

    ``num_classes``: the whole vocabulary where ``input`` holds a shard of it; the class weights
    and the valid class indices are the vocabulary's.
    """
    sharded = num_classes is not None
    probabilities = check_class_target(input, target, None if sharded else weight, class_dim)
    dim = class_dimension(input.dim(), class_dim)
    if num_classes is None:
        num_classes = input.shape[dim]
    else:
        check_class_weight(weight, num_classes, input, f"the vocabulary ({num_classes} classes)")
    positions = list(input.shape[:dim]) + list(input.shape[dim + 1 :])
    check_reduction_args(reduction, input, input.dim() > 1, sample_weight, normalizer, REDUCTIONS, positions)
    check_backend(backend)
    if validate and not probabilities:
        validate_class_indices(target, num_classes, ignore_index)
        validate_finite("weight", weight)
        validate_finite("sample_weight", sample_weight)
    input, target = autocast_float32([input, target])
    return input, target


def check_fused_grads(target: Tensor, sample_weight: Optional[Tensor]) -> None:
    """The fused kernels differentiate with respect to the input only."""
    if target.requires_grad:
        raise ValueError(
            "backend='triton' computes no gradient for target; got a target that requires grad "
            "(use backend='torch', or detach the target)"
        )
    if sample_weight is not None and sample_weight.requires_grad:
        raise ValueError(
            "backend='triton' computes no gradient for sample_weight; got a sample_weight that "
            "requires grad (use backend='torch', or detach it)"
        )
