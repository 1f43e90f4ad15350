"""Training steps for ExecuTorch's training runtime: the runtime's losses, gradients and SGD
updates against autograd and torch.optim.SGD, for the demo models and every loss a training step
takes, on both backends. Skipped without the ``executorch`` extra."""

import copy
import math
import os
import subprocess
import sys

import pytest
import torch

import exportable_loss as el
from exportable_loss import catalog
from exportable_loss.export import ExportError
from exportable_loss.export import executorch as et
from exportable_loss.export.demo_models import DEMOS, demo, example_input
from exportable_loss.export.step import export_training_step, step_losses

needs_executorch = pytest.mark.skipif(not et.available(), reason="needs the executorch extra")
# the runtime marks its training API experimental on every call
pytestmark = pytest.mark.filterwarnings("ignore:This API is experimental")


def _ce(backend: str = "torch") -> torch.nn.Module:
    return el.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, 4), label_smoothing=0.1, backend=backend)


def test_without_executorch_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(et, "available", lambda: False)
    with pytest.raises(
        ImportError, match=r"pip install --no-deps executorch==1\.5\.1 && pip install 'exportable-loss\[executorch\]'"
    ):
        et.export_executorch_step(demo("mlp"), _ce(), example_input("mlp", 6), str(tmp_path / "s.pte"))
    assert os.listdir(tmp_path) == []


MAX_BATCH = 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(name): (path, model, loss, report) of a demo model's step, exported once per
    module (a lowering takes seconds)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            model, loss = demo(name), _ce()
            path = str(tmp_path_factory.mktemp(name) / "step.pte")
            report = et.export_executorch_step(
                model,
                loss,
                example_input(name, 6),
                path,
                max_batch=MAX_BATCH,
                batch=lambda n, s: example_input(name, n, s),
            )
            cache[name] = (path, model, loss, report)
        return cache[name]

    return get


@needs_executorch
@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_models_train_in_the_runtime_as_in_pytorch(name, exported):
    """The report's checks, and the same checks done here on the raw runtime: the loss, the
    per-sample losses and the gradients at two batch sizes equal autograd's."""
    from executorch.extension.training import _load_for_executorch_for_training

    path, model, loss, report = exported(name)
    assert report.passed, str(report)
    assert report.inputs == ["input", "target", "sample_weight"]
    assert report.outputs == ["loss", "per_sample_loss"]
    assert report.parameters == [f"model.{n}" for n, _ in model.named_parameters()]
    assert [k for k in report.errors if k.startswith("gradients")] == ["gradients at batch 2", "gradients at batch 12"]
    assert max(report.errors.values()) <= 1e-5

    runtime = _load_for_executorch_for_training(path)
    per_sample = el.CrossEntropyLoss(weight=loss.weight, label_smoothing=0.1, reduction="per_sample")
    for n in (3, MAX_BATCH):
        x, t, s = example_input(name, n, seed=n)
        got_loss, got_per_sample = runtime.forward_backward("forward", (x, t, s))
        want = loss(model(x), t, s)
        torch.testing.assert_close(got_loss, want.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(got_per_sample, per_sample(model(x), t, s).detach(), rtol=0, atol=1e-6)
        grads = runtime.named_gradients()
        names = [n for n, _ in model.named_parameters()]
        for pname, g in zip(names, torch.autograd.grad(want, list(model.parameters()))):
            torch.testing.assert_close(grads[f"model.{pname}"], g, rtol=0, atol=1e-5)


@needs_executorch
def test_twenty_sgd_steps_in_the_runtime_follow_torch_optim(exported):
    """ExecuTorch's SGD (momentum, weight decay) on the parameters the program holds, over
    batches of varying size, ends where torch.optim.SGD ends; checked here outside the report."""
    path, model, loss, _ = exported("mlp")
    step = et.ExecuTorchStep(path)
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    for i in range(20):
        x, t, s = example_input("mlp", 2 + i % (MAX_BATCH - 1), seed=i)
        step.forward_backward(x, t, s)
        if i == 0:
            sgd = step.sgd(lr=0.05, momentum=0.9, weight_decay=0.01)
        sgd.step(step.named_gradients())
        opt.zero_grad()
        loss(reference(x), t, s).backward()
        opt.step()
    held = step.named_parameters()
    moved = 0.0
    for name, p in reference.named_parameters():
        torch.testing.assert_close(held[f"model.{name}"], p.detach(), rtol=0, atol=1e-5)
        moved = max(moved, (p - dict(model.named_parameters())[name]).abs().max().item())
    assert moved > 1e-2  # the parameters did move: the comparison is not of two unchanged copies


@needs_executorch
def test_a_wrong_program_fails_its_report(exported):
    """The verification can fail: checked against a model other than the exported one."""
    path, _, loss, _ = exported("mlp")
    other = demo("mlp", seed=1)
    errors = et.verify_executorch_step(path, other, loss, et.resampled(example_input("mlp", 6)), [2, 8])
    assert max(errors.values()) > 1e-3


@needs_executorch
def test_batches_above_max_batch_are_refused_with_the_reason(exported):
    from executorch.extension.training import _load_for_executorch_for_training

    path, _, _, report = exported("mlp")
    assert f"batch 2 to {MAX_BATCH}" in str(report)
    step = et.ExecuTorchStep(path)
    assert step.max_batch == MAX_BATCH
    step.forward_backward(*example_input("mlp", MAX_BATCH))
    with pytest.raises(
        ValueError, match=rf"a batch of 13 exceeds this training step's max_batch={MAX_BATCH}.*--max-batch"
    ):
        step.forward_backward(*example_input("mlp", MAX_BATCH + 1))
    with pytest.raises(RuntimeError):  # the runtime itself refuses, with a bare error code
        _load_for_executorch_for_training(path).forward_backward("forward", example_input("mlp", MAX_BATCH + 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(optimizer="adamw"), "ExecuTorch's training runtime updates with SGD"),
        (dict(path="s.onnx", momentum=0.9), "momentum is for ExecuTorch's SGD; the ONNX graph's SGD update has none"),
        (
            dict(path="s.pt2"),
            r"cannot tell the training step's format from '.*s.pt2'; expected .onnx for onnx, .pte for executorch",
        ),
        (dict(format="tflite"), "a training step's format is one of onnx, executorch; got 'tflite'"),
    ],
)
def test_bad_training_step_arguments_before_any_work(kwargs, message, tmp_path):
    kwargs["path"] = str(tmp_path / kwargs.get("path", "s.pte"))
    with pytest.raises(ExportError, match=message):
        export_training_step(demo("mlp"), _ce(), example_input("mlp", 6), **kwargs)
    assert os.listdir(tmp_path) == []


