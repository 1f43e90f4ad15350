"""Test cases for GIoU / DIoU / CIoU box losses: picked up by every generic test through ``cases.CASES``."""

import math
from typing import List

import torch
from cases import Case
from torch import Tensor

import exportable_loss as el


def _larger(a: Tensor, b: Tensor) -> Tensor:
    return torch.where(a > b, a, b)


def _smaller(a: Tensor, b: Tensor) -> Tensor:
    return torch.where(a < b, a, b)


def box_loss_ref(kind: str, eps: float = 1e-7):
    """float64 GIoU (Rezatofighi et al. 2019) / DIoU / CIoU (Zheng et al. 2020) losses from the
    papers' definitions, with torchvision's eps placement: IoU = I / (U + eps), GIoU penalty
    (C - U) / (C + eps), DIoU penalty rho^2 / (c^2 + eps), CIoU alpha = v / (1 - IoU + v + eps)
    held constant. For valid boxes (x1 < x2, y1 < y2) only; independent of our code."""

    def ref(pred: Tensor, gt: Tensor):
        a, b = pred.double(), gt.double()
        ax1, ay1, ax2, ay2 = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
        bx1, by1, bx2, by2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        aw, ah, bw, bh = ax2 - ax1, ay2 - ay1, bx2 - bx1, by2 - by1
        inter_w = (_smaller(ax2, bx2) - _larger(ax1, bx1)).clamp(min=0)
        inter_h = (_smaller(ay2, by2) - _larger(ay1, by1)).clamp(min=0)
        inter = inter_w * inter_h
        union = aw * ah + bw * bh - inter
        iou = inter / (union + eps)
        hull_w = _larger(ax2, bx2) - _smaller(ax1, bx1)
        hull_h = _larger(ay2, by2) - _smaller(ay1, by1)
        if kind == "giou":
            hull = hull_w * hull_h
            return 1 - (iou - (hull - union) / (hull + eps)), None, None
        rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
        diag2 = hull_w**2 + hull_h**2 + eps
        diou = 1 - iou + rho2 / diag2
        if kind == "diou":
            return diou, None, None
        v = 4 / math.pi**2 * (torch.atan(bw / bh) - torch.atan(aw / ah)) ** 2
        alpha = (v / (1 - iou + v + eps)).detach()
        return diou + alpha * v, None, None

    return ref


def random_boxes(n: int, g: torch.Generator, *rest: int) -> Tensor:
    """Valid boxes: a corner plus a positive width and height."""
    corner = torch.rand(n, *rest, 2, generator=g) * 4
    size = torch.rand(n, *rest, 2, generator=g) * 3 + 0.25
    return torch.cat([corner, corner + size], -1)


def box_pair(n: int, g: torch.Generator, *rest: int):
    """(predicted, ground truth): predictions near their target, most overlapping, some disjoint,
    with other aspect ratios."""
    gt = random_boxes(n, g, *rest)
    centre = (gt[..., :2] + gt[..., 2:]) / 2 + torch.randn(n, *rest, 2, generator=g) * 0.7
    size = (gt[..., 2:] - gt[..., :2]) * torch.exp(torch.randn(n, *rest, 2, generator=g) * 0.5)
    pred = torch.cat([centre - size / 2, centre + size / 2], -1)
    return pred, gt


CASES: List[Case] = [
    Case(
        "giou",
        lambda r, **kw: el.GIoULoss(reduction=r, **kw),
        lambda n, g: box_pair(n, g),
        box_loss_ref("giou"),
        grad_args=(0, 1),
    ),
    Case(
        "giou_extra_dims_eps",
        lambda r, **kw: el.GIoULoss(eps=1e-4, reduction=r, **kw),
        lambda n, g: box_pair(n, g, 3),
        box_loss_ref("giou", eps=1e-4),
        grad_args=(0, 1),
    ),
    Case(
        "diou",
        lambda r, **kw: el.DIoULoss(reduction=r, **kw),
        lambda n, g: box_pair(n, g),
        box_loss_ref("diou"),
        grad_args=(0, 1),
    ),
    Case(
        "diou_extra_dims",
        lambda r, **kw: el.DIoULoss(reduction=r, **kw),
        lambda n, g: box_pair(n, g, 2, 3),
        box_loss_ref("diou"),
        grad_args=(0, 1),
    ),
    Case(
        "ciou",
        lambda r, **kw: el.CIoULoss(reduction=r, **kw),
        lambda n, g: box_pair(n, g),
        box_loss_ref("ciou"),
        grad_args=(0, 1),
    ),
    Case(
        "ciou_extra_dims_eps",
        lambda r, **kw: el.CIoULoss(eps=1e-4, reduction=r, **kw),
        lambda n, g: box_pair(n, g, 3),
        box_loss_ref("ciou", eps=1e-4),
        grad_args=(0, 1),
    ),
]
