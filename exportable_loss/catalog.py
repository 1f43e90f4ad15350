"""Every loss by name, with example inputs for any batch size: what the CLI and the
compatibility matrix export. Each entry is a view of the loss's declaration (``LossSpec``):
nothing here lists losses."""

import dataclasses
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from exportable_loss._registry import EXAMPLE_CLASSES, LossSpec, specs

NUM_CLASSES = EXAMPLE_CLASSES


@dataclasses.dataclass(frozen=True)
class LossEntry:
    spec: LossSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cls(self) -> type:
        return self.spec.module

    @property
    def reductions(self) -> Tuple[str, ...]:
        return self.spec.reductions

    @property
    def backends(self) -> Tuple[str, ...]:
        return self.spec.backends

    @property
    def kwargs(self) -> Tuple[Tuple[str, object], ...]:
        return self.spec.example_options

    def make(self, reduction: str = "mean", backend: str = "torch") -> nn.Module:
        """The loss module with the example's options."""
        return self.cls(reduction=reduction, backend=backend, **dict(self.kwargs))

    def example(self, batch: int, sample_weight: bool = False, seed: int = 0) -> Tuple[Tensor, ...]:
        """Example tensors at batch size ``batch`` (and sample weights, if asked)."""
        g = torch.Generator().manual_seed(seed)
        data = tuple(self.spec.example(batch, g))
        return (*data, torch.rand(batch, generator=g)) if sample_weight else data

    def batch_inputs(self, args: Tuple[Tensor, ...]) -> List[bool]:
        """Which of ``example``'s tensors carry the batch dimension."""
        data = len(self.spec.example(2, torch.Generator().manual_seed(0)))
        batched = self.spec.batched
        return [batched is None or i in batched or i >= data for i in range(len(args))]


LOSSES: Dict[str, LossEntry] = {name: LossEntry(spec) for name, spec in specs().items()}


def get(name: str) -> LossEntry:
    """The catalogue entry ``name``; ``ValueError`` naming the known losses otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]
