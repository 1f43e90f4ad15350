"""Distillation losses: generalised Jensen-Shannon divergence and temperature-scaled knowledge distillation."""

from exportable_loss._base import _Loss


def jsd_loss(*args, **kwargs):
    raise NotImplementedError


def distillation_loss(*args, **kwargs):
    raise NotImplementedError


# Modules


class JSDLoss(_Loss):
    pass


class DistillationLoss(_Loss):
    pass
