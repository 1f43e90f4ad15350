"""FusedLinearCrossEntropyLoss against the unfused torch.nn form, chunking, memory and errors.

Every reduction, weighting and tracing path runs through the generic tests (the two
``linear_ce`` cases of tests/cases_linear_ce.py); the Triton kernels inside it run in
tests/test_triton.py."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import exportable_loss as el
from exportable_loss import functional as LF
from exportable_loss._ops.linear_cross_entropy import auto_chunk_rows
from exportable_loss.bench.linear_ce import working_memory

RTOL, ATOL = 1e-5, 1e-5


def _problem(shape=(5, 3), hidden=8, vocab=37, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, hidden, generator=g, requires_grad=True)
    w = (torch.randn(vocab, hidden, generator=g) * 0.5).requires_grad_(True)
    b = torch.randn(vocab, generator=g, requires_grad=True) if bias else None
    t = torch.randint(0, vocab, shape, generator=g)
    t.view(-1)[::4] = -100
    return x, w, b, t


def _unfused(x, w, b, t, reduction, **kw):
    logits = F.linear(x, w, b)
    if logits.dim() > 2:
        logits = logits.movedim(-1, 1)
    return nn.CrossEntropyLoss(reduction=reduction, **kw)(logits, t)


def _grads(out, tensors, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * g).sum(), [a for a in tensors if a is not None])


@pytest.mark.parametrize("chunk_size", [1, 3, None, 1000])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(11,), (5, 3)], ids=["tokens", "batch_x_time"])
def test_matches_linear_then_torch_nn_cross_entropy(shape, reduction, chunk_size):
    x, w, b, t = _problem(shape)
    cw = torch.rand(37, generator=torch.Generator().manual_seed(3)) + 0.5
    kw = dict(weight=cw, label_smoothing=0.1)
    ours = el.FusedLinearCrossEntropyLoss(reduction=reduction, chunk_size=chunk_size, **kw)(x, w, t, b)
    ref = _unfused(x, w, b, t, reduction, **kw)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
    for got, want in zip(_grads(ours, (x, w, b)), _grads(ref, (x, w, b))):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.skipif(not hasattr(F, "linear_cross_entropy"), reason="this torch has no F.linear_cross_entropy")
def test_matches_torch_linear_cross_entropy():
    x, w, b, t = _problem((13,), bias=False)
    for reduction in ("none", "mean", "sum"):
        ours = LF.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.2, chunk_size=4)
        ref = F.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.2)
        torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
        for got, want in zip(_grads(ours, (x, w)), _grads(ref, (x, w))):
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_probability_targets_and_every_option_match_cross_entropy_on_the_logits():
    x, w, b, _ = _problem((4, 3))
    q = torch.softmax(torch.randn(4, 37, 3, generator=torch.Generator().manual_seed(5)), 1)
    cw = torch.rand(37) + 0.5
    options = dict(weight=cw, label_smoothing=0.1, z_loss=0.01, logit_softcap=2.5)
    for reduction in ("per_sample", "mean"):
        ours = LF.linear_cross_entropy(x, w, q, b, reduction=reduction, chunk_size=5, **options)
        ref = LF.cross_entropy(F.linear(x, w, b).movedim(-1, 1), q, reduction=reduction, **options)
        torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
        for got, want in zip(_grads(ours, (x, w, b)), _grads(ref, (x, w, b))):
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_target_that_requires_grad_takes_the_unfused_form_and_gets_its_gradient():
    x, w, b, _ = _problem((6,))
    q = torch.softmax(torch.randn(6, 37), 1).requires_grad_(True)
    (gq,) = torch.autograd.grad(LF.linear_cross_entropy(x, w, q, b), q)
    (ref,) = torch.autograd.grad(F.cross_entropy(F.linear(x, w, b), q), q)
    torch.testing.assert_close(gq, ref)


def test_half_precision_against_float32():
    x, w, b, t = _problem((8, 3), hidden=16, vocab=300)
    ref = el.FusedLinearCrossEntropyLoss()(x, w, t, b)
    xb, wb, bb = (a.detach().bfloat16().requires_grad_(True) for a in (x, w, b))
    out = el.FusedLinearCrossEntropyLoss(chunk_size=5)(xb, wb, t, bb)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    (gw,) = torch.autograd.grad(out, wb)
    (gw_ref,) = torch.autograd.grad(ref, w)
    assert gw.dtype == torch.bfloat16
    torch.testing.assert_close(gw.float(), gw_ref, rtol=5e-2, atol=5e-3)


def test_autocast_matches_the_unfused_form_under_autocast():
    x, w, b, t = _problem((6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = el.FusedLinearCrossEntropyLoss()(x, w, t, b)
        ref = F.cross_entropy(F.linear(x, w, b), t)
    assert out.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_frozen_classifier_and_no_bias():
    x, w, _, t = _problem((7,), bias=False)
    w = w.detach()
    out = el.FusedLinearCrossEntropyLoss(chunk_size=2)(x, w, t)
    (gx,) = torch.autograd.grad(out, x)
    (ref,) = torch.autograd.grad(F.cross_entropy(F.linear(x, w), t), x)
    torch.testing.assert_close(gx, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("reduction", ["sum", "none"])  # the gradient during the forward; recomputed
def test_ignored_and_zero_weight_rows_contribute_nothing_even_when_nan(reduction):
    x, w, b, t = _problem((8,))
    s = torch.ones(8)
    s[1] = 0.0
    poisoned = x.detach().clone()
    poisoned[0] = float("nan")  # t[0] is ignored
    poisoned[1] = float("inf")  # sample weight 0
    poisoned.requires_grad_(True)
    out = el.FusedLinearCrossEntropyLoss(reduction=reduction, chunk_size=3)(poisoned, w, t, b, s).sum()
    clean = el.FusedLinearCrossEntropyLoss(reduction=reduction)(x.detach().requires_grad_(True), w, t, b, s).sum()
    torch.testing.assert_close(out, clean)
    gx, gw = torch.autograd.grad(out, (poisoned, w))
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all() and torch.all(gx[:2] == 0)


def test_inputs_are_not_modified():
    x, w, b, t = _problem((6,))
    before = [a.detach().clone() for a in (x, w, b, t)]
    el.FusedLinearCrossEntropyLoss(reduction="per_sample", chunk_size=4)(x, w, t, b).sum().backward()
    for a, c in zip((x, w, b, t), before):
        assert torch.equal(a.detach(), c)


def test_double_backward_is_a_clear_error():
    x, w, b, t = _problem((6,))
    (gx,) = torch.autograd.grad(el.FusedLinearCrossEntropyLoss()(x, w, t, b), x, create_graph=True)
    with pytest.raises(RuntimeError, match="FusedLinearCrossEntropyLoss does not support double backward"):
        gx.sum().backward()


def test_working_memory_is_a_fraction_of_the_unfused_form():
    """The logits are never materialised: chunked working memory (torch allocations, peak minus
    inputs and gradients) stays below a tenth of the unfused form's at (1024, 64, 8192)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 64, generator=g, requires_grad=True)
    w = (torch.randn(8192, 64, generator=g) * 0.1).requires_grad_(True)
    t = torch.randint(0, 8192, (1024,), generator=g)
    unfused = working_memory(lambda a, b, c: F.cross_entropy(F.linear(a, b), c), x, w, t)
    ours = working_memory(el.FusedLinearCrossEntropyLoss(chunk_size=64), x, w, t)
    logits = 1024 * 8192 * 4
    assert unfused >= 2 * logits  # the measurement sees the logits and their gradient
    assert ours <= unfused / 10


