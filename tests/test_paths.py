"""The path matrix: every loss and reduction gives the eager result (and gradients) under
torch.jit.script, torch.compile, torch.export and both ONNX exporters in onnxruntime; every
weighting too under TorchScript, and on the slow paths for the representative cases
(``cases.path_combos``)."""

import io
import os
import warnings

import pytest
import torch
from cases import CASES, arity, combo_id, combos, make_inputs, path_combos

from exportable_loss.export import check_onnx_model, export_onnx, run_onnx

RTOL, ATOL = 1e-5, 1e-6
ONNX_RTOL, ONNX_ATOL = 1e-4, 1e-5
EXAMPLE_N, OTHER_NS = 6, (9, 11)
COMBOS = combos()  # TorchScript (fast): every combination
PATH_COMBOS = path_combos()  # compile, export, ONNX: every reduction of every case


def _grads(out, args):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    wrt = [a for a in args if a.requires_grad]
    return torch.autograd.grad((out * g).sum(), wrt)


def _inputs(case, n, weighting, sample_weight_grad=True):
    args = make_inputs(case, n, weighting=weighting)
    if len(args) > arity(case) and sample_weight_grad:
        args[arity(case)].requires_grad_(True)
    return args


def _assert_same(module, fn, case, weighting, ns=OTHER_NS):
    for n in ns:
        args = _inputs(case, n, weighting)
        ref = module(*args)
        ref_grads = _grads(ref, args)
        args = _inputs(case, n, weighting)
        out = fn(*args)
        torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
        for got, want in zip(_grads(out, args), ref_grads):
            # a gradient that cancels to about 0 (a weighted mean's, by a weight) keeps the
            # rounding of its terms: absolute tolerance in units of the gradient's scale
            scale = max(1.0, float(want.detach().abs().max())) if want.numel() else 1.0
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL * scale)


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_torchscript(combo, tmp_path):
    case, reduction, weighting = combo
    module = case.make(reduction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        reloaded = torch.jit.load(buffer)
    _assert_same(module, reloaded, case, weighting)


@pytest.mark.parametrize("combo", PATH_COMBOS, ids=combo_id)
def test_compile_aot_eager_no_recompile(combo):
    case, reduction, weighting = combo
    _check_compiled(case, reduction, weighting, "aot_eager")


@pytest.mark.parametrize("name", ["ce_weight_ls_spatial", "bce_logits", "mse", "kl"])
def test_compile_inductor(name):
    _check_compiled(CASES[name], "mean", "sample_weight", "inductor")


def _check_compiled(case, reduction, weighting, backend):
    torch._dynamo.reset()
    module = case.make(reduction)
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=backend)
    _assert_same(module, compiled, case, weighting, ns=(EXAMPLE_N,))
    with torch._dynamo.config.patch(error_on_recompile=True):
        _assert_same(module, compiled, case, weighting)


@pytest.mark.parametrize("combo", PATH_COMBOS, ids=combo_id)
def test_torch_export_dynamic_batch(combo, tmp_path):
    case, reduction, weighting = combo
    module = case.make(reduction)
    args = _inputs(case, EXAMPLE_N, weighting)
    batch = torch.export.Dim("batch", min=2)
    dims = tuple({0: batch} if a.dim() and case.is_batched(i) else None for i, a in enumerate(args))
    program = torch.export.export(module, args, dynamic_shapes=dims)
    path = os.path.join(tmp_path, "loss.pt2")
    torch.export.save(program, path)
    reloaded = torch.export.load(path).module()
    _assert_same(module, reloaded, case, weighting)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("combo", PATH_COMBOS, ids=combo_id)
def test_onnx_in_onnxruntime(combo, dynamo, tmp_path):
    case, reduction, weighting = combo
    module = case.make(reduction)
    args = _inputs(case, EXAMPLE_N, weighting)
    batch_inputs = [a.dim() > 0 and case.is_batched(i) for i, a in enumerate(args)]
    path = export_onnx(module, args, os.path.join(tmp_path, "loss.onnx"), dynamo=dynamo, batch_inputs=batch_inputs)
    for i, n in enumerate(OTHER_NS):
        args = _inputs(case, n, weighting)
        ref = module(*args).detach()
        (out,) = run_onnx(path, args)
        if i == 0:
            check_onnx_model(path, [ref])
        assert out.shape == ref.shape and out.dtype == ref.dtype
        torch.testing.assert_close(out, ref, rtol=ONNX_RTOL, atol=ONNX_ATOL)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", ["bce_logits", "focal"])
def test_onnx_logsigmoid_stays_finite_at_extreme_logits(name, dynamo, tmp_path):
    case = CASES[name]
    module = case.make("none")
    path = export_onnx(module, make_inputs(case, EXAMPLE_N), os.path.join(tmp_path, "loss.onnx"), dynamo=dynamo)
    x = torch.tensor([[-80.0, -25.0, 0.0], [30.0, 90.0, -1.0]]).repeat(3, 1)
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).repeat(3, 1)
    (out,) = run_onnx(path, (x, t))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, module(x, t), rtol=ONNX_RTOL, atol=ONNX_ATOL)
