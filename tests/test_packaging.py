"""The package as pip installs it: a wheel with its type marker, the losses needing only torch,
and the onnxruntime / onnxruntime-gpu choice never installing both."""

import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _names(requirements):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_onnxruntime_or_onnxruntime_gpu_never_both():
    project = _project()["project"]
    extras = project["optional-dependencies"]
    assert _names(project["dependencies"]) == {"torch"}  # the losses need only torch
    assert {"onnx", "onnxscript", "onnxruntime"} <= _names(extras["onnx"])
    assert {"onnx", "onnxscript", "onnxruntime-gpu"} <= _names(extras["gpu"]) and "onnxruntime" not in _names(
        extras["gpu"]
    )
    assert "onnxruntime-gpu" not in _names(extras["onnx"]) and "matplotlib" in _names(extras["bench"])
    assert "mypy" in _names(extras["test"])


def test_executorch_comes_without_the_dependencies_it_never_uses():
    """The executorch extra holds what a training step imports; executorch itself is installed
    with --no-deps (its metadata asks for torchao, coremltools, ...), in CI and in the error's
    advice, at the version CI pins."""
    from exportable_loss.export.executorch import INSTALL_HINT

    extra = _names(_project()["project"]["optional-dependencies"]["executorch"])
    assert extra == {"numpy", "flatbuffers", "ruamel.yaml", "tabulate"}
    with open(os.path.join(ROOT, "constraints", "ci.txt")) as f:
        (pin,) = [line.strip() for line in f if line.startswith("executorch==")]
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert "--no-deps executorch" in ci and "executorch]" in ci
    assert f"pip install --no-deps {pin} && pip install 'exportable-loss[executorch]'" == INSTALL_HINT


def test_the_wheel_ships_py_typed(tmp_path):
    """setuptools >= 77 (the SPDX license string) builds a wheel holding the py.typed marker."""
    requires = _project()["build-system"]["requires"]
    assert requires == ["setuptools>=77"]
    source = tmp_path / "source"  # a copy: the build leaves build/ and *.egg-info behind
    skip = shutil.ignore_patterns("__pycache__", "triton_kernels")  # the source tree's link to ../triton_kernels
    for folder in ("exportable_loss", "triton_kernels"):
        shutil.copytree(os.path.join(ROOT, folder), source / folder, ignore=skip)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, file), source / file)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), source],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    assert "exportable_loss/py.typed" in names and "exportable_loss/triton_kernels/__init__.py" in names
    metadata = zipfile.ZipFile(tmp_path / wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: BSD-3-Clause" in metadata
    assert re.search(r"^Requires-Dist: onnxruntime-gpu.*extra == \"gpu\"", metadata, flags=re.M)
