"""Dice and Tversky (focal Tversky) losses for segmentation.

Both go through one routine: soft true positives, false positives and false negatives per image
and class (or over the whole batch), a smoothed Tversky index, then ``(1 - index) ** gamma``.
Dice is the Tversky index with ``alpha = beta = 0.5`` and both smoothing terms halved, which is
MONAI's ``DiceLoss`` and segmentation_models_pytorch's ``DiceLoss`` (smoothing mapped as
``dice_loss`` says).
"""

from typing import List, Optional, Tuple, cast

import torch
from torch import Tensor, nn

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._numerics import accumulation_dtype, autocast_float32
from exportable_loss._reduction import (
    DENOMINATOR_DTYPE,
    REDUCTIONS,
    counted_gradient,
    guard_counted_gradient,
    mean_denominator,
    reduce_loss,
    sample_counts,
)
from exportable_loss._registry import declare

MODES = ("multiclass", "multilabel")


def _check_options(
    alpha: float,
    beta: float,
    gamma: float,
    mode: str,
    per_image: bool,
    smooth_nr: float,
    smooth_dr: float,
    include_background: bool,
    reduction: str,
) -> None:
    """The option checks shared by the functions and the module constructors."""
    _checks.check_choice("mode", mode, MODES)
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    for name, value in (("alpha", alpha), ("beta", beta), ("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
        if not value >= 0.0:
            raise ValueError(f"{name} must be non-negative; got {value}")
    if not gamma > 0.0:
        raise ValueError(f"gamma must be positive; got {gamma}")
    if not include_background and mode != "multiclass":
        raise ValueError(
            "include_background=False drops class 0, the background of mode='multiclass'; "
            f"got mode={mode!r} (every channel of a multilabel input is a foreground class)"
        )
    if reduction == "per_sample" and not per_image:
        raise ValueError(
            "reduction='per_sample' needs per_image=True; with per_image=False the statistics "
            "are summed over the batch, so there is no per-sample loss"
        )


def _prologue(
    input: Tensor,
    target: Tensor,
    mode: str,
    include_background: bool,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    backend: str,
) -> Tuple[Tensor, Tensor]:
    """Eager checks (metadata only) of the tensors; the options are checked by the caller."""
    _checks.check_backend(backend)
    _checks.check_floating("input", input)
    if input.dim() < 2:
        raise ValueError(f"input must have shape (N, C) or (N, C, d1, ..., dk); got {tuple(input.shape)}")
    if not include_background and input.shape[1] < 2:
        raise ValueError(
            f"include_background=False needs at least 2 classes; got input {tuple(input.shape)} with "
            f"{input.shape[1]} class"
        )
    if mode == "multiclass":
        _checks.check_class_target(input, target, None)
    else:
        _checks.check_device("target", target, input)
        if target.is_complex():
            raise ValueError(f"target must be real (a mask or probabilities in [0, 1]); got dtype {target.dtype}")
        _checks.check_same_shapes(["input", "target"], [input, target])
    _checks.check_reduction_args(reduction, input, True, sample_weight, normalizer, REDUCTIONS)
    input, target = autocast_float32([input, target])
    return input, target


def _spatial_sum(x: Tensor, dims: List[int], dtype: torch.dtype) -> Tensor:
    # An empty dim list would sum over everything; (N, C) inputs have one position per image.
    if len(dims) == 0:
        return x.to(dtype)
    return x.sum(dim=dims, dtype=dtype)


def _index_loss(
    tp: Tensor,
    fp: Tensor,
    fn: Tensor,
    counted: Optional[Tensor],
    alpha: float,
    beta: float,
    gamma: float,
    smooth_nr: float,
    smooth_dr: float,
) -> Tensor:
    """``(1 - (tp + smooth_nr) / (tp + alpha fp + beta fn + smooth_dr)) ** gamma``, 0 where nothing
    counts, where the denominator is 0 or where the index is at least 1; NaN propagates."""
    denominator = tp + alpha * fp + beta * fn + smooth_dr
    zero = denominator == 0
    score = (tp + smooth_nr) / torch.where(zero, torch.ones_like(denominator), denominator)
    base = 1.0 - score
    # `~(base <= 0)` rather than `base > 0` keeps NaN; the power only sees positive bases, so
    # its derivative (infinite at 0 for gamma < 1) never meets a zero upstream gradient.
    keep = ~(base <= 0.0) & ~zero
    if counted is not None:
        keep = keep & counted
    if gamma != 1.0:
        base = torch.pow(torch.where(keep, base, torch.ones_like(base)), gamma)
    return torch.where(keep, base, torch.zeros_like(base))


def _tversky(
    input: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    mode: str,
    per_image: bool,
    smooth_nr: float,
    smooth_dr: float,
    ignore_index: int,
    include_background: bool,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
) -> Tensor:
    """The routine behind ``tversky_loss`` and ``dice_loss`` (tensors checked already)."""
    num_classes = input.shape[1]
    acc = accumulation_dtype(input.dtype)
    # images of weight 0 get exactly 0 gradient, even where they hold NaN or Inf
    counts = sample_counts(sample_weight, input)
    input = counted_gradient(input, counts)
    if target.is_floating_point():
        target = counted_gradient(target, counts)
    guarded = [input, target]
    valid: Optional[Tensor] = None
    if mode == "multiclass":
        if target.is_floating_point():
            p = torch.softmax(input, 1)
            t = target
        else:
            index = target.long().unsqueeze(1)
            valid = index != ignore_index
            shape = [1] * input.dim()
            shape[1] = num_classes
            classes = torch.arange(num_classes, device=input.device).reshape(shape)
            one_hot = (index == classes).to(input.dtype)
            # An index outside [0, C) that is not ignored gives NaN, never a silent all-zero row.
            bad = valid & ((index < 0) | (index >= num_classes))
            t = torch.where(bad, torch.full_like(one_hot, float("nan")), one_hot)
            # Ignored positions see logits 0: no NaN/Inf there reaches the forward or the backward.
            p = torch.softmax(torch.where(valid, input, torch.zeros_like(input)), 1)
    else:
        if not target.is_floating_point():
            target = target.to(input.dtype)
        valid = target != ignore_index
        t = torch.where(valid, target, torch.zeros_like(target))
        p = torch.sigmoid(torch.where(valid, input, torch.zeros_like(input)))

    tp = p * t
    fp = p * (1.0 - t)
    fn = (1.0 - p) * t
    dims: List[int] = list(range(2, input.dim()))
    counted: Optional[Tensor] = None
    if valid is not None:
        tp = torch.where(valid, tp, torch.zeros_like(tp))
        fp = torch.where(valid, fp, torch.zeros_like(fp))
        fn = torch.where(valid, fn, torch.zeros_like(fn))
        counted = _spatial_sum(valid, dims, acc)  # counted positions per image (and class)
    else:
        positions = 1
        for size in input.shape[2:]:
            positions *= size
        if positions == 0:
            counted = torch.zeros([input.shape[0], 1], dtype=acc, device=input.device)
    tp = _spatial_sum(tp, dims, acc)
    fp = _spatial_sum(fp, dims, acc)
    fn = _spatial_sum(fn, dims, acc)
    if not torch.jit.is_scripting():
        if counts is not None:
            # the statistics (not the loss, which clamps): non-finite wherever an image's inputs are
            guard_counted_gradient(guarded, counts, (tp + fp + fn).sum(1).reshape(counts.shape))
    if not include_background:
        tp, fp, fn = tp[:, 1:], fp[:, 1:], fn[:, 1:]
        if counted is not None and counted.shape[1] != 1:
            counted = counted[:, 1:]

    if per_image:
        loss = _index_loss(
            tp, fp, fn, None if counted is None else counted > 0, alpha, beta, gamma, smooth_nr, smooth_dr
        ).to(input.dtype)
        pair_valid: Optional[Tensor] = None
        if counted is not None:
            pair_valid = (counted > 0).expand(loss.shape)
        return reduce_loss(loss, reduction, sample_weight, normalizer, pair_valid)

    if counted is None:
        counted = torch.ones([input.shape[0], 1], dtype=acc, device=input.device)
    if sample_weight is not None:
        s = sample_weight.to(acc).reshape(-1, 1)
        # A zero-weight image counts for nothing, even where its statistics are NaN.
        nonzero = s != 0
        tp = torch.where(nonzero, tp * s, torch.zeros_like(tp))
        fp = torch.where(nonzero, fp * s, torch.zeros_like(fp))
        fn = torch.where(nonzero, fn * s, torch.zeros_like(fn))
        counted = torch.where(nonzero, counted, torch.zeros_like(counted))
    batch_counted = counted.sum(0) > 0
    loss = _index_loss(tp.sum(0), fp.sum(0), fn.sum(0), batch_counted, alpha, beta, gamma, smooth_nr, smooth_dr)
    loss = loss.to(input.dtype)
    return reduce_loss(loss, reduction, None, normalizer, batch_counted.expand(loss.shape))


def tversky_loss(
    input: Tensor,
    target: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    mode: str = "multiclass",
    per_image: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    ignore_index: int = -100,
    include_background: bool = True,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Tversky loss, and focal Tversky loss through ``gamma``, on segmentation logits.

    For each image ``n`` and class ``c`` (``per_image=True``), over the positions that count,
    with ``p`` the predicted probabilities and ``t`` the target:

        tp = sum(p * t)    fp = sum(p * (1 - t))    fn = sum((1 - p) * t)
        score = (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)
        l[n, c] = max(1 - score, 0) ** gamma

    This is MONAI's ``TverskyLoss`` (``gamma=1``) and segmentation_models_pytorch's
    ``TverskyLoss`` with ``smooth_nr = smooth_dr = smooth`` (which applies ``gamma`` to the mean
    over classes instead, and zeroes classes absent from the target: we do neither). ``gamma``
    below 1 (e.g. 0.75, Abraham and Khan's focal Tversky) raises the loss of well-segmented
    classes less than of poor ones. ``alpha`` weighs false positives, ``beta`` false negatives.

    An (image, class) pair with no counted position (every position ignored, or no positions)
    has loss 0 and zero gradients, and does not count as a position for ``"per_sample"`` and
    ``"mean"`` (as an ignored position of cross entropy). A pair whose index denominator is 0
    (possible only with ``smooth_dr = 0``) has loss 0 too, but counts.

    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: ``mode="multiclass"``: class indices ``(N, d1, ..., dk)`` (integer dtype;
            positions equal to ``ignore_index`` do not count; an index outside ``[0, C)`` that is
            not ignored gives NaN for its image), or class probabilities of ``input``'s shape
            (floating dtype; every position counts). ``mode="multilabel"``: a mask or
            probabilities in ``[0, 1]`` of ``input``'s shape (an integer or bool mask is cast
            to ``input``'s dtype); entries equal to ``ignore_index`` do not count, as in
            segmentation_models_pytorch.
        alpha: weight of the false positives (non-negative).
        beta: weight of the false negatives (non-negative).
        gamma: the exponent of the focal Tversky loss (positive; 1 gives the Tversky loss).
        mode: ``"multiclass"`` (softmax over dim 1) or ``"multilabel"`` (sigmoid per channel;
            binary segmentation is multilabel with ``C = 1``).
        per_image: ``True``: statistics per image and class, the element-wise loss ``l`` has
            shape ``(N, K)`` (``K`` classes kept) and reduces as every loss does (``"per_sample"``
            averages over classes). ``False``: statistics summed over the batch (each image's
            multiplied by its ``sample_weight``: here the weight scales pixel statistics, not a
            loss), ``l`` has shape ``(K,)``; ``"none"`` returns it, ``"mean"`` averages it over
            classes (or sums and divides by ``normalizer``), ``"sum"`` sums it and
            ``"per_sample"`` raises ``ValueError``.
        smooth_nr: added to the numerator (non-negative).
        smooth_dr: added to the denominator (non-negative).
        ignore_index: target value whose positions do not count (index targets and multilabel).
        include_background: ``False`` drops class 0 (``mode="multiclass"`` only, ``C >= 2``).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions] (``"per_sample"`` needs ``per_image=True``).
        sample_weight: optional ``(N,)`` weights, one per image.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (this loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: ``"none"`` is ``(N, K)`` (``(K,)`` with
        ``per_image=False``), ``"per_sample"`` is ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.5], [-1.0, 1.5, 0.0]]])   # (N=1, C=2, 3 pixels)
        >>> target = torch.tensor([[0, 1, -100]])                          # the last pixel is ignored
        >>> tversky_loss(logits, target, alpha=0.3, beta=0.7, gamma=0.75)
        tensor(0.1237)
    """
    if not torch.jit.is_scripting():
        _check_options(alpha, beta, gamma, mode, per_image, smooth_nr, smooth_dr, include_background, reduction)
        input, target = _prologue(
            input, target, mode, include_background, reduction, sample_weight, normalizer, backend
        )
    return _tversky(
        input,
        target,
        alpha,
        beta,
        gamma,
        mode,
        per_image,
        smooth_nr,
        smooth_dr,
        ignore_index,
        include_background,
        reduction,
        sample_weight,
        normalizer,
    )


def dice_loss(
    input: Tensor,
    target: Tensor,
    mode: str = "multiclass",
    per_image: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    ignore_index: int = -100,
    include_background: bool = True,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Soft Dice loss on segmentation logits.

    For each image ``n`` and class ``c`` (``per_image=True``), over the positions that count:

        l[n, c] = 1 - (2 tp + smooth_nr) / (2 tp + fp + fn + smooth_dr)

    with ``tp``, ``fp``, ``fn`` the soft statistics of ``tversky_loss`` (``2 tp + fp + fn``
    is ``sum(p) + sum(t)``). This is MONAI's ``DiceLoss`` with the same ``smooth_nr`` and
    ``smooth_dr`` (``batch=True`` is ``per_image=False``) and segmentation_models_pytorch's
    ``DiceLoss(smooth=s)`` with ``per_image=False`` and ``smooth_nr = smooth_dr = 2 * s`` (smp
    0.4 and later; ``= s`` up to 0.3.4), except that smp zeroes classes absent from the target
    and we do not. It is [tversky_loss][exportable_loss.functional.tversky_loss] with
    ``alpha = beta = 0.5``, ``gamma = 1`` and the smoothing terms halved, computed by the same
    routine: the shapes, the handling of ignored positions and of ``per_image`` are those of
    [tversky_loss][exportable_loss.functional.tversky_loss].

    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: ``mode="multiclass"``: class indices ``(N, d1, ..., dk)`` or class probabilities
            of ``input``'s shape; ``mode="multilabel"``: a mask or probabilities of ``input``'s
            shape.
        mode: ``"multiclass"`` (softmax over dim 1) or ``"multilabel"`` (sigmoid per channel).
        per_image: ``True``: statistics per image and class (``l`` is ``(N, K)``); ``False``:
            summed over the batch (``l`` is ``(K,)``, ``sample_weight`` scales each image's
            statistics).
        smooth_nr: added to the numerator (non-negative).
        smooth_dr: added to the denominator (non-negative).
        ignore_index: target value whose positions do not count.
        include_background: ``False`` drops class 0 (``mode="multiclass"`` only, ``C >= 2``).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions] (``"per_sample"`` needs ``per_image=True``).
        sample_weight: optional ``(N,)`` weights, one per image.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (this loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: ``"none"`` is ``(N, K)`` (``(K,)`` with
        ``per_image=False``), ``"per_sample"`` is ``(N,)``, ``"mean"`` and ``"sum"`` are 0-dim.

    Examples:
        >>> logits = torch.tensor([[[3.0, -2.0], [-1.0, 2.0]]])   # (N=1, C=2, 2 pixels)
        >>> dice_loss(logits, torch.tensor([[0, 1]]), reduction="none")
        tensor([[0.0180, 0.0180]])
    """
    if not torch.jit.is_scripting():
        _check_options(0.5, 0.5, 1.0, mode, per_image, smooth_nr, smooth_dr, include_background, reduction)
        input, target = _prologue(
            input, target, mode, include_background, reduction, sample_weight, normalizer, backend
        )
    return _tversky(
        input,
        target,
        0.5,
        0.5,
        1.0,
        mode,
        per_image,
        0.5 * smooth_nr,
        0.5 * smooth_dr,
        ignore_index,
        include_background,
        reduction,
        sample_weight,
        normalizer,
    )


