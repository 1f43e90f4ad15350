"""backend="triton" against backend="torch": every loss, reduction and weighting, forward and
gradient, plus the kernel-specific guarantees (multi-block rows, bf16, ignored rows, arbitrary
and stride-0 grad_output, in-place opt-in, determinism, every tracing path).

The main CI run executes these on the CPU without the Triton interpreter: the ops then compute
their PyTorch reference. CI runs this file again with TRITON_INTERPRET=1, where the real kernels
run (see test_kernels_really_run); on a machine with CUDA they run on the GPU.
"""

import os

import pytest
import torch
from cases import CASES, FUSED, combo_id, combos, make_inputs

import exportable_loss as el
from exportable_loss import triton_kernels as tk
from exportable_loss.export import export_onnx, run_onnx

RTOL, ATOL = 1e-5, 1e-6
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
COMBOS = combos(FUSED)


def _to(args, device=DEVICE):
    return tuple(a.detach().to(device).requires_grad_(a.requires_grad) for a in args)


def _run(case, reduction, backend, args, grad_seed=7, **kw):
    args = _to(args)
    out = case.make(reduction, backend=backend, **kw).to(DEVICE)(*args)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(DEVICE, out.dtype)
    (gx,) = torch.autograd.grad((out * g).sum(), args[0])
    return out, gx


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_matches_torch_backend(combo):
    case, reduction, weighting = combo
    args = make_inputs(case, 6, weighting=weighting)
    out, gx = _run(case, reduction, "triton", args)
    ref, gref = _run(case, reduction, "torch", args)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx, gref, rtol=RTOL, atol=ATOL)


def _vocab_inputs(n, num_classes, seed=0, probabilities=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, num_classes, generator=g) * 3
    if probabilities:
        return x, torch.softmax(torch.randn(n, num_classes, generator=g), 1)
    t = torch.randint(0, num_classes, (n,), generator=g)
    t[::3] = -100
    return x, t


@pytest.mark.parametrize("probabilities", [False, True], ids=["indices", "probabilities"])
@pytest.mark.parametrize("num_classes", [1, 2, 131, 300])
def test_cross_entropy_rows_span_several_blocks(num_classes, probabilities):
    """300 classes take three 128-wide blocks under the interpreter; 131 is prime."""
    x, t = _vocab_inputs(7, num_classes, probabilities=probabilities)
    w = torch.rand(num_classes, generator=torch.Generator().manual_seed(1)) + 0.5
    options = dict(weight=w, label_smoothing=0.1, z_loss=1e-3, logit_softcap=5.0)
    for reduction in ("none", "mean"):
        results = []
        for backend in ("triton", "torch"):
            xi = x.clone().to(DEVICE).requires_grad_(True)
            out = el.CrossEntropyLoss(reduction=reduction, backend=backend, **options).to(DEVICE)(xi, t.to(DEVICE))
            (g,) = torch.autograd.grad(out.sum(), xi)
            results.append((out, g))
        torch.testing.assert_close(results[0][0], results[1][0], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(results[0][1], results[1][1], rtol=RTOL, atol=ATOL)


def test_large_vocabulary_small_batch():
    x, t = _vocab_inputs(2, 262_144, probabilities=False)
    t[0] = 262_143
    out, gx = _run(CASES["ce"], "mean", "triton", (x.requires_grad_(True), t))
    ref, gref = _run(CASES["ce"], "mean", "torch", (x, t))
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx, gref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["ce", "ce_probs", "ce_zloss_softcap", "mse", "bce_logits", "focal", "kl"])
def test_bfloat16_against_float32_reference(name):
    """bf16 inputs accumulate in float32: within bf16 rounding (rtol 2e-2) of the fp32 result."""
    case = CASES[name]
    x, t = make_inputs(case, 6)
    t16 = t.bfloat16() if t.is_floating_point() else t
    for reduction in ("none", "mean"):
        out, gx = _run(case, reduction, "triton", (x.detach().bfloat16().requires_grad_(True), t16))
        ref, gref = _run(
            case,
            reduction,
            "torch",
            (x.detach().bfloat16().float().requires_grad_(True), t16.float() if t.is_floating_point() else t),
        )
        assert out.dtype == torch.bfloat16 and gx.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(gx.float(), gref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("reduction", ["none", "per_sample", "mean", "sum"])
def test_all_ignored_batch(reduction):
    x = torch.randn(6, 5, 3, device=DEVICE, requires_grad=True)
    t = torch.full((6, 3), -100, device=DEVICE)
    out = el.CrossEntropyLoss(reduction=reduction, backend="triton")(x, t)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.all(out == 0) and torch.all(g == 0)


def test_nan_logits_at_ignored_rows_and_zero_weight_samples_contribute_zero():
    x = torch.randn(6, 5, device=DEVICE)
    x[0] = float("nan")
    x[1] = float("inf")
    t = torch.randint(0, 5, (6,), device=DEVICE)
    t[0] = -100
    s = torch.ones(6, device=DEVICE)
    s[1] = 0
    xi = x.clone().requires_grad_(True)
    out = el.CrossEntropyLoss(backend="triton")(xi, t, s)
    (g,) = torch.autograd.grad(out, xi)
    assert torch.isfinite(out) and torch.isfinite(g).all()
    ref = el.CrossEntropyLoss()(x[2:], t[2:])
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)


