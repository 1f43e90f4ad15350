"""Test cases for FusedLinearCrossEntropyLoss: picked up by every generic test through ``cases.CASES``."""

from typing import List

from cases import Case

CASES: List[Case] = []
