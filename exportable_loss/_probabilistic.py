"""Probabilistic and ranking losses: Poisson and Gaussian NLL, margin ranking, triplet margin, cosine embedding."""

from exportable_loss._base import _Loss


def poisson_nll_loss(*args, **kwargs):
    raise NotImplementedError


def gaussian_nll_loss(*args, **kwargs):
    raise NotImplementedError


def margin_ranking_loss(*args, **kwargs):
    raise NotImplementedError


def triplet_margin_loss(*args, **kwargs):
    raise NotImplementedError


def cosine_embedding_loss(*args, **kwargs):
    raise NotImplementedError


# Modules


class PoissonNLLLoss(_Loss):
    pass


class GaussianNLLLoss(_Loss):
    pass


class MarginRankingLoss(_Loss):
    pass


class TripletMarginLoss(_Loss):
    pass


class CosineEmbeddingLoss(_Loss):
    pass
