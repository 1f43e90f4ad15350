"""Every loss by name, with example inputs for any batch size: what the CLI and the
compatibility matrix export."""

import dataclasses
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

from exportable_loss import losses

NUM_CLASSES = 5


@dataclasses.dataclass(frozen=True)
class LossEntry:
    name: str
    cls: Callable[..., nn.Module]
    inputs: Callable[[int, torch.Generator], Tuple[Tensor, Tensor]]
    reductions: Tuple[str, ...] = ("none", "per_sample", "mean", "sum")
    kwargs: Tuple[Tuple[str, object], ...] = ()

    def make(self, reduction: str = "mean", backend: str = "torch") -> nn.Module:
        return self.cls(reduction=reduction, backend=backend, **dict(self.kwargs))

    def example(self, batch: int, sample_weight: bool = False, seed: int = 0) -> Tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        x, t = self.inputs(batch, g)
        return (x, t, torch.rand(batch, generator=g)) if sample_weight else (x, t)


def _indices(n: int, g: torch.Generator) -> Tensor:
    t = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    t[::4] = -100
    return t


def _pair(n: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
    return torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)


LOSSES: Dict[str, LossEntry] = {
    e.name: e
    for e in [
        LossEntry(
            "cross_entropy",
            losses.CrossEntropyLoss,
            lambda n, g: (torch.randn(n, NUM_CLASSES, generator=g), _indices(n, g)),
            kwargs=(("weight", torch.linspace(0.5, 1.5, NUM_CLASSES)), ("label_smoothing", 0.1)),
        ),
        LossEntry(
            "nll",
            losses.NLLLoss,
            lambda n, g: (torch.log_softmax(torch.randn(n, NUM_CLASSES, generator=g), 1), _indices(n, g)),
        ),
        LossEntry(
            "bce_with_logits",
            losses.BCEWithLogitsLoss,
            lambda n, g: (torch.randn(n, 3, generator=g), torch.rand(n, 3, generator=g)),
            kwargs=(("pos_weight", torch.tensor([1.0, 2.0, 0.5])),),
        ),
        LossEntry("mse", losses.MSELoss, _pair),
        LossEntry("l1", losses.L1Loss, _pair),
        LossEntry("smooth_l1", losses.SmoothL1Loss, _pair, kwargs=(("beta", 0.5),)),
        LossEntry("huber", losses.HuberLoss, _pair, kwargs=(("delta", 0.5),)),
        LossEntry(
            "kl_div",
            losses.KLDivLoss,
            lambda n, g: (
                torch.log_softmax(torch.randn(n, 4, generator=g), 1),
                torch.softmax(torch.randn(n, 4, generator=g), 1),
            ),
            reductions=("none", "per_sample", "mean", "sum", "batchmean"),
        ),
        LossEntry(
            "focal",
            losses.FocalLoss,
            lambda n, g: (torch.randn(n, 3, generator=g), (torch.rand(n, 3, generator=g) > 0.5).float()),
        ),
    ]
}


def get(name: str) -> LossEntry:
    """The catalogue entry ``name``; ``ValueError`` naming the known losses otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]
