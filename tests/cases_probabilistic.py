"""Test cases for Poisson / Gaussian NLL, margin ranking, triplet margin, cosine embedding: picked up by every generic test through ``cases.CASES``.

Each case's twin is the torch.nn module and its element-wise reference torch.nn's float64
``reduction="none"`` result. The margin-based cases mix active and inactive hinge terms.
"""

from typing import List

import torch
import torch.nn.functional as F
from cases import Case
from torch import Tensor, nn

import exportable_loss as el


def _signs(n: int, g: torch.Generator, *shape: int) -> Tensor:
    return torch.randint(0, 2, (n, *shape), generator=g).float() * 2 - 1


def _poisson_inputs(n: int, g: torch.Generator):
    log_rate = torch.randn(n, 3, 2, generator=g)
    return log_rate, torch.poisson(torch.exp(log_rate) * 2, generator=g)


def _poisson_rate_inputs(n: int, g: torch.Generator):
    rate = torch.rand(n, 4, generator=g) * 4 + 0.05
    # counts above 1 (Stirling term added) and below (not added), but not 1, where the loss
    # jumps (gradcheck), nor 0, where torch.nn's target gradient is NaN (test_probabilistic.py
    # covers both)
    counts = torch.poisson(rate, generator=g)
    return rate, torch.where(counts <= 1, 0.5, counts)


def _gaussian_inputs(*var_shape: int, scale: float = 1.0):
    def make(n: int, g: torch.Generator):
        mean = torch.randn(n, 3, 2, generator=g) if len(var_shape) == 2 else torch.randn(n, 3, generator=g)
        target = mean.detach() + torch.randn(mean.shape, generator=g) * scale
        # above eps: below it the clamp makes the loss flat in var while torch.nn's gradient
        # passes straight through, which gradcheck rejects (test_probabilistic.py covers it)
        var = torch.rand(n, *var_shape, generator=g) * 1.5 + 0.2
        return mean, target, var

    return make


def _ranking_inputs(*shape: int):
    def make(n: int, g: torch.Generator):
        return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g), _signs(n, g, *shape)

    return make


def _triplet_inputs(*shape: int):
    def make(n: int, g: torch.Generator):
        anchor = torch.randn(n, *shape, generator=g)
        positive = anchor + torch.randn(n, *shape, generator=g) * 0.5
        # near and far negatives: some triplets violate the margin, others do not
        spread = torch.where(torch.rand(n, *shape[:-1], 1, generator=g) < 0.5, 0.3, 3.0)
        negative = anchor + torch.randn(n, *shape, generator=g) * spread
        return anchor, positive, negative

    return make


def _cosine_inputs(n: int, g: torch.Generator):
    x1 = torch.randn(n, 4, generator=g)
    x2 = x1 * (torch.rand(n, 1, generator=g) * 2 - 1) + torch.randn(n, 4, generator=g) * 0.5
    return x1, x2, _signs(n, g)


def _nn_elementwise(fn):
    """torch.nn's float64 reduction='none' result (the data arrive as float64 in test_spec_reductions)."""

    def ref(*data: Tensor):
        return fn(*[a.double() if a.is_floating_point() else a for a in data]), None, None

    return ref


