"""The export toolkit: export() reports, the CLI, and training-step export run by onnxruntime."""

import os
import subprocess
import sys

import pytest
import torch

import exportable_loss as el
from exportable_loss import catalog
from exportable_loss.export import ExportError, export, export_onnx, run_onnx
from exportable_loss.export.demo_models import demo, example_input
from exportable_loss.export.step import export_training_step


@pytest.mark.parametrize("fmt, suffix", [("onnx", "onnx"), ("torchscript", "pt"), ("pt2", "pt2")])
def test_export_report(fmt, suffix, tmp_path):
    entry = catalog.get("cross_entropy")
    path = str(tmp_path / f"loss.{suffix}")
    report = export(entry.make("per_sample"), entry.example(6, sample_weight=True), path)
    assert report.format == fmt
    assert report.passed and os.path.exists(path)
    assert report.verified_batch != report.example_batch
    assert report.inputs[0].shape == ["batch", catalog.NUM_CLASSES] and report.outputs[0].shape == ["batch"]
    assert report.max_abs_error <= 1e-5
    assert "PASS" in str(report) and '"passed": true' in report.to_json()
    assert os.listdir(tmp_path) == [f"loss.{suffix}"]  # no temporary file left


def test_export_reports_a_mismatch(tmp_path):
    class Wrong(torch.nn.Module):  # reads a batch-dependent Python number: the trace bakes it in
        def forward(self, x):
            return x.sum() / float(x.shape[0])

    report = export(Wrong(), (torch.randn(6, 2),), str(tmp_path / "w.pt"), format="torchscript")
    assert report.passed  # script keeps the Python int dynamic
    report = export(Wrong(), (torch.randn(6, 2),), str(tmp_path / "w.onnx"), dynamo=False)
    assert not report.passed and "FAIL" in str(report)


def test_bad_inputs_and_destinations_are_clear_errors(tmp_path):
    entry = catalog.get("mse")
    x, t = entry.example(6)
    with pytest.raises(
        ExportError, match="the module rejects the example inputs: input and target must have the same shape"
    ):
        export(entry.make(), (x, t[:, :2]), str(tmp_path / "a.onnx"))
    with pytest.raises(
        ExportError, match="the module rejects the example inputs: input must be a floating-point tensor"
    ):
        export(entry.make(), (x.long(), t), str(tmp_path / "a.onnx"))
    with pytest.raises(ExportError, match="does not exist"):
        export(entry.make(), (x, t), str(tmp_path / "missing" / "a.onnx"))
    with pytest.raises(ExportError, match="format must be one of onnx, torchscript, pt2; got 'tflite'"):
        export(entry.make(), (x, t), str(tmp_path / "a.tflite"), format="tflite")
    with pytest.raises(ExportError, match="share dim 0"):
        export(entry.make(), (x, t[:4]), str(tmp_path / "a.onnx"))
    assert os.listdir(tmp_path) == []


def test_unwritable_folder(tmp_path, monkeypatch):
    # CI runs as root, which writes anywhere: the permission answer is simulated
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ExportError, match="not writable"):
        export(el.MSELoss(), catalog.get("mse").example(6), str(tmp_path / "a.onnx"))
    assert os.listdir(tmp_path) == []


