"""The loss modules, all importable from ``exportable_loss``: ``torch.nn.Module`` subclasses
whose constructor takes the options (held as constants and buffers) and whose ``forward``
calls the functional twin. Each module lives in its family's file."""

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
