"""The export toolkit: export() reports, the CLI, and training-step export run by onnxruntime."""

import os
import subprocess
import sys

import pytest
import torch

import exportable_loss as el
from exportable_loss import catalog
from exportable_loss.cli import main
from exportable_loss.export import ExportError, export, run_onnx
from exportable_loss.export.demo_models import demo, example_input
from exportable_loss.export.step import export_training_step


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_report(fmt, tmp_path):
    entry = catalog.get("cross_entropy")
    path = str(tmp_path / f"loss.{fmt}")
    report = export(entry.make("per_sample"), entry.example(6, sample_weight=True), path, format=fmt)
    assert report.passed and os.path.exists(path)
    assert report.verified_batch != report.example_batch
    assert report.inputs[0].shape == ["batch", catalog.NUM_CLASSES] and report.outputs[0].shape == ["batch"]
    assert report.max_abs_error <= 1e-5
    assert "PASS" in str(report) and '"passed": true' in report.to_json()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".exporting-")]


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


def test_cli_export_and_errors(tmp_path, capsys):
    out = str(tmp_path / "l.onnx")
    assert main(["export", "focal", "--reduction", "sum", "--sample-weight", "-o", out]) == 0
    assert "PASS onnx (dynamo)" in capsys.readouterr().out
    assert main(["export", "huber", "--format", "pt2", "--json", "-o", str(tmp_path / "h.pt2")]) == 0
    assert '"format": "pt2"' in capsys.readouterr().out
    assert main(["export", "nope", "-o", out]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("exportable-loss: error: unknown loss 'nope'; known losses: cross_entropy")
        and "Traceback" not in err
    )
    assert main(["export", "mse", "--reduction", "batchmean", "-o", out]) == 2
    assert main(["export", "mse", "-o", str(tmp_path / "no" / "x.onnx")]) == 2
    assert sorted(os.listdir(tmp_path)) == ["h.pt2", "l.onnx"]


def test_cli_matrix_subset(tmp_path, capsys):
    md = str(tmp_path / "matrix.md")
    code = main(
        ["matrix", "--losses", "kl_div", "--reductions", "batchmean", "--backends", "torch", "triton", "-o", md]
    )
    assert code == 0
    table = open(md).read()
    assert table.count("| pass |") == 10 and "FAIL" not in table


def test_python_m_entry_point(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exportable_loss",
            "export",
            "l1",
            "--format",
            "torchscript",
            "-o",
            str(tmp_path / "x.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "PASS torchscript" in result.stdout


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
