"""Every docstring example runs and prints what it says, and every loss has one."""

import doctest
import importlib

import pytest
import torch

from exportable_loss._registry import specs

# the loss families (from the declarations) and the other modules with examples
MODULES = sorted({spec.module.__module__ for spec in specs().values()}) + [
    "exportable_loss.distributed",
    "exportable_loss.export.api",
    "exportable_loss.export.step",
    "exportable_loss.export.onnx",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the export examples write their files here
    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch}, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("spec", list(specs().values()), ids=list(specs()))
def test_every_loss_has_examples(spec):
    for obj in (spec.module, spec.function):
        assert ">>> " in (obj.__doc__ or ""), f"{obj.__qualname__} has no example"