def test_out_of_range_index_gives_nan_for_that_row_only():
    x = torch.randn(4, 5, device=DEVICE)
    out = el.CrossEntropyLoss(reduction="none", backend="triton")(x, torch.tensor([0, 9, -3, 4], device=DEVICE))
    assert torch.isnan(out[1]) and torch.isnan(out[2]) and torch.isfinite(out[[0, 3]]).all()


@pytest.mark.parametrize("name", ["ce_weight_ls_spatial", "mse", "focal"])
def test_arbitrary_and_stride_zero_grad_output(name):
    case = CASES[name]
    x, t = make_inputs(case, 6)
    for reduction in ("none", "per_sample"):
        grads = []
        for backend in ("triton", "torch"):
            xi = x.detach().clone().to(DEVICE).requires_grad_(True)
            out = case.make(reduction, backend=backend).to(DEVICE)(xi, t.to(DEVICE))
            expanded = torch.full((1,) * out.dim(), 2.5, device=DEVICE).expand(out.shape)
            assert 0 in expanded.stride() or out.numel() <= 1
            (g,) = torch.autograd.grad(out, xi, expanded)
            grads.append(g)
        torch.testing.assert_close(grads[0], grads[1], rtol=RTOL, atol=ATOL)


def test_inputs_unchanged_and_in_place_opt_in():
    x, t = _vocab_inputs(6, 300)
    x = x.to(DEVICE)
    t = t.to(DEVICE)
    xi = x.clone().requires_grad_(True)
    out = el.CrossEntropyLoss(backend="triton")(xi, t)
    (g,) = torch.autograd.grad(out, xi)
    assert torch.equal(xi.detach(), x)
    # opt-in: the gradient lands in the logits' memory (their values are gone afterwards)
    xj = x.clone().requires_grad_(True)
    out = el.CrossEntropyLoss(backend="triton", inplace_backward=True)(xj, t)
    (g_inplace,) = torch.autograd.grad(out, xj)
    torch.testing.assert_close(g_inplace, g, rtol=RTOL, atol=ATOL)
    if tk.can_run(x):
        assert g_inplace.data_ptr() == xj.data_ptr()


