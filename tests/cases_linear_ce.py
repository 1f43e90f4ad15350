"""Test cases for FusedLinearCrossEntropyLoss: picked up by every generic test through ``cases.CASES``.

The reference is the float64 cross-entropy formula of ``cases._ce_ref`` on the logits
``input @ linear_weight.T + linear_bias``, computed in float64 (so the gradients of the
classifier come from float64 autograd of the formula, independent of the chunked op)."""

from typing import List, Optional

import torch
from cases import W5, C, Case, _ce_ref, _class_target
from torch import Tensor, nn

import exportable_loss as el

H = 4  # hidden size, below every batch size the tests use


def _classifier(g: torch.Generator) -> torch.Tensor:
    return torch.randn(C, H, generator=g)


class NoBias(nn.Module):
    """Calls the loss without linear_bias, so sample_weight and normalizer come 4th and 5th."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(
        self,
        input: Tensor,
        linear_weight: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return self.loss(input, linear_weight, target, sample_weight=sample_weight, normalizer=normalizer)


def _linear_ref(ce_ref):
    def ref(x, linear_weight, target, linear_bias=None):
        logits = x.double() @ linear_weight.double().T
        if linear_bias is not None:
            logits = logits + linear_bias.double()
        return ce_ref(logits.movedim(-1, 1) if logits.dim() > 2 else logits, target)

    return ref


CASES: List[Case] = [
    Case(
        "linear_ce",
        lambda r, **kw: NoBias(
            el.FusedLinearCrossEntropyLoss(W5, reduction=r, label_smoothing=0.1, chunk_size=4, **kw)
        ),
        lambda n, g: (torch.randn(n, H, generator=g) * 2, _classifier(g), _class_target(n, g)),
        _linear_ref(_ce_ref(W5, label_smoothing=0.1)),
        grad_args=(0, 1),
        batched=(0, 2),
    ),
    Case(
        "linear_ce_tokens_bias_zloss_softcap",
        lambda r, **kw: el.FusedLinearCrossEntropyLoss(reduction=r, z_loss=0.01, logit_softcap=3.0, **kw),
        lambda n, g: (
            torch.randn(n, 3, H, generator=g) * 2,
            _classifier(g),
            _class_target(n, g, 3),
            torch.randn(C, generator=g),
        ),
        _linear_ref(_ce_ref(None, z_loss=0.01, softcap=3.0)),
        grad_args=(0, 1, 3),
        batched=(0, 2),
    ),
]