@needs_executorch
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_batch=1), "max_batch must be an integer of at least 2; got 1"),
        (dict(max_batch=4), r"the example batch \(6\) is above max_batch=4"),
        (
            dict(path="s.onnx"),
            r"'s.onnx' does not have the extension of format executorch; expected .onnx for onnx, .pte for executorch",
        ),
    ],
)
def test_bad_arguments(kwargs, message, tmp_path):
    args = {"path": str(tmp_path / "s.pte"), "max_batch": 8, **kwargs}
    if not os.path.isabs(args["path"]):
        args["path"] = str(tmp_path / args["path"])
    with pytest.raises(ExportError, match=message.replace("'s.onnx'", f"'{args['path']}'")):
        et.export_executorch_step(demo("mlp"), _ce(), example_input("mlp", 6), **args)
    assert os.listdir(tmp_path) == []


@needs_executorch
def test_an_operator_without_executorch_lowering_is_named_in_one_line(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(
        ExportError,
        match=r"^[^\n]*aten._native_batch_norm_legit_functional[^\n]*batch norm in training mode[^\n]*\.eval\(\)[^\n]*$",
    ):
        et.export_executorch_step(model, _ce(), example_input("mlp", 6), str(tmp_path / "s.pte"))
    assert os.listdir(tmp_path) == []


@needs_executorch
def test_one_dimensional_convolutions_train(tmp_path):
    """ExecuTorch's convolution backward kernel runs 2-d convolutions only (a 1-d one lowers,
    then fails at run time): a 1-d one is rewritten as convolutions; a grouped one is refused."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(16, 4)
    )
    x, t, s = example_input("mlp", 6)
    example = (x.reshape(6, 2, 4), t, s)
    report = et.export_executorch_step(model, _ce(), example, str(tmp_path / "s.pte"), max_batch=8)
    assert report.passed, str(report)
    model[0] = torch.nn.Conv1d(2, 4, 3, padding=1, groups=2)
    with pytest.raises(ExportError, match=r"runs 2-d convolutions.*got a 1-d one \(groups=2, transposed=False\)"):
        et.export_executorch_step(model, _ce(), example, str(tmp_path / "g.pte"), max_batch=8)
    assert not (tmp_path / "g.pte").exists()


@needs_executorch
def test_cli_exports_a_step_that_a_fresh_runtime_trains(tmp_path):
    """The command as a user runs it, in its own process; the program it wrote then trains here
    as the demo model does in PyTorch."""
    path = str(tmp_path / "step.pte")
    command = ["export-step", "--loss", "huber", "--backend", "triton", "--format", "executorch", "--max-batch", "8"]
    result = subprocess.run(
        [sys.executable, "-m", "exportable_loss", *command, "-o", path],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"PASS executorch training step {path}")
    assert "parameters after 20 SGD steps (lr 0.01, momentum 0.9, weight decay 0.01)" in result.stdout
    assert "cpuinfo" not in result.stderr  # the runtime's CPU probing stays off the terminal

    step, model, loss = et.ExecuTorchStep(path), demo("mlp"), el.HuberLoss()
    x = example_input("mlp", 8, seed=5)[0]
    target, weight = torch.rand(8, 4), torch.rand(8)
    got, per_sample = step.forward_backward(x, target, weight)
    want = loss(model(x), target, weight)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-6)
    grads = dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(want, list(model.parameters()))))
    for name, g in grads.items():
        torch.testing.assert_close(step.named_gradients()[f"model.{name}"], g, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ every loss, both backends


class _Affine(torch.nn.Module):
    """out = x * weight + bias, per element: near its input, so the catalogue's example inputs
    (valid boxes, logits) stay valid while every element has a gradient."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(1 + 0.1 * torch.randn(shape, generator=g))
        self.bias = torch.nn.Parameter(0.1 * torch.randn(shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def _step_losses():
    for name in step_losses():
        for backend in catalog.get(name).backends:
            yield pytest.param(name, backend, id=f"{name}-{backend}")


@needs_executorch
@pytest.mark.parametrize("name, backend", list(_step_losses()))
def test_every_loss_on_every_backend(name, backend, tmp_path):
    entry = catalog.get(name)
    example = entry.example(6, sample_weight=True)
    model = _Affine(example[0].shape[1:])
    loss = entry.make("mean", backend)
    report = et.export_executorch_step(model, loss, example, str(tmp_path / "s.pte"), max_batch=8)
    assert report.passed, str(report)
    assert all(math.isfinite(e) for e in report.errors.values())
