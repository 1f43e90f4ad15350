"""Test cases for Poisson / Gaussian NLL, margin ranking, triplet margin, cosine embedding: picked up by every generic test through ``cases.CASES``."""

from typing import List

from cases import Case

CASES: List[Case] = []