@pytest.mark.parametrize("name", ["ce_weight_ls_spatial", "mse", "bce_logits"])
def test_deterministic_bits(name):
    case = CASES[name]
    x, t = make_inputs(case, 6)
    runs = [_run(case, "mean", "triton", (x, t)) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_gradient_to_target_or_sample_weight_is_a_clear_error():
    x = torch.randn(6, 5, device=DEVICE, requires_grad=True)
    y = torch.rand(6, 5, device=DEVICE, requires_grad=True)
    with pytest.raises(ValueError, match="computes no gradient for target"):
        el.MSELoss(backend="triton")(x, y)
    with pytest.raises(ValueError, match="computes no gradient for sample_weight"):
        el.MSELoss(backend="triton")(x, y.detach(), torch.ones(6, device=DEVICE, requires_grad=True))


def test_auto_backend_picks_triton_only_on_a_gpu():
    from exportable_loss._dispatch import use_triton as _use_triton

    x = torch.zeros(2, 3)
    assert _use_triton("auto", x) is False
    assert _use_triton("triton", x) is True
    assert _use_triton("triton", x.double()) is False  # the kernels accumulate in float32
    if torch.cuda.is_available():
        assert _use_triton("auto", x.cuda()) is tk.can_run(x.cuda())


def test_kernels_really_run(monkeypatch):
    """Where Triton can run here, the op launches the kernels (not the reference)."""
    x = torch.randn(6, 5, device=DEVICE, requires_grad=True)
    if not tk.can_run(x):
        assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and DEVICE == "cpu"
        pytest.skip("no GPU and no TRITON_INTERPRET=1: the ops compute their reference")
    calls = []
    ce = tk.kernels("cross_entropy")
    pw = tk.kernels("pointwise")
    launchers = [
        (ce, "cross_entropy_reduced_forward"),
        (ce, "cross_entropy_backward"),
        (pw, "pointwise_reduced_forward"),
    ]
    for module, name in launchers:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    out = el.CrossEntropyLoss(backend="triton")(x, torch.randint(0, 5, (6,), device=DEVICE))
    out.backward()
    el.MSELoss(backend="triton")(x.detach(), torch.zeros_like(x))
    assert calls == [name for _, name in launchers]


# ------------------------------------------------------------------ every path with the op inside

PATH_CASES = ["ce_weight_ls_spatial", "ce_probs", "mse", "focal", "kl"]


def _path_inputs(case, n):
    return _to(make_inputs(case, n, weighting="sample_weight"))


def _check_same(module, fn, case, ns=(9, 11)):
    for n in ns:
        args = _path_inputs(case, n)
        ref = module(*args)
        (gref,) = torch.autograd.grad(ref.sum(), args[0])
        args = _path_inputs(case, n)
        out = fn(*args)
        (gout,) = torch.autograd.grad(out.sum(), args[0])
        torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(gout, gref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", PATH_CASES)
def test_compile_fullgraph_dynamic_without_recompiles(name):
    case = CASES[name]
    torch._dynamo.reset()
    module = case.make("mean", backend="triton").to(DEVICE)
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    _check_same(module, compiled, case, ns=(6,))
    with torch._dynamo.config.patch(error_on_recompile=True):
        _check_same(module, compiled, case)


@pytest.mark.parametrize("name", PATH_CASES)
def test_torch_export_keeps_the_op(name, tmp_path):
    case = CASES[name]
    module = case.make("per_sample", backend="triton").to(DEVICE)
    args = _path_inputs(case, 6)
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(module, args, dynamic_shapes=tuple({0: batch} for _ in args))
    assert "exportable_loss." in str(program.graph)
    torch.export.save(program, tmp_path / "loss.pt2")
    _check_same(module, torch.export.load(tmp_path / "loss.pt2").module(), case)


@pytest.mark.parametrize("name", PATH_CASES)
def test_torchscript_calls_the_op(name):
    case = CASES[name]
    module = case.make("sum", backend="triton").to(DEVICE)
    scripted = torch.jit.script(module)
    assert "exportable_loss::" in str(scripted.code) or "exportable_loss." in str(scripted.inlined_graph)
    _check_same(module, scripted, case)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", PATH_CASES)
def test_onnx_export_has_standard_operators_only(name, dynamo, tmp_path):
    case = CASES[name]
    module = case.make("mean", backend="triton")
    path = export_onnx(module, make_inputs(case, 6, weighting="sample_weight"), str(tmp_path / "l.onnx"), dynamo=dynamo)
    args = make_inputs(case, 9, weighting="sample_weight")
    (out,) = run_onnx(path, args)
    torch.testing.assert_close(out, module(*args).detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("probabilities", [False, True], ids=["indices", "probabilities"])
def test_fused_linear_cross_entropy_matches_torch_backend(probabilities):
    """The Triton backend of FusedLinearCrossEntropyLoss: each chunk's loss and its gradient
    (written over the chunk's logits) from the cross-entropy kernels, rows spanning blocks."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, generator=g).to(DEVICE).requires_grad_(True)
    w = (torch.randn(300, 16, generator=g) * 0.5).to(DEVICE).requires_grad_(True)
    b = torch.randn(300, generator=g).to(DEVICE).requires_grad_(True)
    if probabilities:
        t = torch.softmax(torch.randn(4, 300, 3, generator=g), 1).to(DEVICE)
    else:
        t = torch.randint(0, 300, (4, 3), generator=g)
        t[::2, 1] = -100
        t = t.to(DEVICE)
    options = dict(weight=torch.rand(300, generator=g).to(DEVICE) + 0.5, label_smoothing=0.1, z_loss=1e-3)
    before = [a.detach().clone() for a in (x, w, b)]
    for reduction in ("none", "mean"):
        for extra in ({}, {"logit_softcap": 4.0}):
            results = []
            for backend in ("triton", "torch"):
                loss = el.FusedLinearCrossEntropyLoss(
                    reduction=reduction, chunk_size=5, backend=backend, **options, **extra
                )
                out = loss.to(DEVICE)(x, w, t, b)
                grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
                results.append((out, *torch.autograd.grad((out * grad_out).sum(), (x, w, b))))
            for got, want in zip(*results):
                torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-5)
    for a, c in zip((x, w, b), before):
        assert torch.equal(a.detach(), c)
