"""Test cases for Dice and Tversky: picked up by every generic test through ``cases.CASES``.

Each case has ``per_image=True``, so the element-wise loss is ``(N, K)`` with the batch on dim 0
as the generic harness expects. ``per_image=False`` (statistics summed over the batch, sample
weights inside the statistics) does not fit the harness and is tested in ``test_segmentation``.
"""

from typing import List, Optional

import torch
from cases import Case
from torch import Tensor

import exportable_loss as el


def segmentation_ref(
    mode: str = "multiclass",
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    ignore_index: int = -100,
    include_background: bool = True,
    dice: bool = False,
    per_image: bool = True,
    sample_weight: Optional[Tensor] = None,
):
    """float64 Tversky / Dice from the formula, one (image, class) at a time; independent of our code.

    Returns ``(l, valid, None)``: ``l`` is ``(N, K)`` (``(K,)`` with ``per_image=False``) and
    ``valid`` marks the pairs with at least one counted position.
    """

    def stats(x: Tensor, t: Tensor, n: int, c: int):
        num_classes = x.shape[1]
        logits = x[n].reshape(num_classes, -1)  # (C, positions)
        if mode == "multiclass":
            p = torch.softmax(logits, 0)[c]
            if t.is_floating_point():
                return p, t[n].double().reshape(num_classes, -1)[c]
            tn = t[n].reshape(-1).long()
            keep = tn != ignore_index
            return p[keep], (tn[keep] == c).double()
        tn = t[n].reshape(num_classes, -1)[c].double()
        keep = tn != ignore_index
        return torch.sigmoid(logits[c])[keep], tn[keep]

    def loss_of(tp: Tensor, fp: Tensor, fn: Tensor, count: float) -> Tensor:
        if count == 0:
            return torch.zeros((), dtype=torch.float64)
        if dice:
            score = (2 * tp + smooth_nr) / (2 * tp + fp + fn + smooth_dr)
        else:
            score = (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)
        return torch.clamp(1 - score, min=0) ** gamma

    def ref(x: Tensor, t: Tensor):
        x = x.double()
        num_images, num_classes = x.shape[:2]
        classes = range(0 if include_background else 1, num_classes)
        if per_image:
            rows: List[Tensor] = []
            valid: List[List[bool]] = []
            for n in range(num_images):
                row, vrow = [], []
                for c in classes:
                    p, tt = stats(x, t, n, c)
                    tp, fp, fn = (p * tt).sum(), (p * (1 - tt)).sum(), ((1 - p) * tt).sum()
                    row.append(loss_of(tp, fp, fn, p.numel()))
                    vrow.append(p.numel() > 0)
                rows.append(torch.stack(row))
                valid.append(vrow)
            if num_images == 0:
                return (
                    torch.zeros(0, len(classes), dtype=torch.float64),
                    torch.zeros(0, len(classes), dtype=torch.bool),
                    None,
                )
            return torch.stack(rows), torch.tensor(valid), None
        s = torch.ones(num_images, dtype=torch.float64) if sample_weight is None else sample_weight.double()
        out, valid_k = [], []
        for c in classes:
            tp = fp = fn = torch.zeros((), dtype=torch.float64)
            count = 0.0
            for n in range(num_images):
                if s[n] == 0:
                    continue
                p, tt = stats(x, t, n, c)
                tp = tp + s[n] * (p * tt).sum()
                fp = fp + s[n] * (p * (1 - tt)).sum()
                fn = fn + s[n] * ((1 - p) * tt).sum()
                count += p.numel()
            out.append(loss_of(tp, fp, fn, count))
            valid_k.append(count > 0)
        return torch.stack(out), torch.tensor(valid_k), None

    return ref


def index_target(n: int, g: torch.Generator, classes: int, *spatial: int, ignore: int = -100, every: int = 5):
    """Class indices with every ``every``-th position ignored and image 0 ignored entirely."""
    t = torch.randint(0, classes, (n, *spatial), generator=g)
    t.view(-1)[::every] = ignore
    if n > 0:
        t[0] = ignore
    return t


