"""GIoU, DIoU and CIoU losses on (x1, y1, x2, y2) boxes.

The numbers are ``torchvision.ops``' for valid boxes (``x1 <= x2``, ``y1 <= y2``), with the same
``eps`` placement. Unlike torchvision's, every denominator stays at least ``eps``, so any finite
boxes (zero width or height, points, ``x2 < x1``) give a finite, bounded loss and finite gradients.

Degenerate boxes, in all three losses: a box of zero area overlaps nothing (IoU 0), so two
identical points give 1. An inverted box (``x2 < x1`` or ``y2 < y1``) is outside torchvision's
domain: it overlaps nothing (IoU 0), its signed area enters the union as in torchvision, and
the enclosing box spans its corners (torchvision's can have a negative size there).
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from exportable_loss import _checks
from exportable_loss._base import _Loss
from exportable_loss._numerics import accumulation_dtype, autocast_float32
from exportable_loss._reduction import (
    REDUCTIONS,
    counted_gradient,
    every_row,
    guard_counted_gradient,
    reduce_loss,
    sample_counts,
)
from exportable_loss._registry import declare


def _prepare_boxes(
    input: Tensor,
    target: Tensor,
    eps: float,
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
) -> Tuple[Tensor, Tensor]:
    """Eager checks (metadata only) shared by the three losses."""
    _checks.check_floating("input", input)
    if input.dim() == 0 or input.shape[-1] != 4:
        raise ValueError(
            f"input must hold (x1, y1, x2, y2) boxes along its last dimension, shape (4,), (N, 4) or "
            f"(N, ..., 4); got shape {tuple(input.shape)}"
        )
    if target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must hold floating-point or integer box coordinates; got dtype {target.dtype}")
    _checks.check_device("target", target, input)
    _checks.check_same_shapes(["input", "target"], [input, target])
    if eps < 0.0:
        raise ValueError(f"eps must be non-negative; got {eps}")
    _checks.check_reduction_args(reduction, input, input.dim() > 1, sample_weight, normalizer, REDUCTIONS)
    input, target = autocast_float32([input, target])
    return input, target


def _coordinates(
    input: Tensor, target: Tensor, sample_weight: Optional[Tensor]
) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
    """The coordinates of both boxes, and the tensors to hand ``_reduce`` (boxes of weight 0 get
    exactly 0 gradient, even where they hold NaN or Inf)."""
    counts = sample_counts(sample_weight, input)
    counted = [counted_gradient(input, counts), counted_gradient(target, counts)]
    # Half types compute in float32 (as torchvision upcasts them): eps = 1e-7 is below their
    # resolution. Integer targets are converted as torchvision upcasts integer boxes.
    dtype = accumulation_dtype(input.dtype)
    return list(counted[0].to(dtype).unbind(-1)), list(counted[1].to(dtype).unbind(-1)), counted


def _reduce(
    loss: Tensor,
    counted: List[Tensor],
    reduction: str,
    sample_weight: Optional[Tensor],
    normalizer: Optional[Tensor],
    dtype: torch.dtype,
) -> Tensor:
    """The reduction of the box terms, in ``dtype``."""
    if not torch.jit.is_scripting():
        counts = sample_counts(sample_weight, counted[0])
        if counts is not None:
            guard_counted_gradient(counted, counts, loss.unsqueeze(-1))
    return reduce_loss(loss, reduction, sample_weight, normalizer).to(dtype)


def _iou_and_union(p: List[Tensor], g: List[Tensor], eps: float) -> Tuple[Tensor, Tensor]:
    """IoU ``inter / (union + eps)`` and the union, per box pair."""
    iw = torch.minimum(p[2], g[2]) - torch.maximum(p[0], g[0])
    ih = torch.minimum(p[3], g[3]) - torch.maximum(p[1], g[1])
    overlap = (iw > 0) & (ih > 0)
    inter = torch.where(overlap, iw * ih, torch.zeros_like(iw))
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    # Without overlap the IoU is 0 whatever the union; dividing by 1 there keeps an inverted box
    # (negative area, so union + eps may be 0) finite, values and gradients.
    iou = inter / torch.where(overlap, union + eps, torch.ones_like(union))
    return iou, union


def _enclosing_extent(p: List[Tensor], g: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing both boxes' corners.

    For valid boxes this is torchvision's ``max(x2, x2g) - min(x1, x1g)`` (values and gradients:
    ``where`` picks ``x1`` at a tie); spanning the corners of an inverted box too keeps the
    extent non-negative, so the GIoU and DIoU penalties stay bounded for any box.
    """
    inverted_x = p[2] < p[0]
    inverted_y = p[3] < p[1]
    inverted_xg = g[2] < g[0]
    inverted_yg = g[3] < g[1]
    left = torch.minimum(torch.where(inverted_x, p[2], p[0]), torch.where(inverted_xg, g[2], g[0]))
    right = torch.maximum(torch.where(inverted_x, p[0], p[2]), torch.where(inverted_xg, g[0], g[2]))
    bottom = torch.minimum(torch.where(inverted_y, p[3], p[1]), torch.where(inverted_yg, g[3], g[1]))
    top = torch.maximum(torch.where(inverted_y, p[1], p[3]), torch.where(inverted_yg, g[1], g[3]))
    return right - left, top - bottom