class _Counting(torch.nn.Module):
    """MSE that counts its calls: an export that fails its checks must not have called it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, y):
        self.calls += 1
        return ((x - y) ** 2).mean()


def test_destination_and_format_are_checked_before_any_work(tmp_path):
    module, args = _Counting(), (torch.randn(6, 3), torch.randn(6, 3))
    cases = {
        "": "the output path is empty",
        str(tmp_path): f"the output path {tmp_path} is a folder",
        str(tmp_path / "no" / "x.onnx"): f"cannot write {tmp_path / 'no' / 'x.onnx'}: the folder .* does not exist",
        str(tmp_path / "x.bin"): "cannot tell the format of .*x.bin' from its extension; expected .onnx for onnx",
    }
    for path, message in cases.items():
        with pytest.raises(ExportError, match=message):
            export(module, args, path)
    with pytest.raises(ExportError, match="x.onnx' does not have the extension of format pt2"):
        export(module, args, str(tmp_path / "x.onnx"), format="pt2")
    with pytest.raises(
        ExportError,
        match=r"cannot tell the training step's format from .*s.pt2'; expected .onnx for onnx, .pte for executorch",
    ):
        export_training_step(demo("mlp"), _loss(), example_input("mlp", 6), str(tmp_path / "s.pt2"))
    assert module.calls == 0 and os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_have_the_usual_permissions(umask, mode, tmp_path):
    """Files get 0o666 & ~umask, as open() would give, not mkstemp's 0600."""
    old = os.umask(umask)
    try:
        entry = catalog.get("mse")
        for name in ("a.onnx", "a.pt", "a.pt2"):
            assert export(entry.make(), entry.example(6), str(tmp_path / name)).passed
        export_onnx(entry.make(), entry.example(6), str(tmp_path / "b.onnx"))
        export_training_step(demo("mlp"), _loss(), example_input("mlp", 6), str(tmp_path / "s.onnx"))
    finally:
        os.umask(old)
    assert {f: oct(os.stat(tmp_path / f).st_mode & 0o777) for f in os.listdir(tmp_path)} == {
        f: oct(mode) for f in ("a.onnx", "a.pt", "a.pt2", "b.onnx", "s.onnx")
    }


@pytest.mark.parametrize("fmt, dynamo", [("onnx", True), ("onnx", False), ("pt2", True)])
def test_a_per_sequence_loss_exported_at_16_tokens_runs_at_20(fmt, dynamo, tmp_path):
    """Named dynamic dimensions: the sequence length T is dynamic with the batch."""
    loss = el.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]), reduction="per_sample")
    g = torch.Generator().manual_seed(0)

    def batch(n, t):
        target = torch.randint(0, 3, (n, t), generator=g)
        target[:, t - 3 :] = -100
        return torch.randn(n, 3, t, generator=g), target

    path = str(tmp_path / f"seq.{fmt}")
    dynamic = {"input": {0: "batch", 2: "T"}, "target": {0: "batch", 1: "T"}}
    report = export(loss, batch(6, 16), path, dynamo=dynamo, dynamic_shapes=dynamic)
    assert report.passed and report.dynamic == {"batch": [6, 9], "T": [16, 19]}
    assert report.inputs[0].shape == ["batch", 3, "T"] and report.outputs[0].shape == ["batch"]
    x, t = batch(4, 20)
    got = run_onnx(path, (x, t))[0] if fmt == "onnx" else torch.export.load(path).module()(x, t)
    torch.testing.assert_close(got, loss(x, t), rtol=1e-5, atol=1e-6)  # eager: held to torch.nn elsewhere


def test_dynamic_shapes_errors(tmp_path):
    loss, x, t = el.CrossEntropyLoss(), torch.randn(6, 3, 16), torch.randint(0, 3, (6, 12))
    path = str(tmp_path / "a.onnx")
    cases = [
        ({"input": {2: "T"}, "target": {1: "T"}}, "dynamic dimension T has example sizes 16 and 12 \\(target\\)"),
        ({"logits": {0: "batch"}}, "dynamic_shapes names unknown inputs \\['logits'\\]; the inputs are input, target"),
        ({"input": {3: "T"}}, "dynamic dimension 3 of input is out of range: input has 3 dims"),
        ({"input": {0: "batch size"}}, "label must be an identifier such as 'batch'; got 'batch size'"),
        ([{0: "batch"}], "dynamic_shapes must have one entry per input \\(2\\); got 1"),
    ]
    for dynamic, message in cases:
        with pytest.raises(ExportError, match=message):
            export(loss, (x, t), path, dynamic_shapes=dynamic)
    with pytest.raises(ExportError, match="has example size 1; the tracers specialise sizes 0 and 1"):
        export(loss, (x[:, :, :1], t[:, :1]), path, dynamic_shapes={"input": {2: "T"}, "target": {1: "T"}})
    with pytest.raises(ExportError, match="give dynamic_shapes or batch_inputs, not both"):
        export(loss, (x, t[:, :1]), path, dynamic_shapes=[None, None], batch_inputs=[True, True])
    assert os.listdir(tmp_path) == []