CASES: List[Case] = [
    Case(
        "poisson_nll",
        lambda r, **kw: el.PoissonNLLLoss(reduction=r, **kw),
        _poisson_inputs,
        _nn_elementwise(lambda x, t: F.poisson_nll_loss(x, t, reduction="none")),
        twin=lambda r: nn.PoissonNLLLoss(reduction=r),
        grad_args=(0, 1),
    ),
    Case(
        "poisson_nll_rate_full",
        lambda r, **kw: el.PoissonNLLLoss(log_input=False, full=True, eps=1e-4, reduction=r, **kw),
        _poisson_rate_inputs,
        _nn_elementwise(lambda x, t: F.poisson_nll_loss(x, t, log_input=False, full=True, eps=1e-4, reduction="none")),
        twin=lambda r: nn.PoissonNLLLoss(log_input=False, full=True, eps=1e-4, reduction=r),
        grad_args=(0, 1),
    ),
    Case(
        "gaussian_nll",
        lambda r, **kw: el.GaussianNLLLoss(reduction=r, **kw),
        _gaussian_inputs(3),
        _nn_elementwise(lambda x, t, v: F.gaussian_nll_loss(x, t, v, reduction="none")),
        twin=lambda r: nn.GaussianNLLLoss(reduction=r),
        grad_args=(0, 1, 2),
    ),
    Case(
        "gaussian_nll_homoscedastic_full",
        lambda r, **kw: el.GaussianNLLLoss(full=True, eps=0.1, reduction=r, **kw),
        _gaussian_inputs(),
        _nn_elementwise(lambda x, t, v: F.gaussian_nll_loss(x, t, v, full=True, eps=0.1, reduction="none")),
        twin=lambda r: nn.GaussianNLLLoss(full=True, eps=0.1, reduction=r),
        grad_args=(0, 1, 2),
    ),
    Case(
        "gaussian_nll_size1_dim",
        lambda r, **kw: el.GaussianNLLLoss(eps=0.1, reduction=r, **kw),
        _gaussian_inputs(1, 2, scale=2.0),
        _nn_elementwise(lambda x, t, v: F.gaussian_nll_loss(x, t, v, eps=0.1, reduction="none")),
        twin=lambda r: nn.GaussianNLLLoss(eps=0.1, reduction=r),
        grad_args=(0, 1, 2),
    ),
    Case(
        "margin_ranking",
        lambda r, **kw: el.MarginRankingLoss(margin=0.3, reduction=r, **kw),
        _ranking_inputs(),
        _nn_elementwise(lambda a, b, y: F.margin_ranking_loss(a, b, y, margin=0.3, reduction="none")),
        twin=lambda r: nn.MarginRankingLoss(margin=0.3, reduction=r),
        grad_args=(0, 1, 2),
    ),
    Case(
        "margin_ranking_2d",
        lambda r, **kw: el.MarginRankingLoss(reduction=r, **kw),
        _ranking_inputs(3),
        _nn_elementwise(lambda a, b, y: F.margin_ranking_loss(a, b, y, reduction="none")),
        twin=lambda r: nn.MarginRankingLoss(reduction=r),
        grad_args=(0, 1, 2),
    ),
    Case(
        "triplet_margin",
        lambda r, **kw: el.TripletMarginLoss(reduction=r, **kw),
        _triplet_inputs(4),
        _nn_elementwise(lambda a, p, n: F.triplet_margin_loss(a, p, n, reduction="none")),
        twin=lambda r: nn.TripletMarginLoss(reduction=r),
        grad_args=(0, 1, 2),
    ),
    Case(
        "triplet_margin_p1_swap_3d",
        lambda r, **kw: el.TripletMarginLoss(margin=0.5, p=1.0, eps=1e-3, swap=True, reduction=r, **kw),
        _triplet_inputs(3, 4),
        _nn_elementwise(
            lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=0.5, p=1.0, eps=1e-3, swap=True, reduction="none")
        ),
        twin=lambda r: nn.TripletMarginLoss(margin=0.5, p=1.0, eps=1e-3, swap=True, reduction=r),
        grad_args=(0, 1, 2),
    ),
    Case(
        "cosine_embedding",
        lambda r, **kw: el.CosineEmbeddingLoss(margin=0.2, reduction=r, **kw),
        _cosine_inputs,
        _nn_elementwise(lambda a, b, y: F.cosine_embedding_loss(a, b, y, margin=0.2, reduction="none")),
        twin=lambda r: nn.CosineEmbeddingLoss(margin=0.2, reduction=r),
        grad_args=(0, 1),
    ),
]