def _diou_terms(p: List[Tensor], g: List[Tensor], eps: float) -> Tuple[Tensor, Tensor]:
    """DIoU loss ``1 - iou + center_distance**2 / (diagonal**2 + eps)`` and the IoU."""
    iou, _ = _iou_and_union(p, g, eps)
    cw, ch = _enclosing_extent(p, g)
    diagonal = cw * cw + ch * ch + eps
    dx = (p[0] + p[2]) / 2 - (g[0] + g[2]) / 2
    dy = (p[1] + p[3]) / 2 - (g[1] + g[3]) / 2
    return 1.0 - iou + (dx * dx + dy * dy) / diagonal, iou


def _aspect_angle(w: Tensor, h: Tensor) -> Tensor:
    """``atan(w / h)`` as torchvision computes it, finite with finite gradients everywhere.

    Written as ``atan2`` with a non-negative second argument (``atan(w/h) = atan2(-w, -h)`` for
    ``h < 0``): equal to ``atan(w / h)`` for every ``h != 0``, ``+-pi/2`` for ``h = 0`` (its limit,
    where torchvision's gradient is NaN), and 0 with zero gradients for a point (``w = h = 0``,
    where torchvision's value is NaN).
    """
    flip = h < 0
    point = (w == 0) & (h == 0)
    num = torch.where(flip, -w, w)
    den = torch.where(flip, -h, h)
    num = torch.where(point, torch.zeros_like(num), num)
    den = torch.where(point, torch.ones_like(den), den)
    return torch.atan2(num, den)


