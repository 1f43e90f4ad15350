"""Every docstring example runs and prints what it says."""

import doctest
import importlib

import pytest
import torch

MODULES = {
    "exportable_loss.functional": 9,
    "exportable_loss.losses": 9,
    "exportable_loss.distributed": 4,
    "exportable_loss.export.api": 3,
    "exportable_loss.export.step": 4,
    "exportable_loss.export.onnx": 4,
    # the loss families that functional and losses re-export
    "exportable_loss._detection": 6,
    "exportable_loss._distillation": 14,
    "exportable_loss._linear_ce": 2,
    "exportable_loss._probabilistic": 14,
    "exportable_loss._segmentation": 9,
}


@pytest.mark.parametrize("name", list(MODULES))
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the export examples write their files here
    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch}, verbose=False)
    assert result.attempted >= MODULES[name] and result.failed == 0