def pair_denominator(
    module: nn.Module, target: Tensor, sample_weight: Optional[Tensor] = None, num_classes: Optional[int] = None
) -> Tensor:
    """The ``"mean"`` denominator with ``per_image=True``: the (image, class) pairs with a counted
    position, times their image's sample weight. Class-index targets do not say how many classes
    there are: ``num_classes`` does. ``per_image=False`` has no such denominator."""
    if not module.per_image:
        raise ValueError(
            "per_image=False sums the statistics over the whole batch before the loss, so its mean "
            "cannot be split across micro-batches or ranks; use per_image=True, or one loss call per step"
        )
    n = target.shape[0]
    ignore_index = cast(int, module.ignore_index)  # typing: a module attribute reads as Tensor | Module
    if module.mode == "multilabel":
        valid = target != ignore_index  # (N, C, ...)
        counted = valid.flatten(2).any(-1) if valid.dim() > 2 else valid
    elif target.is_floating_point():  # class probabilities (N, C, ...): every pair counts
        positions = 1
        for size in target.shape[2:]:
            positions *= size
        counted = torch.full((n, target.shape[1]), positions > 0, dtype=torch.bool, device=target.device)
    else:
        if num_classes is None:
            raise ValueError(
                f"{type(module).__name__} with class-index targets needs num_classes (the classes of the "
                "input, which the target does not show) for its mean's denominator"
            )
        valid = target != ignore_index  # (N, ...)
        image = valid.flatten(1).any(-1) if valid.dim() > 1 else valid
        counted = image.unsqueeze(1).expand(n, num_classes)
    if not module.include_background:
        counted = counted[:, 1:]
    return mean_denominator(counted, sample_weight, counted, dtype=DENOMINATOR_DTYPE)