def generalized_box_iou_loss(
    input: Tensor,
    target: Tensor,
    eps: float = 1e-7,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Generalized IoU loss (Rezatofighi et al., 2019), as ``torchvision.ops.generalized_box_iou_loss``.

    ``1 - (iou - (area_c - union) / (area_c + eps))`` with ``iou = inter / (union + eps)`` and
    ``area_c`` the area of the smallest box enclosing both. For valid boxes it lies in
    ``[0, 2)``: near 0 for identical boxes, above 1 for disjoint ones, growing with their gap.

    Boxes are ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``; for such boxes the numbers
    are torchvision's. Degenerate boxes give a finite loss and finite gradients (torchvision's
    can be NaN or Inf): a box of zero area overlaps nothing (IoU 0), so two identical points
    give 1; an inverted box (``x2 < x1`` or ``y2 < y1``, outside torchvision's domain) overlaps
    nothing, keeps its signed area in the union as torchvision does, and the enclosing box spans
    its corners, so the loss stays bounded. Where the enclosing box has zero area (two segments
    on one line) gradients are of order ``1 / eps``, as in torchvision: too large for float16.

    Args:
        input: predicted boxes (torchvision's ``boxes1``), shape ``(4,)``, ``(N, 4)`` or
            ``(N, d1, ..., dk, 4)``; floating point (half types compute in float32).
        target: ground-truth boxes (torchvision's ``boxes2``), ``input``'s shape; floating
            point or integer (converted to ``input``'s dtype, as torchvision upcasts integer
            boxes). Gradients flow into both.
        eps: added to the union and the enclosing area, as torchvision; must be non-negative
            (0 gives NaN for empty boxes, as torchvision).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``, over the element-wise
            loss of shape ``input.shape[:-1]`` (``"per_sample"`` averages over ``d1, ..., dk``);
            see [Reductions][reductions]. The default is ``"mean"`` (torchvision's is ``"none"``).
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: shape ``input.shape[:-1]`` for ``"none"``, ``(N,)`` for
        ``"per_sample"``, else 0-dim.

    Examples:
        >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
        >>> targets = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
        >>> generalized_box_iou_loss(boxes, targets, reduction="none")
        tensor([1.0794, 1.3333])
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        input, target = _prepare_boxes(input, target, eps, reduction, sample_weight, normalizer)
    p, g, counted = _coordinates(input, target, sample_weight)
    iou, union = _iou_and_union(p, g, eps)
    cw, ch = _enclosing_extent(p, g)
    area_c = cw * ch
    giou = iou - (area_c - union) / (area_c + eps)
    loss = 1.0 - giou
    return _reduce(loss, counted, reduction, sample_weight, normalizer, input.dtype)


def distance_box_iou_loss(
    input: Tensor,
    target: Tensor,
    eps: float = 1e-7,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Distance IoU loss (Zheng et al., 2020), as ``torchvision.ops.distance_box_iou_loss``.

    ``1 - iou + d**2 / (c**2 + eps)`` with ``iou = inter / (union + eps)``, ``d`` the distance
    between the boxes' centres and ``c`` the diagonal of the smallest box enclosing both. For
    valid boxes it lies in ``[0, 2)``: near 0 for identical boxes.

    Boxes are ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``; for such boxes the numbers
    are torchvision's. Degenerate boxes give a finite loss and finite gradients (torchvision's
    can be NaN): a box of zero area overlaps nothing (IoU 0), so two identical points give 1;
    an inverted box (``x2 < x1`` or ``y2 < y1``, outside torchvision's domain) overlaps nothing
    and the enclosing box spans its corners, so the distance term stays at most 1.

    Args:
        input: predicted boxes (torchvision's ``boxes1``), shape ``(4,)``, ``(N, 4)`` or
            ``(N, d1, ..., dk, 4)``; floating point (half types compute in float32).
        target: ground-truth boxes (torchvision's ``boxes2``), ``input``'s shape; floating
            point or integer (converted to ``input``'s dtype, as torchvision upcasts integer
            boxes). Gradients flow into both.
        eps: added to the union and the squared diagonal, as torchvision; non-negative.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``, over the element-wise
            loss of shape ``input.shape[:-1]`` (``"per_sample"`` averages over ``d1, ..., dk``);
            see [Reductions][reductions]. The default is ``"mean"`` (torchvision's is ``"none"``).
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: shape ``input.shape[:-1]`` for ``"none"``, ``(N,)`` for
        ``"per_sample"``, else 0-dim.

    Examples:
        >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
        >>> targets = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
        >>> distance_box_iou_loss(boxes, targets, reduction="none")
        tensor([0.9683, 1.4000])
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        input, target = _prepare_boxes(input, target, eps, reduction, sample_weight, normalizer)
    p, g, counted = _coordinates(input, target, sample_weight)
    loss, _ = _diou_terms(p, g, eps)
    return _reduce(loss, counted, reduction, sample_weight, normalizer, input.dtype)


def complete_box_iou_loss(
    input: Tensor,
    target: Tensor,
    eps: float = 1e-7,
    reduction: str = "mean",
    sample_weight: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    backend: str = "torch",
) -> Tensor:
    """Complete IoU loss (Zheng et al., 2020), as ``torchvision.ops.complete_box_iou_loss``.

    The DIoU loss plus ``alpha * v``, with ``v = 4 / pi**2 * (atan(w_t / h_t) - atan(w / h))**2``
    the aspect-ratio mismatch and ``alpha = v / (1 - iou + v + eps)`` a constant (no gradient
    flows through it, as in torchvision).

    Boxes are ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``; for such boxes the numbers
    are torchvision's with the same ``eps`` (torchvision applies its ``eps`` only to ``alpha``
    and uses 1e-7 in the IoU and diagonal; here ``eps`` is used everywhere, so the default
    agrees). Degenerate boxes give a finite loss and finite gradients: a zero-height box has
    the aspect angle ``pi/2`` (the limit, where torchvision's gradient is NaN); a point box
    (zero width and height) has angle 0 and no aspect gradient (torchvision's loss is NaN),
    so two identical points give 1; zero-area boxes have IoU 0; an inverted box overlaps
    nothing, the enclosing box spans its corners, and its aspect angle is ``atan(w / h)``.

    Args:
        input: predicted boxes (torchvision's ``boxes1``), shape ``(4,)``, ``(N, 4)`` or
            ``(N, d1, ..., dk, 4)``; floating point (half types compute in float32).
        target: ground-truth boxes (torchvision's ``boxes2``), ``input``'s shape; floating
            point or integer (converted to ``input``'s dtype, as torchvision upcasts integer
            boxes). Gradients flow into both.
        eps: added to the union, the squared diagonal and ``alpha``'s denominator; non-negative.
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``, over the element-wise
            loss of shape ``input.shape[:-1]`` (``"per_sample"`` averages over ``d1, ..., dk``);
            see [Reductions][reductions]. The default is ``"mean"`` (torchvision's is ``"none"``).
        sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
        normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no gradient
            flows into it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs this PyTorch code (the
            loss has no fused kernel).

    Returns:
        The loss in ``input``'s dtype: shape ``input.shape[:-1]`` for ``"none"``, ``(N,)`` for
        ``"per_sample"``, else 0-dim.

    Examples:
        >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 1.0]])
        >>> targets = torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.0, 0.0, 2.0, 2.0]])
        >>> complete_box_iou_loss(boxes, targets, reduction="none")
        tensor([0.9683, 0.7629])
    """
    if not torch.jit.is_scripting():
        _checks.check_backend(backend)
        input, target = _prepare_boxes(input, target, eps, reduction, sample_weight, normalizer)
    p, g, counted = _coordinates(input, target, sample_weight)
    loss, iou = _diou_terms(p, g, eps)
    angle = _aspect_angle(p[2] - p[0], p[3] - p[1])
    angle_target = _aspect_angle(g[2] - g[0], g[3] - g[1])
    delta = angle_target - angle
    v = (4.0 / (math.pi * math.pi)) * (delta * delta)
    alpha = (v / (1.0 - iou + v + eps)).detach()
    loss = loss + alpha * v
    return _reduce(loss, counted, reduction, sample_weight, normalizer, input.dtype)


def _boxes(n: int, g: torch.Generator) -> Tensor:
    corner = torch.rand(n, 2, generator=g) * 4
    return torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 3 + 0.1], 1)


def _boxes_example(n: int, g: torch.Generator) -> Tuple[Tensor, ...]:
    return _boxes(n, g), _boxes(n, g)


# Modules


class _BoxLoss(_Loss):
    """The constructor the three box losses share: ``eps`` and the base options."""

    __constants__ = _Loss.__constants__ + ["eps"]

    def __init__(self, eps: float = 1e-7, reduction: str = "mean", backend: str = "torch") -> None:
        super().__init__(reduction, backend)
        if eps < 0.0:
            raise ValueError(f"eps must be non-negative; got {eps}")
        self.eps = float(eps)


@declare(name="giou", function=generalized_box_iou_loss, denominator=every_row, example=_boxes_example)
class GIoULoss(_BoxLoss):
    """Generalized IoU loss on ``(x1, y1, x2, y2)`` boxes, as torchvision's ``generalized_box_iou_loss``.

    The functional twin, with the formula and the handling of degenerate boxes, is
    [generalized_box_iou_loss][exportable_loss.functional.generalized_box_iou_loss].

    Args:
        eps: added to the denominators, as torchvision (non-negative).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` (the default; torchvision's is
            ``"none"``) or ``"sum"``, over one term per box; see [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> GIoULoss()(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
        tensor(1.0794)
    """

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the predicted boxes ``input`` against the boxes ``target``.

        Args:
            input: predicted boxes ``(4,)``, ``(N, 4)`` or ``(N, d1, ..., dk, 4)``.
            target: ground-truth boxes of ``input``'s shape (floating point or integer).
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype: ``input.shape[:-1]`` for ``"none"``, ``(N,)`` for
            ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.
        """
        return generalized_box_iou_loss(
            input, target, self.eps, self.reduction, sample_weight, normalizer, self.backend
        )


@declare(name="diou", function=distance_box_iou_loss, denominator=every_row, example=_boxes_example)
class DIoULoss(_BoxLoss):
    """Distance IoU loss on ``(x1, y1, x2, y2)`` boxes, as torchvision's ``distance_box_iou_loss``.

    The functional twin, with the formula and the handling of degenerate boxes, is
    [distance_box_iou_loss][exportable_loss.functional.distance_box_iou_loss].

    Args:
        eps: added to the denominators, as torchvision (non-negative).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` (the default; torchvision's is
            ``"none"``) or ``"sum"``, over one term per box; see [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> DIoULoss()(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
        tensor(0.9683)
    """

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the predicted boxes ``input`` against the boxes ``target``.

        Args:
            input: predicted boxes ``(4,)``, ``(N, 4)`` or ``(N, d1, ..., dk, 4)``.
            target: ground-truth boxes of ``input``'s shape (floating point or integer).
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype: ``input.shape[:-1]`` for ``"none"``, ``(N,)`` for
            ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.
        """
        return distance_box_iou_loss(input, target, self.eps, self.reduction, sample_weight, normalizer, self.backend)


@declare(name="ciou", function=complete_box_iou_loss, denominator=every_row, example=_boxes_example)
class CIoULoss(_BoxLoss):
    """Complete IoU loss on ``(x1, y1, x2, y2)`` boxes, as torchvision's ``complete_box_iou_loss``.

    The functional twin, with the formula and the handling of degenerate boxes, is
    [complete_box_iou_loss][exportable_loss.functional.complete_box_iou_loss].

    Args:
        eps: added to the denominators, as torchvision (non-negative).
        reduction: ``"none"``, ``"per_sample"``, ``"mean"`` (the default; torchvision's is
            ``"none"``) or ``"sum"``, over one term per box; see [Reductions][reductions].
        backend: ``"torch"``, ``"triton"`` or ``"auto"``; every backend runs the PyTorch
            formulation (there is no fused kernel).

    Examples:
        >>> CIoULoss()(torch.tensor([[0.0, 0.0, 2.0, 1.0]]), torch.tensor([[1.0, 0.0, 2.0, 2.0]]))
        tensor(0.7629)
    """

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        """The loss of the predicted boxes ``input`` against the boxes ``target``.

        Args:
            input: predicted boxes ``(4,)``, ``(N, 4)`` or ``(N, d1, ..., dk, 4)``.
            target: ground-truth boxes of ``input``'s shape (floating point or integer).
            sample_weight: optional ``(N,)`` weights, one per sample along dim 0.
            normalizer: optional 0-dim tensor replacing the denominator of ``"mean"``; no
                gradient flows into it.

        Returns:
            The loss in ``input``'s dtype: ``input.shape[:-1]`` for ``"none"``, ``(N,)`` for
            ``"per_sample"``, 0-dim for ``"mean"`` and ``"sum"``.
        """
        return complete_box_iou_loss(input, target, self.eps, self.reduction, sample_weight, normalizer, self.backend)