def test_automatic_chunk_size():
    assert auto_chunk_rows(4096, 1024, 32000) == 512  # the floor: 2**24 / 32000 rows, a power of two
    assert auto_chunk_rows(65536, 4096, 32000) == 8192  # chunk logits as large as the hidden states
    assert auto_chunk_rows(8192, 4096, 128256) == 256
    assert auto_chunk_rows(4096, 1024, 256000) == 64  # 2**24 / 256000 rows, rounded down to a power of two
    assert auto_chunk_rows(512, 256, 8000) == 2048  # one chunk: at least 2**24 / 8000 rows
    assert auto_chunk_rows(3, 8, 5) >= 3  # a small problem is one chunk


def test_errors():
    x, w, b, t = _problem((6,))
    loss = el.FusedLinearCrossEntropyLoss()
    with pytest.raises(
        ValueError,
        match=r"input must have shape \(\.\.\., H\) with H = linear_weight.shape\[1\] = 8; got input \(6, 5\)",
    ):
        loss(x[:, :5], w, t)
    with pytest.raises(ValueError, match=r"linear_weight must have shape \(C, H\); got \(37, 8, 1\)"):
        loss(x, w.unsqueeze(-1), t)
    with pytest.raises(ValueError, match=r"linear_bias must have shape \(37,\), one per class; got \(36,\)"):
        loss(x, w, t, b[:-1])
    with pytest.raises(ValueError, match=r"class-index target must have shape \(6,\) .* got target \(5,\)"):
        loss(x, w, t[:-1])
    with pytest.raises(
        ValueError, match="input and linear_weight must have one dtype; got torch.float32 and torch.float64"
    ):
        loss(x, w.double(), t)
    with pytest.raises(ValueError, match="chunk_size must be a positive number of rows or None"):
        el.FusedLinearCrossEntropyLoss(chunk_size=0)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        el.FusedLinearCrossEntropyLoss(label_smoothing=2.0)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(6,\)"):
        loss(x, w, t, b, torch.ones(5))


