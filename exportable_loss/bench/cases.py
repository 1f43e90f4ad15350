"""The configurations the size sweep and the operator counts compare against ``torch.nn``.

Every loss of the library whose module has a ``torch.nn`` twin of the same name (read from the
declarations, ``_registry.specs()``) in the configurations users call it with: plain, with class
weights (losses with a ``weight`` option), with label smoothing (losses with a
``label_smoothing`` option) and with sample weights. The baseline is the ``torch.nn`` module with
the same options; for sample weights, which ``torch.nn`` lacks, its ``reduction="none"`` loss
weighted and reduced by hand as a user would write it. Inputs come from the catalogue's
examples at any batch size: ``(N, C)`` logits for the class losses, ``(N, 256)`` elements (or
``N * 256`` scalars) for the others, so ``N = 4096`` is ``2**20`` elements.
"""

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from exportable_loss import catalog

CONFIGS = ("plain", "class weights", "label smoothing", "sample weights")
FEATURES = 256  # elements per sample of an element-wise loss
CLASS_LOSSES = ("cross_entropy", "nll")  # their size is (N, C): logits over classes
# KL divergence is called with "batchmean" (torch.nn's "mean" warns on every call that it is wrong)
REDUCTION = {"kl_div": "batchmean"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One loss in one configuration: what to compare, at any batch size."""

    loss: str  # the catalogue name
    config: str  # one of CONFIGS
    classes: Optional[int] = None  # C of a class loss

    @property
    def label(self) -> str:
        classes = f" C={self.classes}" if self.classes else ""
        return f"{self.loss}{classes}, {self.config}"

    @property
    def reduction(self) -> str:
        return REDUCTION.get(self.loss, "mean")

    def elements(self, n: int) -> int:
        """The size of the loss's input at batch ``n``."""
        return n * (self.classes or FEATURES)

    def inputs(self, n: int) -> Tuple[Tensor, ...]:
        """The forward's tensors at batch ``n`` (and the sample weights last, where the
        configuration has them); the first requires grad."""
        entry = catalog.get(self.loss)
        example = entry.example(2)
        if example[0].dim() == 1:  # one scalar per sample: the batch holds the elements
            data = entry.example(n * FEATURES)
        else:
            per_sample = (self.classes,) if self.classes else (FEATURES,)
            data = entry.example(n, shapes={entry.inputs[0]: per_sample})
        if self.config == "sample weights":
            g = torch.Generator().manual_seed(1)
            data = (*data, torch.rand(data[0].shape[0], generator=g) + 0.5)
        return (data[0].detach().clone().requires_grad_(True), *data[1:])

    def _options(self, n_classes: int) -> dict:
        if self.config == "class weights":
            g = torch.Generator().manual_seed(2)
            return {"weight": torch.rand(n_classes, generator=g) + 0.5}
        if self.config == "label smoothing":
            return {"label_smoothing": 0.1}
        return {}

    def ours(self) -> nn.Module:
        entry = catalog.get(self.loss)
        return entry.cls(reduction=self.reduction, **self._options(self.classes or FEATURES))

    def baseline(self) -> Callable[..., Tensor]:
        """``torch.nn``'s loss; for sample weights its ``"none"`` loss weighted by hand."""
        twin = getattr(nn, catalog.get(self.loss).cls.__name__)
        options = self._options(self.classes or FEATURES)
        if self.config != "sample weights":
            return twin(reduction=self.reduction, **options)
        return _weighted(twin(reduction="none", **options), self.reduction)


def _weighted(loss: nn.Module, reduction: str) -> Callable[..., Tensor]:
    """What a user writes for per-sample weights over ``torch.nn``'s unreduced loss: the weighted
    sum divided by the weights' sum times the elements per sample (``batchmean``: the batch)."""

    def weighted(*args: Tensor) -> Tensor:
        *data, s = args
        term = loss(*data)
        per_sample = term.numel() // max(term.shape[0], 1)
        total = (term * s.reshape([-1] + [1] * (term.dim() - 1))).sum()
        if reduction == "batchmean":
            return total / term.shape[0]
        return total / (s.sum() * per_sample)

    return weighted


def twins() -> List[str]:
    """The losses of the library with a ``torch.nn`` twin, in declaration order."""
    return [name for name, e in catalog.LOSSES.items() if hasattr(nn, e.cls.__name__)]


def cases(losses: Optional[Sequence[str]] = None, classes: Sequence[int] = (1000, 32000)) -> List[Case]:
    """Every (loss, configuration) the sweep measures, for ``losses`` (default: every twin);
    class losses once per number of classes in ``classes``."""
    chosen = twins() if losses is None else list(losses)
    unknown = sorted(set(chosen) - set(twins()))
    if unknown:
        raise ValueError(f"no torch.nn twin to compare {unknown[0]!r} with; the losses are {', '.join(twins())}")
    out: List[Case] = []
    for name in chosen:
        options = catalog.get(name).options()
        configs = [
            c
            for c in CONFIGS
            if c in ("plain", "sample weights")
            or (c == "class weights" and "weight" in options)
            or (c == "label smoothing" and "label_smoothing" in options)
        ]
        for c in classes if name in CLASS_LOSSES else [None]:
            out += [Case(name, config, c) for config in configs]
    return out


def step(loss: Callable[..., Tensor], args: Tuple[Tensor, ...]) -> Callable[[], None]:
    """One forward+backward of ``loss`` on ``args`` (the first one's gradient)."""
    x = args[0]

    def run() -> None:
        x.grad = None
        loss(*args).backward()

    return run
