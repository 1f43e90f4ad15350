"""What each loss declares about itself, once, next to its code.

Every loss module carries a ``LossSpec`` (``@declare(...)`` above the class, in its family
file): its catalogue name, its functional twin, the reductions it accepts, what its ``"mean"``
divides by, whether a Triton kernel backs it, and example inputs. Everything that promises
"every loss" reads the specs: the module base (reduction choices), the distributed
denominators, the catalogue behind the CLI and the compatibility matrix, the docs' tables and
the tests' list of losses. Adding a loss adds a spec; nothing else lists losses.
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from exportable_loss._reduction import REDUCTIONS

# (module, target, sample_weight, num_classes) -> the 0-dim float64 denominator of reduction="mean"
Denominator = Callable[[nn.Module, Tensor, Optional[Tensor], Optional[int]], Tensor]
# (module, target) -> the shape of the loss's positions, where a sample_weight may hold one weight each
Positions = Callable[[nn.Module, Tensor], Tuple[int, ...]]
# (batch, generator) -> the tensors forward takes before sample_weight
Example = Callable[[int, torch.Generator], Tuple[Tensor, ...]]


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The facts of one loss.

    Attributes:
        name: its name in the catalogue and on the command line (``exportable-loss export NAME``).
        module: the ``nn.Module`` class (set by ``declare``).
        function: the functional twin in ``exportable_loss.functional``.
        reductions: the ``reduction`` values the module and the function accept.
        denominator: what ``reduction="mean"`` (KL's ``"batchmean"``) divides by, from the
            arguments known before the forward pass: ``(module, target, sample_weight,
            num_classes)``, where ``target`` is the forward argument named by
            ``denominator_arg`` and ``num_classes`` the input's classes (read only by losses whose
            target does not show them). Raises ``ValueError`` where the mean cannot be split
            across micro-batches.
        denominator_arg: the forward argument ``denominator`` reads.
        positions: for a loss whose ``sample_weight`` may also hold one weight per position (of
            its ``"none"`` result, as a token of a ``(B, T)`` target): that shape, from the
            module and its ``denominator_arg`` tensor; None where it takes one weight per sample
            only.
        kernel: the Triton kernel module in ``triton_kernels/`` behind ``backend="triton"``, or
            None where every backend runs the PyTorch code.
        example: example tensors of any batch size (the CLI, the compatibility matrix).
        example_options: constructor options the example is meant for.
        batched: which example tensors carry the batch on dim 0 (None: all); the others are
            parameters (a classifier matrix).
    """

    name: str
    function: Callable[..., Tensor]
    denominator: Denominator
    example: Example
    reductions: Tuple[str, ...] = REDUCTIONS
    denominator_arg: str = "target"
    positions: Optional[Positions] = None
    kernel: Optional[str] = None
    example_options: Tuple[Tuple[str, object], ...] = ()
    batched: Optional[Tuple[int, ...]] = None
    module: type = nn.Module

    @property
    def backends(self) -> Tuple[str, ...]:
        """The backends that run code of their own: ``("torch", "triton")`` with a kernel."""
        return ("torch", "triton") if self.kernel is not None else ("torch",)


_SPECS: Dict[str, LossSpec] = {}


def declare(**facts: object) -> Callable[[type], type]:
    """Class decorator: attach a ``LossSpec`` to a loss module and register it."""

    def attach(cls: type) -> type:
        spec = LossSpec(module=cls, **facts)  # type: ignore[arg-type]
        if spec.name in _SPECS:
            raise ValueError(f"two losses declare the name {spec.name!r}")
        cls.spec = spec  # type: ignore[attr-defined]
        _SPECS[spec.name] = spec
        return cls

    return attach


def specs() -> Dict[str, LossSpec]:
    """Every loss of the library by name, in declaration order."""
    import exportable_loss.losses  # noqa: F401  (loads every family, so every spec is declared)

    return dict(_SPECS)


def spec_of(module: nn.Module) -> LossSpec:
    """The spec of a loss module of this library; ``TypeError`` for any other module."""
    spec = getattr(type(module), "spec", None)
    if not isinstance(spec, LossSpec):
        raise TypeError(
            f"{type(module).__name__} is not a loss of exportable-loss; expected one of "
            f"{', '.join(s.module.__name__ for s in specs().values())}"
        )
    return spec


# Example inputs shared by several families' declarations.
EXAMPLE_CLASSES = 5


def example_class_indices(n: int, g: torch.Generator, num_classes: int = EXAMPLE_CLASSES) -> Tensor:
    """``(n,)`` class indices with every fourth position ``-100`` (ignored)."""
    t = torch.randint(0, num_classes, (n,), generator=g)
    t[::4] = -100
    return t