def _matmuls(fn):
    """The matrix products one call of ``fn`` runs (profiler events, nested ones included)."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    return sum(e.key in ("aten::mm", "aten::addmm", "aten::addmm_") for e in prof.events())


@pytest.mark.parametrize("reduction, per_chunk", [("mean", 3), ("sum", 3), ("none", 4), ("per_sample", 4)])
def test_scalar_reductions_cost_three_matmuls_as_the_unfused_form(reduction, per_chunk):
    """mean/sum compute the gradient during the forward (logits, grad_input, grad_weight: three
    products per chunk, as F.linear + F.cross_entropy); none/per_sample recompute the logits in
    the backward (a fourth)."""
    x, w, b, t = _problem((4, 3), bias=False)
    loss = el.FusedLinearCrossEntropyLoss(reduction=reduction, chunk_size=3)

    def step():
        out = loss(x, w, t)
        torch.autograd.grad(out.sum(), (x, w))

    assert _matmuls(step) == 4 * per_chunk  # 12 rows in 4 chunks
    assert _matmuls(lambda: torch.autograd.grad(F.cross_entropy(F.linear(x.view(12, 8), w), t.view(12)), (x, w))) == 3


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_in_forward_scales_with_grad_output_and_reaches_sample_weight(reduction):
    x, w, b, t = _problem((5, 3))
    s = (torch.rand(5, generator=torch.Generator().manual_seed(2)) + 0.5).requires_grad_(True)
    s.data[1] = 0.0
    cw = torch.rand(37, generator=torch.Generator().manual_seed(3)) + 0.5
    ours = el.FusedLinearCrossEntropyLoss(cw, reduction=reduction, chunk_size=4)(x, w, t, b, s)
    logits = F.linear(x, w, b).movedim(-1, 1)
    # a sample of weight 0 counts for nothing, its weight's gradient included (the shared reduction)
    rows = torch.where(s[:, None] != 0, F.cross_entropy(logits, t, cw, reduction="none") * s[:, None], 0.0)
    ref = rows.sum() if reduction == "sum" else rows.sum() / (cw[t.clamp_min(0)] * (t != -100) * s[:, None]).sum()
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
    for got, want in zip(torch.autograd.grad(ours * -2.5, (x, w, b, s)), torch.autograd.grad(ref * -2.5, (x, w, b, s))):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_no_grad_forward_computes_no_gradient_and_a_retained_graph_recomputes():
    x, w, b, t = _problem((6,))
    loss = el.FusedLinearCrossEntropyLoss(chunk_size=2)
    with torch.no_grad():
        assert _matmuls(lambda: loss(x, w, t, b)) == 3  # the logits of three chunks, nothing else
    out = loss(x, w, t, b)
    first = torch.autograd.grad(out * 2.0, (x, w, b), retain_graph=True)
    second = torch.autograd.grad(out * -3.0, (x, w, b))  # the saved gradients are gone: recomputed
    ref = _unfused(x, w, b, t, "mean")
    for scale, grads in ((2.0, first), (-3.0, second)):
        for got, want in zip(grads, torch.autograd.grad(ref * scale, (x, w, b), retain_graph=True)):
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
