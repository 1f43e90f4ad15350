"""Loss modules: constructor arguments as constants and buffers, one call into functional."""

from typing import Optional

from torch import Tensor

from exportable_loss import functional as LF
from exportable_loss._base import _Loss
from exportable_loss._checks import check_cross_entropy_options
from exportable_loss._detection import CIoULoss, DIoULoss, GIoULoss  # noqa: F401
from exportable_loss._distillation import DistillationLoss, JSDLoss  # noqa: F401
from exportable_loss._linear_ce import FusedLinearCrossEntropyLoss  # noqa: F401
from exportable_loss._probabilistic import (  # noqa: F401
    CosineEmbeddingLoss,
    GaussianNLLLoss,
    MarginRankingLoss,
    PoissonNLLLoss,
    TripletMarginLoss,
)
from exportable_loss._reduction import KL_REDUCTIONS
from exportable_loss._segmentation import DiceLoss, TverskyLoss  # noqa: F401

__all__ = [
    "BCEWithLogitsLoss",
    "CIoULoss",
    "CosineEmbeddingLoss",
    "CrossEntropyLoss",
    "DIoULoss",
    "DiceLoss",
    "DistillationLoss",
    "FocalLoss",
    "FusedLinearCrossEntropyLoss",
    "GIoULoss",
    "GaussianNLLLoss",
    "HuberLoss",
    "JSDLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "MarginRankingLoss",
    "NLLLoss",
    "PoissonNLLLoss",
    "SmoothL1Loss",
    "TripletMarginLoss",
    "TverskyLoss",
]


class CrossEntropyLoss(_Loss):
    """Cross entropy over logits, as ``torch.nn.CrossEntropyLoss`` plus the SPEC extras.

    See :func:`exportable_loss.functional.cross_entropy` for the arguments and shapes.

    Example:
        >>> loss = CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 1.0]), reduction="per_sample")
        >>> loss(torch.zeros(2, 3), torch.tensor([1, -100]))
        tensor([2.1972, 0.0000])
    """

    __constants__ = _Loss.__constants__ + [
        "ignore_index",
        "label_smoothing",
        "z_loss",
        "logit_softcap",
        "validate",
        "inplace_backward",
    ]

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        size_average: Optional[bool] = None,
        ignore_index: int = -100,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        logit_softcap: Optional[float] = None,
        backend: str = "torch",
        validate: bool = False,
        inplace_backward: bool = False,
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        check_cross_entropy_options(label_smoothing, z_loss, logit_softcap)
        self.register_buffer("weight", weight)
        self.weight: Optional[Tensor]
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.z_loss = float(z_loss)
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        self.validate = validate
        self.inplace_backward = inplace_backward

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            sample_weight=sample_weight,
            normalizer=normalizer,
            z_loss=self.z_loss,
            logit_softcap=self.logit_softcap,
            validate=self.validate,
            backend=self.backend,
            inplace_backward=self.inplace_backward,
        )