def _multilabel_target(n: int, g: torch.Generator) -> Tensor:
    t = torch.rand(n, 3, 2, 3, generator=g)
    t[t < 0.3] = 0.0  # some hard zeros and ones among the soft labels
    t[t > 0.8] = 1.0
    t.view(-1)[::7] = -1.0  # ignore_index=-1
    return t


def _uint8_target(n: int, g: torch.Generator) -> Tensor:
    return index_target(n, g, 4, 2, 3, ignore=255, every=4).to(torch.uint8)


CASES: List[Case] = [
    Case(
        "dice_multiclass_ignore",
        lambda r, **kw: el.DiceLoss(reduction=r, **kw),
        lambda n, g: (torch.randn(n, 4, 3, 2, generator=g) * 2, index_target(n, g, 4, 3, 2)),
        segmentation_ref(dice=True),
    ),
    Case(
        "dice_multiclass_probs",
        lambda r, **kw: el.DiceLoss(reduction=r, smooth_nr=0.5, smooth_dr=0.5, **kw),
        lambda n, g: (
            torch.randn(n, 3, 4, generator=g) * 2,
            torch.softmax(torch.randn(n, 3, 4, generator=g) * 2, 1),
        ),
        segmentation_ref(dice=True, smooth_nr=0.5, smooth_dr=0.5),
        grad_args=(0, 1),
    ),
    Case(
        "dice_flat",
        lambda r, **kw: el.DiceLoss(reduction=r, **kw),
        lambda n, g: (torch.randn(n, 5, generator=g) * 2, index_target(n, g, 5, every=4)),
        segmentation_ref(dice=True),
    ),
    Case(
        "dice_multilabel",
        lambda r, **kw: el.DiceLoss(mode="multilabel", ignore_index=-1, reduction=r, **kw),
        lambda n, g: (torch.randn(n, 3, 2, 3, generator=g) * 2, _multilabel_target(n, g)),
        # no target gradient: an ignored entry nudged off ignore_index counts (gradcheck would see it)
        segmentation_ref(mode="multilabel", ignore_index=-1, dice=True),
    ),
    Case(
        "dice_no_background_uint8",
        lambda r, **kw: el.DiceLoss(include_background=False, ignore_index=255, reduction=r, **kw),
        lambda n, g: (torch.randn(n, 4, 2, 3, generator=g) * 2, _uint8_target(n, g)),
        segmentation_ref(dice=True, ignore_index=255, include_background=False),
    ),
    Case(
        "tversky_focal",
        lambda r, **kw: el.TverskyLoss(
            alpha=0.3, beta=0.7, gamma=0.75, smooth_nr=0.0, smooth_dr=1e-4, reduction=r, **kw
        ),
        lambda n, g: (torch.randn(n, 4, 5, generator=g) * 2, index_target(n, g, 4, 5)),
        segmentation_ref(alpha=0.3, beta=0.7, gamma=0.75, smooth_nr=0.0, smooth_dr=1e-4),
    ),
    Case(
        "tversky_no_background",
        lambda r, **kw: el.TverskyLoss(alpha=0.7, beta=0.3, include_background=False, reduction=r, **kw),
        lambda n, g: (torch.randn(n, 3, 4, 2, generator=g) * 2, index_target(n, g, 3, 4, 2, every=3)),
        segmentation_ref(alpha=0.7, beta=0.3, include_background=False),
    ),
    Case(
        "tversky_binary_focal",
        lambda r, **kw: el.TverskyLoss(mode="multilabel", alpha=0.2, beta=0.8, gamma=1.5, reduction=r, **kw),
        lambda n, g: (torch.randn(n, 1, 4, 3, generator=g) * 2, (torch.rand(n, 1, 4, 3, generator=g) > 0.6).float()),
        segmentation_ref(mode="multilabel", alpha=0.2, beta=0.8, gamma=1.5),
        grad_args=(0, 1),
    ),
]
