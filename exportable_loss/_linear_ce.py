"""Fused linear cross entropy: classifier and cross entropy without materialising the logits."""

from exportable_loss._base import _Loss


def linear_cross_entropy(*args, **kwargs):
    raise NotImplementedError


# Modules


class FusedLinearCrossEntropyLoss(_Loss):
    pass