def _index_example(n: int, g: torch.Generator) -> Tuple[Tensor, ...]:
    return torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 3, (n, 4, 4), generator=g)


def _mask_example(n: int, g: torch.Generator) -> Tuple[Tensor, ...]:
    return torch.randn(n, 3, 4, 4, generator=g), (torch.rand(n, 3, 4, 4, generator=g) > 0.5).float()


# Modules


@declare(name="dice", function=dice_loss, denominator=pair_denominator, example=_index_example)
class DiceLoss(_Loss):
    """Soft Dice loss on segmentation logits.

    The functional twin, with the formula, is [dice_loss][exportable_loss.functional.dice_loss].

    Args:
        mode: ``"multiclass"`` (softmax over dim 1) or ``"multilabel"`` (sigmoid per channel).
        per_image: ``True``: statistics per image and class; ``False``: summed over the batch.
        smooth_nr: added to the numerator (non-negative).
        smooth_dr: added to the denominator (non-negative).
        ignore_index: target value whose positions do not count.
        include_background: ``False`` drops class 0 (``mode="multiclass"`` only).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions] (``"per_sample"`` needs ``per_image=True``).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (this loss has no fused kernel).

    Examples:
        >>> loss = DiceLoss(mode="multilabel", reduction="per_sample")
        >>> loss(torch.tensor([[[4.0, -4.0, 0.0]]]), torch.tensor([[[1.0, 0.0, -100.0]]]))
        tensor([0.0180])
    """

    __constants__ = _Loss.__constants__ + [
        "mode",
        "per_image",
        "smooth_nr",
        "smooth_dr",
        "ignore_index",
        "include_background",
    ]

    def __init__(
        self,
        mode: str = "multiclass",
        per_image: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        ignore_index: int = -100,
        include_background: bool = True,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend)
        _check_options(0.5, 0.5, 1.0, mode, per_image, smooth_nr, smooth_dr, include_background, reduction)
        self.mode = mode
        self.per_image = bool(per_image)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.ignore_index = int(ignore_index)
        self.include_background = bool(include_background)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the segmentation logits ``input`` against ``target``.

        Args:
            input: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``.
            target: ``mode="multiclass"``: class indices ``(N, d1, ..., dk)`` or class
                probabilities of ``input``'s shape; ``mode="multilabel"``: a mask or
                probabilities of ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per image.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        return dice_loss(
            input,
            target,
            self.mode,
            self.per_image,
            self.smooth_nr,
            self.smooth_dr,
            self.ignore_index,
            self.include_background,
            self.reduction,
            sample_weight,
            normalizer,
            self.backend,
        )


