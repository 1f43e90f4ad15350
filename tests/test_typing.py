"""The package ships its type information (py.typed): mypy checks a user's script against our
annotations, accepting correct use and catching real mistakes."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("mypy")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = """
import torch
from exportable_loss import CrossEntropyLoss, MSELoss
from exportable_loss.distributed import step_normalizer
from exportable_loss.export import ExportReport, export

loss = CrossEntropyLoss(weight=torch.ones(5), label_smoothing=0.1, reduction="per_sample")
value: torch.Tensor = loss(torch.randn(6, 5), torch.randint(0, 5, (6,)), sample_weight=torch.rand(6))
report: ExportReport = export(MSELoss(), (torch.randn(6, 3), torch.randn(6, 3)), "mse.onnx")
worst: float = report.max_abs_error
"""

BAD = """
import torch
from exportable_loss import CrossEntropyLoss
from exportable_loss.export import export

loss = CrossEntropyLoss(label_smoothing="0.1")
report = export(loss, (torch.randn(6, 5), torch.randint(0, 5, (6,))), 3)
worst: int = report.max_abs_error
"""


def test_mypy_checks_a_users_script_against_the_package(tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)
    # on PYTHONPATH the package is found as an installed one: mypy reads it only with py.typed
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".mypy_cache"), "good.py", "bad.py"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert errors == [
        'bad.py:6: error: Argument "label_smoothing" to "CrossEntropyLoss" has incompatible type "str"; expected "float"  [arg-type]',
        'bad.py:7: error: Argument 3 to "export" has incompatible type "int"; expected "str"  [arg-type]',
        'bad.py:8: error: Incompatible types in assignment (expression has type "float", variable has type "int")  [assignment]',
    ], result.stdout
