"""The loss modules, each living in its family's file: constructor arguments held as constants
and buffers, one call into the functional twin."""

from exportable_loss._classification import CrossEntropyLoss, NLLLoss
from exportable_loss._detection import CIoULoss, DIoULoss, GIoULoss
from exportable_loss._distillation import DistillationLoss, JSDLoss
from exportable_loss._elementwise import (
    BCEWithLogitsLoss,
    FocalLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    SmoothL1Loss,
)
from exportable_loss._linear_ce import FusedLinearCrossEntropyLoss
from exportable_loss._probabilistic import (
    CosineEmbeddingLoss,
    GaussianNLLLoss,
    MarginRankingLoss,
    PoissonNLLLoss,
    TripletMarginLoss,
)
from exportable_loss._segmentation import DiceLoss, TverskyLoss

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