def test_without_the_onnx_extra(tmp_path):
    """The losses need only torch: without onnx, onnxscript and onnxruntime the library imports
    and computes, and ONNX export and onnxruntime say which extra to install."""
    code = """
import sys
for name in ("onnx", "onnxscript", "onnxruntime"):
    sys.modules[name] = None  # as if not installed
import torch
import exportable_loss as el, exportable_loss.export, exportable_loss.cli, exportable_loss.matrix
x, t = torch.randn(4, 3), torch.randint(0, 3, (4,))
torch.testing.assert_close(el.CrossEntropyLoss()(x, t), torch.nn.functional.cross_entropy(x, t))
for call in (lambda: exportable_loss.export.export(el.MSELoss(), (x, x), "a.onnx"),
             lambda: exportable_loss.export.run_onnx("a.onnx", (x, x))):
    try:
        call()
    except ImportError as e:
        print(e)
print(exportable_loss.export.export(el.MSELoss(), (x, x), "a.pt").passed)
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "onnx is not installed; ONNX export and onnxruntime need it: pip install 'exportable-loss[onnx]'"
    )
    assert lines[1].startswith("onnxruntime is not installed") and "exportable-loss[gpu]" in lines[1]
    assert lines[2] == "True" and sorted(os.listdir(tmp_path)) == ["a.pt"]


# ------------------------------------------------------------------ training steps


def _loss(label_smoothing: float = 0.1):
    return el.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, 4), label_smoothing=label_smoothing)


@pytest.mark.parametrize("name", ["mlp", "transformer", "convnet"])
def test_training_step_gradients_match_autograd(name, tmp_path):
    model, loss = demo(name), _loss()
    first = next(model.parameters())
    first.requires_grad_(False)  # a frozen parameter: no gradient output, stays an initializer
    path = str(tmp_path / "step.onnx")
    names = export_training_step(model, loss, example_input(name, 6), path)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert names["outputs"] == ["loss", "per_sample_loss"] + [f"grad.{n}" for n, _ in trainable]
    x, t, s = example_input(name, 9, seed=1)
    outs = run_onnx(path, [p.detach() for _, p in trainable] + [x, t, s])
    ref = loss(model(x), t, s)
    grads = torch.autograd.grad(ref, [p for _, p in trainable])
    torch.testing.assert_close(outs[0], ref.detach(), rtol=1e-5, atol=1e-6)
    per_sample = el.CrossEntropyLoss(weight=loss.weight, label_smoothing=0.1, reduction="per_sample")(model(x), t, s)
    torch.testing.assert_close(outs[1], per_sample.detach(), rtol=1e-5, atol=1e-6)
    for got, want in zip(outs[2:], grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_training_step_with_parameters_as_initializers(tmp_path):
    model, loss = demo("mlp"), _loss()
    path = str(tmp_path / "step.onnx")
    names = export_training_step(model, loss, example_input("mlp", 6)[:2], path, params_as_inputs=False)
    assert names["inputs"] == ["input", "target"]
    x, t, _ = example_input("mlp", 9, seed=2)
    outs = run_onnx(path, [x, t])
    grads = torch.autograd.grad(loss(model(x), t), list(model.parameters()))
    for got, want in zip(outs[2:], grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_twenty_steps_in_onnxruntime_follow_pytorch(optimizer, tmp_path):
    """onnxruntime alone trains: 20 steps (weight decay, batches of varying size) end at
    torch.optim's parameters. SGD in float32 to 1e-5. AdamW divides by sqrt(v) + eps, so a
    near-zero gradient turns float32 rounding into a full-size update of either sign: it is
    compared in float64 (model, data, graph), where it agrees to 1e-9. Without label smoothing:
    with it, the exported float64 loss and gradients differ from PyTorch's by 3e-8 and 1e-8
    (the scalar 1 - 0.1 reaches the graph at float32 precision), and the parameters after 20
    AdamW steps by 3e-9."""
    dtype = torch.float64 if optimizer == "adamw" else torch.float32
    model, loss = demo("mlp").to(dtype), _loss(0.0 if optimizer == "adamw" else 0.1).to(dtype)
    kwargs = dict(lr=0.05, weight_decay=0.01)
    path = str(tmp_path / "train.onnx")
    x0, t0, s0 = example_input("mlp", 6)
    export_training_step(model, loss, (x0.to(dtype), t0, s0.to(dtype)), path, optimizer=optimizer, **kwargs)
    params = [p.detach().clone() for p in model.parameters()]
    k = len(params)
    state = [torch.zeros_like(p) for p in params] * 2 + [torch.tensor(0.0, dtype=dtype)] if optimizer == "adamw" else []
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW)(model.parameters(), **kwargs)
    for step in range(20):
        x, t, s = example_input("mlp", 7 + step % 3, seed=step)
        x, s = x.to(dtype), s.to(dtype)
        outs = run_onnx(path, params + state + [x, t, s])
        opt.zero_grad()
        loss(model(x), t, s).backward()
        opt.step()
        params = outs[2 + k : 2 + 2 * k]
        state = outs[2 + 2 * k :]
    tol = 1e-9 if optimizer == "adamw" else 1e-5
    for got, want in zip(params, model.parameters()):
        torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol)


def test_unknown_optimizer(tmp_path):
    with pytest.raises(ExportError, match="optimizer must be one of None, 'sgd', 'adamw'; got 'lamb'"):
        export_training_step(demo("mlp"), _loss(), example_input("mlp", 6), str(tmp_path / "s.onnx"), optimizer="lamb")


def test_training_step_refuses_batch_norm_in_training_mode(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(ExportError, match=r"batch norm 1 is in training mode.*\.eval\(\)"):
        export_training_step(model, _loss(), example_input("mlp", 6), str(tmp_path / "s.onnx"))
    assert os.listdir(tmp_path) == []


class _SDPA(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        q = self.proj(x).reshape(x.shape[0], 2, 1, 4)
        return self.head(torch.nn.functional.scaled_dot_product_attention(q, q, q).reshape(x.shape[0], 8))


def test_training_step_with_scaled_dot_product_attention(tmp_path):
    """SDPA's fused backward has no ONNX translation: the step exports its math formulation."""
    model, loss = _SDPA(), _loss()
    path = str(tmp_path / "s.onnx")
    export_training_step(model, loss, example_input("mlp", 6), path)
    x, t, s = example_input("mlp", 9, seed=1)
    outs = run_onnx(path, [p.detach() for p in model.parameters()] + [x, t, s])
    for got, want in zip(outs[2:], torch.autograd.grad(loss(model(x), t, s), list(model.parameters()))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_training_step_names_an_operator_without_onnx_translation(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv1d(8, 8, 1, groups=2), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    x, t, s = example_input("mlp", 6)
    with pytest.raises(ExportError, match="aten.convolution_backward has no ONNX translation for .*grouped.*groups=2"):
        export_training_step(model, _loss(), (x.unsqueeze(-1), t, s), str(tmp_path / "s.onnx"))
    assert os.listdir(tmp_path) == []


# the losses that take the model's output and one target (the others need boxes, a classifier
# matrix or a third tensor, which the demo MLP does not produce)
TWO_TENSOR_LOSSES = ["cross_entropy", "nll", "bce_with_logits", "mse", "l1", "smooth_l1", "huber", "kl_div", "focal"]
TWO_TENSOR_LOSSES += ["poisson_nll", "focal_tversky"]


@pytest.mark.parametrize("name", TWO_TENSOR_LOSSES)
def test_training_step_for_every_loss(name, tmp_path):
    """Each loss of the library inside a training step: onnxruntime's gradients are autograd's."""
    model = demo("mlp")
    entry = catalog.get(name)
    loss = entry.make("mean")
    x, t, s = example_input("mlp", 6)
    g = torch.Generator().manual_seed(3)

    def target(n):
        if name in ("cross_entropy", "nll"):
            return torch.randint(0, 4, (n,), generator=g)
        return torch.rand(n, 4, generator=g)  # probabilities: valid for BCE, focal, KL and regression

    if name == "cross_entropy":
        loss = el.CrossEntropyLoss(weight=torch.linspace(0.5, 1.5, 4), label_smoothing=0.1)
    if name == "bce_with_logits":  # the catalogue's pos_weight has 3 classes, the MLP 4
        loss = el.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5, 3.0]))
    path = str(tmp_path / "s.onnx")
    export_training_step(model, loss, (x, target(6), s), path)
    x, t, s = example_input("mlp", 9, seed=1)
    t = target(9)
    outs = run_onnx(path, [p.detach() for p in model.parameters()] + [x, t, s])
    ref = loss(model(x), t, s)
    torch.testing.assert_close(outs[0], ref.detach(), rtol=1e-5, atol=1e-6)
    for got, want in zip(outs[2:], torch.autograd.grad(ref, list(model.parameters()))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