class NLLLoss(_Loss):
    """Negative log likelihood, as ``torch.nn.NLLLoss``; see :func:`functional.nll_loss`.

    Example:
        >>> NLLLoss()(torch.log(torch.tensor([[0.25, 0.75]])), torch.tensor([1]))
        tensor(0.2877)
    """

    __constants__ = _Loss.__constants__ + ["ignore_index", "validate"]

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        size_average: Optional[bool] = None,
        ignore_index: int = -100,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
        validate: bool = False,
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.register_buffer("weight", weight)
        self.weight: Optional[Tensor]
        self.ignore_index = ignore_index
        self.validate = validate

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            sample_weight=sample_weight,
            normalizer=normalizer,
            validate=self.validate,
        )


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy on logits, as ``torch.nn.BCEWithLogitsLoss``.

    Example:
        >>> BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))(torch.zeros(2, 1), torch.ones(2, 1))
        tensor(1.3863)
    """

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        pos_weight: Optional[Tensor] = None,
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.weight: Optional[Tensor]
        self.pos_weight: Optional[Tensor]

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.binary_cross_entropy_with_logits(
            input,
            target,
            weight=self.weight,
            reduction=self.reduction,
            pos_weight=self.pos_weight,
            sample_weight=sample_weight,
            normalizer=normalizer,
            backend=self.backend,
        )


class MSELoss(_Loss):
    """Squared error, as ``torch.nn.MSELoss``.

    Example:
        >>> MSELoss(reduction="per_sample")(torch.ones(2, 3), torch.zeros(2, 3))
        tensor([1., 1.])
    """

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.mse_loss(input, target, self.reduction, sample_weight, normalizer, self.backend)


class L1Loss(_Loss):
    """Absolute error, as ``torch.nn.L1Loss``.

    Example:
        >>> L1Loss(reduction="sum")(torch.tensor([1.0, -2.0]), torch.zeros(2))
        tensor(3.)
    """

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.l1_loss(input, target, self.reduction, sample_weight, normalizer, self.backend)


class SmoothL1Loss(_Loss):
    """Smooth L1, as ``torch.nn.SmoothL1Loss``.

    Example:
        >>> SmoothL1Loss(beta=0.5)(torch.tensor([0.25, 2.0]), torch.zeros(2))
        tensor(0.9062)
    """

    __constants__ = _Loss.__constants__ + ["beta"]

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        beta: float = 1.0,
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce)
        if beta < 0.0:
            raise ValueError(f"beta must be non-negative; got {beta}")
        self.beta = float(beta)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.smooth_l1_loss(input, target, self.reduction, self.beta, sample_weight, normalizer, self.backend)


class HuberLoss(_Loss):
    """Huber loss, as ``torch.nn.HuberLoss``.

    Example:
        >>> HuberLoss(delta=2.0, reduction="none")(torch.tensor([0.5, 3.0]), torch.zeros(2))
        tensor([0.1250, 4.0000])
    """

    __constants__ = _Loss.__constants__ + ["delta"]

    def __init__(self, reduction: str = "mean", delta: float = 1.0, backend: str = "torch") -> None:
        super().__init__(reduction, backend)
        if delta <= 0.0:
            raise ValueError(f"delta must be positive; got {delta}")
        self.delta = float(delta)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.huber_loss(input, target, self.reduction, self.delta, sample_weight, normalizer, self.backend)


class KLDivLoss(_Loss):
    """Kullback-Leibler divergence, as ``torch.nn.KLDivLoss`` (also ``reduction="batchmean"``).

    Example:
        >>> KLDivLoss(reduction="batchmean")(torch.log(torch.tensor([[0.5, 0.5]])), torch.tensor([[0.9, 0.1]]))
        tensor(0.3681)
    """

    __constants__ = _Loss.__constants__ + ["log_target"]

    def __init__(
        self,
        size_average: Optional[bool] = None,
        reduce: Optional[bool] = None,
        reduction: str = "mean",
        log_target: bool = False,
        backend: str = "torch",
    ) -> None:
        super().__init__(reduction, backend, size_average, reduce, choices=KL_REDUCTIONS)
        self.log_target = log_target

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.kl_div(input, target, self.reduction, self.log_target, sample_weight, normalizer, self.backend)


class FocalLoss(_Loss):
    """Sigmoid focal loss, as ``torchvision.ops.sigmoid_focal_loss`` (default reduction "mean").

    Example:
        >>> FocalLoss(reduction="sum")(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
        tensor(1.2809)
    """

    __constants__ = _Loss.__constants__ + ["alpha", "gamma"]

    def __init__(
        self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean", backend: str = "torch"
    ) -> None:
        super().__init__(reduction, backend)
        if gamma < 0.0:
            raise ValueError(f"gamma must be non-negative; got {gamma}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        sample_weight: Optional[Tensor] = None,
        normalizer: Optional[Tensor] = None,
    ) -> Tensor:
        return LF.sigmoid_focal_loss(
            input, target, self.alpha, self.gamma, self.reduction, sample_weight, normalizer, self.backend
        )
