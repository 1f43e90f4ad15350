"""Test cases for JSD and knowledge distillation: picked up by every generic test through ``cases.CASES``.

The references are the formulas written out in float64 (Liger-Kernel's generalised JSD; Hinton et
al.'s temperature-scaled KL plus hard-label cross entropy), independent of our code.
"""

from typing import List, Optional

import torch
from cases import C, Case, _class_target
from torch import Tensor, nn

import exportable_loss as el


class NoLabel(nn.Module):
    """Our loss called without its optional label, so that sample_weight and normalizer follow the
    two data tensors as the generic tests pass them."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(
        self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None, normalizer: Optional[Tensor] = None
    ) -> Tensor:
        return self.loss(input, target, None, sample_weight, normalizer)


def jsd_ref(beta: float, ignore_index: int = -100):
    """Liger's generalised JSD in float64: beta KL(P||M) + (1-beta) KL(Q||M), M = beta P + (1-beta) Q;
    beta = 0 is KL(P||Q), beta = 1 is KL(Q||P)."""

    def ref(x: Tensor, t: Tensor, label: Optional[Tensor] = None):
        log_q, log_p = x.double(), t.double()
        q, p = log_q.exp(), log_p.exp()
        if beta == 0.0:
            l = (p * (log_p - log_q)).sum(1)
        elif beta == 1.0:
            l = (q * (log_q - log_p)).sum(1)
        else:
            log_m = torch.log(beta * p + (1 - beta) * q)
            l = beta * (p * (log_p - log_m)).sum(1) + (1 - beta) * (q * (log_q - log_m)).sum(1)
        if label is None:
            return l, None, None
        valid = label != ignore_index
        return torch.where(valid, l, 0.0), valid, None

    return ref


def distillation_ref(temperature: float, alpha: float, ignore_index: int = -100):
    """Hinton et al. in float64: alpha T^2 KL(softmax(t/T) || softmax(x/T)) + (1 - alpha) CE(x, label)."""

    def ref(x: Tensor, t: Tensor, label: Optional[Tensor] = None):
        x, t = x.double(), t.double()
        p_teacher = torch.softmax(t / temperature, 1)
        log_ratio = torch.log_softmax(t / temperature, 1) - torch.log_softmax(x / temperature, 1)
        l = alpha * temperature**2 * (p_teacher * log_ratio).sum(1)
        if label is None:
            return l, None, None
        valid = label != ignore_index
        safe = torch.where(valid, label, 0)
        ce = -torch.log_softmax(x, 1).gather(1, safe.unsqueeze(1)).squeeze(1)
        return torch.where(valid, l + (1 - alpha) * ce, 0.0), valid, None

    return ref


def _log_probs(n: int, g: torch.Generator, *rest: int, scale: float = 1.0) -> Tensor:
    return torch.log_softmax(torch.randn(n, C, *rest, generator=g) * scale, 1)


CASES: List[Case] = [
    Case(
        "jsd_label_spatial",
        lambda r, **kw: el.JSDLoss(beta=0.5, reduction=r, **kw),
        lambda n, g: (_log_probs(n, g, 3, scale=2.0), _log_probs(n, g, 3, scale=2.0), _class_target(n, g, 3)),
        jsd_ref(0.5),
        grad_args=(0, 1),
    ),
    Case(
        "jsd_beta_0.1",
        lambda r, **kw: NoLabel(el.JSDLoss(beta=0.1, reduction=r, **kw)),
        lambda n, g: (_log_probs(n, g, scale=2.0), _log_probs(n, g, scale=2.0)),
        jsd_ref(0.1),
    ),
    Case(
        "distill_soft_t2",
        lambda r, **kw: NoLabel(el.DistillationLoss(temperature=2.0, alpha=1.0, reduction=r, **kw)),
        lambda n, g: (torch.randn(n, C, generator=g) * 3, torch.randn(n, C, generator=g) * 3),
        distillation_ref(2.0, 1.0),
    ),
    Case(
        "distill_hard_ignore",
        lambda r, **kw: el.DistillationLoss(temperature=3.0, alpha=0.3, ignore_index=2, reduction=r, **kw),
        lambda n, g: (
            torch.randn(n, C, 2, generator=g) * 3,
            torch.randn(n, C, 2, generator=g) * 3,
            _class_target(n, g, 2, ignore=2),
        ),
        distillation_ref(3.0, 0.3, ignore_index=2),
        grad_args=(0, 1),
    ),
]
