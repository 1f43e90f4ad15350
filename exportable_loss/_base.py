"""The base of every loss module: ``reduction`` and ``backend`` checked and kept as constants."""

import warnings
from typing import Final, Optional

from torch import nn

from exportable_loss._checks import check_backend, check_choice
from exportable_loss._reduction import REDUCTIONS


def _legacy_reduction(size_average: Optional[bool], reduce: Optional[bool]) -> str:
    # torch.nn's deprecated size_average/reduce pair, mapped as torch.nn maps it.
    warnings.warn(
        "size_average and reduce are deprecated, please use reduction='mean'|'sum'|'none'",
        DeprecationWarning,
        stacklevel=3,
    )
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


class _Loss(nn.Module):
    """Base of every loss: validates and stores ``reduction`` and ``backend`` as constants.

    The reductions a loss accepts are those its declaration (``spec``) lists.
    """

    # Constants: TorchScript inlines them and torch.compile never recompiles on them.
    __constants__ = ["reduction", "backend"]
    # backend != "torch", a constant TorchScript branches on at compile time: only a module that
    # may run a Triton kernel puts the op into its TorchScript code (a torch-backend artifact
    # holds standard operators only and loads without this library)
    fused: Final[bool]

    def __init__(
        self,
        reduction: str = "mean",
        backend: str = "torch",
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        spec = getattr(type(self), "spec", None)
        check_choice("reduction", reduction, spec.reductions if spec is not None else REDUCTIONS)
        check_backend(backend)
        self.reduction = reduction
        self.backend = backend
        self.fused = backend != "torch"

    def extra_repr(self) -> str:
        options = [f"{name}={getattr(self, name)!r}" for name in self.__constants__]
        return ", ".join(options)
