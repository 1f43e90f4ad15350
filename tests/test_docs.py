"""Every docstring example runs and prints what it says, and every loss has one."""

import doctest
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import torch

from exportable_loss._registry import specs

# the loss families (from the declarations) and the other modules with examples
MODULES = sorted({spec.module.__module__ for spec in specs().values()}) + [
    "exportable_loss.distributed",
    "exportable_loss._vocab_parallel",
    "exportable_loss._targets",
    "exportable_loss.integrations.transformers",
    "exportable_loss.export.api",
    "exportable_loss.export.step",
    "exportable_loss.export.onnx",
    "exportable_loss.export.executorch",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    if name.endswith("executorch") and importlib.util.find_spec("executorch") is None:
        pytest.skip("needs the executorch extra")
    monkeypatch.chdir(tmp_path)  # the export examples write their files here
    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch}, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("spec", list(specs().values()), ids=list(specs()))
def test_every_loss_has_examples(spec):
    for obj in (spec.module, spec.function):
        assert ">>> " in (obj.__doc__ or ""), f"{obj.__qualname__} has no example"


def test_sources_cite_no_spec_file_and_no_sphinx_roles():
    """Users have the docs site, not the project's background spec: nothing points to that file,
    and docstrings use Markdown cross-references (the site would show a Sphinx role literally)."""
    root = Path(__file__).resolve().parents[1]
    spec_file = re.compile(r"\b" + "SP" + r"EC\b")  # split so that this line does not match itself
    role = re.compile(r":(?:func|class|meth|mod|attr|obj|exc|data):`")
    files = [*root.glob("exportable_loss/**/*.py"), *root.glob("triton_kernels/*.py")]
    files += [*root.glob("docs/**/*.md"), *root.glob("tests/*.py"), root / "README.md", root / "mkdocs.yml"]
    bad = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in files
        if "triton_kernels" not in path.relative_to(root).parts[1:]  # the symlink into triton_kernels/
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if spec_file.search(line) or role.search(line)
    ]
    assert not bad, "\n".join(bad)
