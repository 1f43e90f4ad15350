"""Every docstring example runs and prints what it says."""

import doctest
import importlib

import pytest
import torch

MODULES = ["exportable_loss.functional", "exportable_loss.losses"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch}, verbose=False)
    assert result.attempted >= 8 and result.failed == 0
