"""The functional API: one function per loss, the functional twin of each loss module.

Every function takes the tensors, the module's constructor options, and ``reduction``
(``"none"``, ``"per_sample"``, ``"mean"`` or ``"sum"``; ``kl_div`` also ``"batchmean"``),
``sample_weight``, ``normalizer`` and ``backend``, with the meaning the
[Semantics][semantics] page gives them. Each function lives in its family's file.
"""

from exportable_loss._classification import cross_entropy, nll_loss
from exportable_loss._detection import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss
from exportable_loss._distillation import distillation_loss, jsd_loss
from exportable_loss._elementwise import (
    binary_cross_entropy_with_logits,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
)
from exportable_loss._linear_ce import linear_cross_entropy
from exportable_loss._probabilistic import (
    cosine_embedding_loss,
    gaussian_nll_loss,
    margin_ranking_loss,
    poisson_nll_loss,
    triplet_margin_loss,
)
from exportable_loss._segmentation import dice_loss, tversky_loss

__all__ = [
    "binary_cross_entropy_with_logits",
    "complete_box_iou_loss",
    "cosine_embedding_loss",
    "cross_entropy",
    "dice_loss",
    "distance_box_iou_loss",
    "distillation_loss",
    "gaussian_nll_loss",
    "generalized_box_iou_loss",
    "huber_loss",
    "jsd_loss",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "margin_ranking_loss",
    "mse_loss",
    "nll_loss",
    "poisson_nll_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "triplet_margin_loss",
    "tversky_loss",
]
