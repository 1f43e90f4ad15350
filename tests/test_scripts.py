"""The runnable scripts in export_scripts/ do what their docstrings say (numbers checked)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_export_loss_onnx(tmp_path):
    out = _run("export_scripts/export_loss_onnx.py", "--out", str(tmp_path))
    errors = [float(e) for e in re.findall(r"(\d\.\d\de[-+]\d\d)\s*$", out, flags=re.M)]
    assert len(errors) == 4 and max(errors) < 1e-5
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".onnx")]) == 4


def test_export_training_step(tmp_path):
    out = _run("export_scripts/export_training_step.py", "--out", str(tmp_path / "step.onnx"))
    assert float(re.search(r"max gradient difference over \d+ parameters: (\S+)", out).group(1)) < 1e-5


def test_train_in_onnxruntime():
    out = _run("export_scripts/train_in_onnxruntime.py", "--optimizer", "adamw")
    diffs = [float(d) for d in re.findall(r"max parameter difference to PyTorch (\S+)", out)]
    assert len(diffs) == 20 and max(diffs) < 1e-9


def test_ddp_gradient_accumulation_example_with_torchrun():
    """The docs' command: 2 CPU processes (gloo), uneven padding, exact loss and parameters."""
    out = _run(
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "export_scripts/ddp_grad_accum.py", "--steps", "3",
    )  # fmt: skip
    steps = re.findall(r"loss (\S+) \(single process, full batch: (\S+)\); max parameter difference (\S+)", out)
    assert len(steps) == 3
    for logged, reference, diff in steps:
        assert abs(float(logged) - float(reference)) < 2e-6 and float(diff) < 1e-6


def test_vocab_parallel_example_with_torchrun():
    """2 CPU processes, the vocabulary split between them: the loss of the whole vocabulary and the
    single-process parameters after every step (the linear form; the logits form is the same
    check in tests/test_vocab_parallel.py)."""
    out = _run(
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "export_scripts/vocab_parallel_lm.py", "--steps", "2",
    )  # fmt: skip
    steps = re.findall(r"loss (\S+) \(single process, whole vocabulary: (\S+)\); max parameter difference (\S+)", out)
    assert len(steps) == 2
    for logged, reference, diff in steps:
        assert abs(float(logged) - float(reference)) < 2e-6 and float(diff) < 1e-6
