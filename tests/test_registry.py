"""The package's structure: one home per loss, declarations that everything derives from, one
meaning of ``backend``, no import cycles."""

import ast
import inspect
import os

import pytest
import torch
from cases import CASES, loss_spec

import exportable_loss
from exportable_loss import catalog, functional, losses
from exportable_loss import triton_kernels as tk
from exportable_loss._registry import specs

PACKAGE = os.path.dirname(exportable_loss.__file__)
SPECS = list(specs().values())
IDS = [s.name for s in SPECS]


def _module_files():
    """Every module of the package (triton_kernels included) by dotted name."""
    roots = {"exportable_loss": PACKAGE, "exportable_loss.triton_kernels": os.path.realpath(tk.__path__[0])}
    out = {}
    for prefix, root in roots.items():
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "triton_kernels")]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), root)[:-3].replace(os.sep, ".")
                    name = prefix if rel == "__init__" else f"{prefix}.{rel.removesuffix('.__init__')}"
                    out[name] = os.path.join(folder, f)
    return out


def _top_level_imports(name, path, modules):
    """The package modules ``name`` imports when it is imported (not inside functions)."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for a in node.names:
                target = f"{base}.{a.name}"
                found.add(target if target in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    modules = _module_files()
    graph = {name: _top_level_imports(name, path, modules) for name, path in modules.items()}
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = trail[trail.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # the walk saw the families and the ops (so it can find a cycle among them)
    assert "exportable_loss._classification" in graph["exportable_loss.functional"]
    assert "exportable_loss._ops.cross_entropy" in graph["exportable_loss._classification"]


@pytest.mark.parametrize("facade", [functional, losses, exportable_loss])
def test_facades_hold_no_loss_code(facade):
    tree = ast.parse(open(facade.__file__).read())
    code = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not code, f"{facade.__name__} defines {[n.name for n in code]}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_one_home_per_loss(spec):
    """Function then module, in the family file; the façades re-export both."""
    assert spec.function.__module__ == spec.module.__module__
    source = open(inspect.getsourcefile(spec.module)).read()
    assert source.index(f"def {spec.function.__name__}(") < source.index(f"class {spec.module.__name__}(")
    assert getattr(functional, spec.function.__name__) is spec.function
    assert getattr(losses, spec.module.__name__) is spec.module
    assert getattr(exportable_loss, spec.module.__name__) is spec.module


def test_facades_export_exactly_the_declared_losses():
    assert sorted(losses.__all__) == sorted(s.module.__name__ for s in SPECS)
    assert sorted(functional.__all__) == sorted(s.function.__name__ for s in SPECS)
    assert list(catalog.LOSSES) == IDS


def test_every_loss_has_test_cases_and_the_cases_know_its_kernel():
    """A loss added without cases in tests/cases*.py fails here."""
    assert {loss_spec(c).name for c in CASES.values()} == set(IDS)
    kernels = {os.path.splitext(f)[0] for f in os.listdir(os.path.realpath(tk.__path__[0]))}
    for spec in SPECS:
        assert spec.kernel is None or spec.kernel in kernels


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_function_and_module_takes_the_shared_arguments(spec):
    params = inspect.signature(spec.function).parameters
    for name in ("reduction", "sample_weight", "normalizer", "backend"):
        assert name in params, f"{spec.function.__name__} has no {name}"
    init = inspect.signature(spec.module.__init__).parameters
    assert "reduction" in init and "backend" in init
    forward = inspect.signature(spec.module.forward).parameters
    assert "sample_weight" in forward and "normalizer" in forward


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_unknown_backend_or_reduction_is_a_value_error_everywhere(spec):
    entry = catalog.get(spec.name)
    with pytest.raises(ValueError, match=r"backend must be one of 'torch', 'triton', 'auto'; got 'tritn'"):
        entry.cls(backend="tritn", **dict(entry.kwargs))
    with pytest.raises(ValueError, match=r"reduction must be one of .*; got 'median'"):
        entry.cls(reduction="median", **dict(entry.kwargs))
    args = entry.example(6)
    options = {k: v for k, v in entry.kwargs if k in inspect.signature(spec.function).parameters}
    with pytest.raises(ValueError, match=r"backend must be one of 'torch', 'triton', 'auto'; got 'tritn'"):
        spec.function(*args, backend="tritn", **options)
    with pytest.raises(ValueError, match=r"reduction must be one of .*; got 'median'"):
        spec.function(*args, reduction="median", **options)


def test_pointwise_kinds_come_from_one_table():
    from exportable_loss._ops import pointwise

    assert tuple(pointwise._REFERENCES) == tk.POINTWISE_KINDS
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"kind must be one of .*'focal'; got 'focall'"):
        torch.ops.exportable_loss.pointwise_loss(x, x, None, None, None, None, "focall", 0.0, 0.0, "sum")
