"""Every loss by name, with example inputs for any batch size: what the CLI and the
compatibility matrix export."""

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from exportable_loss import losses

NUM_CLASSES = 5


@dataclasses.dataclass(frozen=True)
class LossEntry:
    name: str
    cls: Callable[..., nn.Module]
    # (batch, generator) -> the tensors forward takes before sample_weight
    inputs: Callable[[int, torch.Generator], Tuple[Tensor, ...]]
    reductions: Tuple[str, ...] = ("none", "per_sample", "mean", "sum")
    kwargs: Tuple[Tuple[str, object], ...] = ()
    # positions of the inputs that carry the batch (None: all); the others are parameters
    batched: Optional[Tuple[int, ...]] = None
    # backends with kernels of their own; every other backend runs the same PyTorch code
    backends: Tuple[str, ...] = ("torch", "triton")

    def make(self, reduction: str = "mean", backend: str = "torch") -> nn.Module:
        return self.cls(reduction=reduction, backend=backend, **dict(self.kwargs))

    def example(self, batch: int, sample_weight: bool = False, seed: int = 0) -> Tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        data = tuple(self.inputs(batch, g))
        return (*data, torch.rand(batch, generator=g)) if sample_weight else data

    def batch_inputs(self, args: Tuple[Tensor, ...]) -> List[bool]:
        """Which of ``example()``'s tensors carry the batch dimension."""
        data = len(self.inputs(2, torch.Generator().manual_seed(0)))
        return [self.batched is None or i in self.batched or i >= data for i in range(len(args))]


def _indices(n: int, g: torch.Generator) -> Tensor:
    t = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    t[::4] = -100
    return t


def _pair(n: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
    return torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)


def _log_probs(n: int, g: torch.Generator) -> Tensor:
    return torch.log_softmax(torch.randn(n, NUM_CLASSES, generator=g), 1)


def _boxes(n: int, g: torch.Generator) -> Tensor:
    corner = torch.rand(n, 2, generator=g) * 4
    return torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 3 + 0.1], 1)


def _signs(n: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n,), generator=g).float() * 2 - 1


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
        LossEntry(
            "linear_cross_entropy",
            losses.FusedLinearCrossEntropyLoss,
            lambda n, g: (
                torch.randn(n, 3, 4, generator=g),
                torch.randn(NUM_CLASSES, 4, generator=g),
                _indices(3 * n, g).view(n, 3),
                torch.randn(NUM_CLASSES, generator=g),
            ),
            kwargs=(("label_smoothing", 0.1), ("chunk_size", 4)),
            batched=(0, 2),
        ),
        # the losses below have no kernels of their own: every backend runs their PyTorch code
        LossEntry(
            "jsd",
            losses.JSDLoss,
            lambda n, g: (_log_probs(n, g), _log_probs(n, g), _indices(n, g)),
            kwargs=(("beta", 0.3),),
            backends=("torch",),
        ),
        LossEntry(
            "distillation",
            losses.DistillationLoss,
            lambda n, g: (
                torch.randn(n, NUM_CLASSES, generator=g),
                torch.randn(n, NUM_CLASSES, generator=g),
                _indices(n, g),
            ),
            kwargs=(("temperature", 2.0), ("alpha", 0.5)),
            backends=("torch",),
        ),
        LossEntry(
            "dice",
            losses.DiceLoss,
            lambda n, g: (torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 3, (n, 4, 4), generator=g)),
            backends=("torch",),
        ),
        LossEntry(
            "focal_tversky",
            losses.TverskyLoss,
            lambda n, g: (torch.randn(n, 3, 4, 4, generator=g), (torch.rand(n, 3, 4, 4, generator=g) > 0.5).float()),
            kwargs=(("alpha", 0.3), ("beta", 0.7), ("gamma", 0.75), ("mode", "multilabel")),
            backends=("torch",),
        ),
        LossEntry("giou", losses.GIoULoss, lambda n, g: (_boxes(n, g), _boxes(n, g)), backends=("torch",)),
        LossEntry("diou", losses.DIoULoss, lambda n, g: (_boxes(n, g), _boxes(n, g)), backends=("torch",)),
        LossEntry("ciou", losses.CIoULoss, lambda n, g: (_boxes(n, g), _boxes(n, g)), backends=("torch",)),
        LossEntry(
            "poisson_nll",
            losses.PoissonNLLLoss,
            lambda n, g: (torch.randn(n, 3, generator=g), torch.poisson(torch.full((n, 3), 2.0), generator=g)),
            kwargs=(("full", True),),
            backends=("torch",),
        ),
        LossEntry(
            "gaussian_nll",
            losses.GaussianNLLLoss,
            lambda n, g: (
                torch.randn(n, 3, generator=g),
                torch.randn(n, 3, generator=g),
                torch.rand(n, 3, generator=g) + 0.1,
            ),
            backends=("torch",),
        ),
        LossEntry(
            "margin_ranking",
            losses.MarginRankingLoss,
            lambda n, g: (torch.randn(n, generator=g), torch.randn(n, generator=g), _signs(n, g)),
            kwargs=(("margin", 0.5),),
            backends=("torch",),
        ),
        LossEntry(
            "triplet_margin",
            losses.TripletMarginLoss,
            lambda n, g: tuple(torch.randn(n, 4, generator=g) for _ in range(3)),
            backends=("torch",),
        ),
        LossEntry(
            "cosine_embedding",
            losses.CosineEmbeddingLoss,
            lambda n, g: (torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g), _signs(n, g)),
            kwargs=(("margin", 0.2),),
            backends=("torch",),
        ),
    ]
}


def get(name: str) -> LossEntry:
    """The catalogue entry ``name``; ``ValueError`` naming the known losses otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]