@declare(
    name="focal_tversky",
    function=tversky_loss,
    denominator=pair_denominator,
    example=_mask_example,
    example_options=(("alpha", 0.3), ("beta", 0.7), ("gamma", 0.75), ("mode", "multilabel")),
)
class TverskyLoss(_Loss):
    """Tversky and focal Tversky loss on segmentation logits.

    The functional twin, with the formula, is [tversky_loss][exportable_loss.functional.tversky_loss].

    Args:
        alpha: weight of the false positives (non-negative).
        beta: weight of the false negatives (non-negative).
        gamma: the exponent of the focal Tversky loss (positive; 1 gives the Tversky loss).
        mode: ``"multiclass"`` (softmax over dim 1) or ``"multilabel"`` (sigmoid per channel).
        per_image: ``True``: statistics per image and class; ``False``: summed over the batch.
        smooth_nr: added to the numerator (non-negative).
        smooth_dr: added to the denominator (non-negative).
        ignore_index: target value whose positions do not count.
        include_background: ``False`` drops class 0 (``mode="multiclass"`` only).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; see
            [Reductions][reductions] (``"per_sample"`` needs ``per_image=True``).
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (this loss has no fused kernel).

    Examples:
        >>> loss = TverskyLoss(alpha=0.3, beta=0.7, gamma=0.75, include_background=False)
        >>> loss(torch.tensor([[[2.0, -1.0], [-1.0, 1.0], [0.0, 0.0]]]), torch.tensor([[1, 2]]))
        tensor(0.8640)
    """

    __constants__ = _Loss.__constants__ + [
        "alpha",
        "beta",
        "gamma",
        "mode",
        "per_image",
        "smooth_nr",
        "smooth_dr",
        "ignore_index",
        "include_background",
    ]

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        mode: str = "multiclass",
        per_image: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        ignore_index: int = -100,
        include_background: bool = True,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend)
        _check_options(alpha, beta, gamma, mode, per_image, smooth_nr, smooth_dr, include_background, reduction)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.mode = mode
        self.per_image = bool(per_image)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.ignore_index = int(ignore_index)
        self.include_background = bool(include_background)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the segmentation logits ``input`` against ``target``.

        Args:
            input: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``.
            target: ``mode="multiclass"``: class indices ``(N, d1, ..., dk)`` or class
                probabilities of ``input``'s shape; ``mode="multilabel"``: a mask or
                probabilities of ``input``'s shape.
            sample_weight: optional ``(N,)`` weights, one per image.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype, shaped by ``reduction``.
        """
        return tversky_loss(
            input,
            target,
            self.alpha,
            self.beta,
            self.gamma,
            self.mode,
            self.per_image,
            self.smooth_nr,
            self.smooth_dr,
            self.ignore_index,
            self.include_background,
            self.reduction,
            sample_weight,
            normalizer,
            self.backend,
        )
