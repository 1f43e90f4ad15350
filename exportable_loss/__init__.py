"""exportable-loss: PyTorch loss modules that script, compile, export and run in onnxruntime."""

from exportable_loss import functional
from exportable_loss._targets import shift_labels
from exportable_loss.losses import (
    BCEWithLogitsLoss,
    CIoULoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    DiceLoss,
    DIoULoss,
    DistillationLoss,
    FocalLoss,
    FusedLinearCrossEntropyLoss,
    GaussianNLLLoss,
    GIoULoss,
    HuberLoss,
    JSDLoss,
    KLDivLoss,
    L1Loss,
    MarginRankingLoss,
    MSELoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
    TripletMarginLoss,
    TverskyLoss,
)

__version__ = "0.1.0"

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
    "functional",
    "shift_labels",
]
