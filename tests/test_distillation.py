"""JSD and knowledge distillation beyond the generic tests: peers' numbers (Liger-Kernel's JSD,
Hinton distillation through torch.nn), the beta = 0 / 1 limits, errors, ignored positions, extreme
logits, zero-probability classes, unbatched and half-precision inputs, and the branches that no
generic case reaches on every path."""

import io
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from cases_distillation import distillation_ref
from torch import nn

import exportable_loss as el
from exportable_loss import functional as LF
from exportable_loss.export import export_onnx, run_onnx

RTOL, ATOL = 1e-5, 1e-6


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _log_probs(*shape: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return torch.log_softmax(torch.randn(*shape, generator=_gen(seed)) * scale, 1)


class LigerStyleJSD(nn.Module):
    """Liger-Kernel's test reference for LigerJSD, in float64: KLDivLoss(batchmean, log_target)
    against log M, with the beta = 0 / 1 special cases of its kernel and its label handling
    (sum over non-ignored rows / their count)."""

    def __init__(self, beta: float, ignore_index: int = -100) -> None:
        super().__init__()
        self.kl = nn.KLDivLoss(reduction="none", log_target=True)
        self.beta = beta
        self.ignore_index = ignore_index

    def forward(self, log_q, log_p, label=None):
        log_q, log_p = log_q.double(), log_p.double()
        if self.beta == 0.0:
            rows = self.kl(log_q, log_p).sum(-1)
        elif self.beta == 1.0:
            rows = self.kl(log_p, log_q).sum(-1)
        else:
            log_m = torch.log(self.beta * log_p.exp() + (1 - self.beta) * log_q.exp())
            rows = self.beta * self.kl(log_m, log_p).sum(-1) + (1 - self.beta) * self.kl(log_m, log_q).sum(-1)
        if label is None:
            return rows.sum() / rows.shape[0]
        keep = label != self.ignore_index
        return (rows * keep).sum() / keep.sum()


# Peers


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("with_label", [False, True])
def test_jsd_matches_liger_formula(beta, with_label):
    x = _log_probs(37, 64, seed=1).requires_grad_(True)
    t = _log_probs(37, 64, seed=2).requires_grad_(True)
    label = torch.randint(0, 64, (37,), generator=_gen(3)) if with_label else None
    if label is not None:
        label[::3] = -100
    ours = el.JSDLoss(beta=beta)(x, t, label)
    x64, t64 = x.detach().double().requires_grad_(True), t.detach().double().requires_grad_(True)
    ref = LigerStyleJSD(beta)(x64, t64, label)
    torch.testing.assert_close(ours, ref.float(), rtol=RTOL, atol=ATOL)
    for got, want in zip(torch.autograd.grad(ours, (x, t)), torch.autograd.grad(ref, (x64, t64))):
        torch.testing.assert_close(got, want.float(), rtol=RTOL, atol=ATOL)


def test_jsd_half_is_symmetric_and_bounded_by_log2():
    x, t = _log_probs(20, 7, seed=1, scale=6.0), _log_probs(20, 7, seed=2, scale=6.0)
    forward = el.JSDLoss(reduction="none")(x, t)
    torch.testing.assert_close(forward, el.JSDLoss(reduction="none")(t, x), rtol=RTOL, atol=ATOL)
    assert (forward >= -1e-7).all() and (forward <= torch.log(torch.tensor(2.0)) + 1e-6).all()
    # disjoint supports reach the bound log 2 exactly
    a = torch.log(torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(LF.jsd_loss(a, a.flip(1)), torch.log(torch.tensor(2.0)))


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3, 2)])
def test_jsd_beta_limits_are_torch_kl_div(shape):
    """Liger defines beta = 0 as forward KL(P || Q) and beta = 1 as reverse KL(Q || P)."""
    x = _log_probs(*shape, seed=1).requires_grad_(True)
    t = _log_probs(*shape, seed=2).requires_grad_(True)
    cases = [
        (0.0, F.kl_div(x, t, reduction="none", log_target=True).sum(1)),
        (1.0, F.kl_div(t, x, reduction="none", log_target=True).sum(1)),
    ]
    for beta, ref in cases:
        ours = LF.jsd_loss(x, t, beta=beta, reduction="none")
        torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
        for got, want in zip(torch.autograd.grad(ours.sum(), (x, t)), torch.autograd.grad(ref.sum(), (x, t))):
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
    # the limits differ (forward and reverse KL are not symmetric), and equal inputs give exactly 0
    assert not torch.allclose(LF.jsd_loss(x, t, beta=0.0), LF.jsd_loss(x, t, beta=1.0))
    for beta in (0.0, 1.0):
        out = LF.jsd_loss(x, x.detach(), beta=beta, reduction="none")
        assert torch.all(out == 0)


@pytest.mark.parametrize("temperature, alpha", [(1.0, 1.0), (2.0, 1.0), (4.0, 0.7), (2.0, 0.0)])
def test_distillation_matches_hinton_with_torch_nn(temperature, alpha):
    g = _gen(5)
    s = (torch.randn(9, 5, generator=g) * 3).requires_grad_(True)
    t = (torch.randn(9, 5, generator=g) * 3).requires_grad_(True)
    label = torch.randint(0, 5, (9,), generator=g)
    soft = nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
    ) * (temperature**2)
    ref = alpha * soft + (1 - alpha) * nn.CrossEntropyLoss()(s, label)
    ours = el.DistillationLoss(temperature=temperature, alpha=alpha)(s, t, label)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
    wrt = (s, t) if alpha > 0 else (s,)
    for got, want in zip(torch.autograd.grad(ours, wrt), torch.autograd.grad(ref, wrt)):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_distillation_alpha_zero_is_cross_entropy_with_ignore_and_spatial_dims():
    g = _gen(6)
    s = torch.randn(6, 5, 3, generator=g, requires_grad=True)
    t = torch.randn(6, 5, 3, generator=g)
    label = torch.randint(0, 5, (6, 3), generator=g)
    label[::2, 1] = 4
    for reduction in ("none", "mean", "sum"):
        ours = el.DistillationLoss(alpha=0.0, ignore_index=4, reduction=reduction)(s, t, label)
        ref = nn.CrossEntropyLoss(ignore_index=4, reduction=reduction)(s, label)
        torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)


def test_distillation_soft_term_at_temperature_one_is_forward_kl_jsd():
    g = _gen(7)
    s, t = torch.randn(6, 5, generator=g) * 2, torch.randn(6, 5, generator=g) * 2
    torch.testing.assert_close(
        LF.distillation_loss(s, t, reduction="none"),
        LF.jsd_loss(torch.log_softmax(s, 1), torch.log_softmax(t, 1), beta=0.0, reduction="none"),
        rtol=RTOL,
        atol=ATOL,
    )


def test_mean_divides_by_counted_positions():
    x, t = _log_probs(6, 5, 3, seed=1), _log_probs(6, 5, 3, seed=2)
    label = torch.randint(0, 5, (6, 3), generator=_gen(8))
    label[:4, 0] = -100
    for loss in (el.JSDLoss(reduction="sum"), el.DistillationLoss(alpha=0.4, reduction="sum")):
        total = loss(x, t, label)
        loss.reduction = "mean"
        torch.testing.assert_close(loss(x, t, label), total / 14, rtol=RTOL, atol=ATOL)


def test_label_only_masks_when_alpha_is_one():
    """With alpha = 1 (and in JSD) the label is read for ignore_index only: other values, even out of range, do
    not change the loss."""
    x, t = torch.randn(6, 5, generator=_gen(1)), torch.randn(6, 5, generator=_gen(2))
    a = torch.tensor([0, 1, -100, 3, 4, -100])
    b = torch.tensor([4, 99, -100, 0, -7, -100])
    for loss in (el.DistillationLoss(temperature=2.0), el.JSDLoss(beta=0.3)):
        torch.testing.assert_close(loss(x, t, a), loss(x, t, b), rtol=0, atol=0)


def test_out_of_range_label_gives_nan_at_its_position_only():
    x, t = torch.randn(4, 5, generator=_gen(1)), torch.randn(4, 5, generator=_gen(2))
    out = LF.distillation_loss(x, t, torch.tensor([0, 5, -1, -100]), alpha=0.5, reduction="none")
    assert torch.isfinite(out[[0, 3]]).all() and torch.isnan(out[[1, 2]]).all() and out[3] == 0


# Ignored positions, extreme values


@pytest.mark.parametrize("which", ["jsd", "distill"])
def test_ignored_positions_with_nan_inputs_contribute_nothing(which):
    g = _gen(9)
    if which == "jsd":
        x, t = _log_probs(6, 5, 2, seed=1), _log_probs(6, 5, 2, seed=2)
        loss = el.JSDLoss(beta=0.3, reduction="sum")
    else:
        x, t = torch.randn(6, 5, 2, generator=g) * 3, torch.randn(6, 5, 2, generator=g) * 3
        loss = el.DistillationLoss(temperature=2.0, alpha=0.6, reduction="sum")
    label = torch.randint(0, 5, (6, 2), generator=g)
    label[2, 1] = -100
    label[4, :] = -100
    dirty_x, dirty_t = x.clone(), t.clone()
    for d in (dirty_x, dirty_t):
        d[2, :, 1] = float("nan")
        d[4] = float("inf")
    clean_x, clean_t = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    dirty_x.requires_grad_(True)
    dirty_t.requires_grad_(True)
    for reduction in ("none", "per_sample", "mean", "sum"):
        loss.reduction = reduction
        clean = loss(clean_x, clean_t, label)
        dirty = loss(dirty_x, dirty_t, label)
        assert torch.isfinite(dirty).all()
        torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
        grads_dirty = torch.autograd.grad(dirty.sum(), (dirty_x, dirty_t))
        grads_clean = torch.autograd.grad(clean.sum(), (clean_x, clean_t))
        for got, want in zip(grads_dirty, grads_clean):
            # even the gradients at the ignored positions are exactly 0, not NaN
            assert torch.all(got[2, :, 1] == 0) and torch.all(got[4] == 0)
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def _jsd_ref_dropping_underflow(log_q, log_p, beta):
    # float64, with classes whose weighting probability underflows to 0 dropped (their true terms are < 1e-8000)
    log_q, log_p = log_q.double(), log_p.double()
    q, p = log_q.exp(), log_p.exp()
    if beta == 0.0:
        return torch.where(p > 0, p * (log_p - log_q), 0.0).sum(1)
    if beta == 1.0:
        return torch.where(q > 0, q * (log_q - log_p), 0.0).sum(1)
    log_m = torch.logaddexp(log_p + torch.log(torch.tensor(beta)), log_q + torch.log1p(torch.tensor(-beta)))
    return (
        beta * torch.where(p > 0, p * (log_p - log_m), 0.0) + (1 - beta) * torch.where(q > 0, q * (log_q - log_m), 0.0)
    ).sum(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_large_logits_stay_finite(dtype):
    g = _gen(10)
    s = (torch.randint(-1, 2, (8, 5), generator=g) * 1e4).to(dtype).requires_grad_(True)
    t = (torch.randint(-1, 2, (8, 5), generator=g) * 1e4).to(dtype).requires_grad_(True)
    label = torch.randint(0, 5, (8,), generator=g)
    for temperature, alpha in [(1.0, 1.0), (2.0, 0.5), (1.0, 0.0)]:
        out = LF.distillation_loss(s, t, label, temperature=temperature, alpha=alpha, reduction="none")
        ref, _, _ = distillation_ref(temperature, alpha)(s.detach(), t.detach(), label)
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), ref, rtol=1e-2 if dtype != torch.float32 else RTOL, atol=1e-3)
        grads = torch.autograd.grad(out.sum(), (s, t) if alpha > 0 else (s,))
        assert all(torch.isfinite(gr).all() for gr in grads)
    # JSD of the log-probabilities of such logits (entries of -2e4, exp of which underflows)
    x, y = torch.log_softmax(s.detach().float(), 1), torch.log_softmax(t.detach().float(), 1)
    x.requires_grad_(True)
    y.requires_grad_(True)
    for beta in (0.0, 0.1, 0.5, 1.0):
        out = LF.jsd_loss(x.to(dtype), y.to(dtype), beta=beta, reduction="none")
        ref = _jsd_ref_dropping_underflow(x.detach().to(dtype), y.detach().to(dtype), beta)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), ref, rtol=1e-2 if dtype != torch.float32 else RTOL, atol=1e-3)
        assert all(torch.isfinite(gr).all() for gr in torch.autograd.grad(out.sum(), (x, y)))


def test_zero_probability_classes_contribute_exactly_zero():
    """-inf log-probabilities (a teacher restricted to some classes): no 0 * log 0 NaN, values and gradients
    as if those classes were absent."""
    p = torch.tensor([[0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    q = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7]])
    log_p = torch.log(p).requires_grad_(True)
    log_q = torch.log(q).requires_grad_(True)
    # the limit: zero probabilities replaced by 1e-30, in float64
    log_p_eps = torch.log(p.double().clamp_min(1e-30)).requires_grad_(True)
    log_q_eps = torch.log(q.double().clamp_min(1e-30)).requires_grad_(True)
    for beta in (0.0, 0.25, 0.5, 0.75):
        out = LF.jsd_loss(log_q, log_p, beta=beta, reduction="none")
        m = beta * p.double() + (1 - beta) * q.double()
        kl_pm = torch.where(p > 0, p * torch.log(p.double() / m), 0.0).sum(1)
        kl_qm = torch.where(q > 0, q * torch.log(q.double() / m), 0.0).sum(1)
        ref = kl_pm if beta == 0.0 else beta * kl_pm + (1 - beta) * kl_qm
        torch.testing.assert_close(out.double(), ref, rtol=RTOL, atol=ATOL)
        gq, gp = torch.autograd.grad(out.sum(), (log_q, log_p))
        limit = LF.jsd_loss(log_q_eps, log_p_eps, beta=beta, reduction="none")
        torch.testing.assert_close(out.double(), limit, rtol=RTOL, atol=ATOL)
        for got, want in zip((gq, gp), torch.autograd.grad(limit.sum(), (log_q_eps, log_p_eps))):
            torch.testing.assert_close(got.double(), want, rtol=RTOL, atol=ATOL)
        assert torch.all(gp[p == 0] == 0) and (beta == 0.0 or torch.all(gq[q == 0] == 0))
    # reverse KL where the student puts mass on a class the teacher excludes is +inf, as it should be
    assert torch.isinf(LF.jsd_loss(log_q, log_p, beta=1.0, reduction="none")).all()
    # a teacher with masked logits (-inf) in distillation: KL over the teacher's support, the student's
    # softmax taken over every class
    s = torch.randn(2, 4, generator=_gen(1), requires_grad=True)
    t = torch.tensor([[1.0, 2.0, float("-inf"), float("-inf")], [float("-inf"), 0.0, 3.0, 1.0]], requires_grad=True)
    out = LF.distillation_loss(s, t, temperature=2.0, reduction="none")
    keep = torch.isfinite(t)
    terms = F.softmax(t.detach() / 2, 1) * (F.log_softmax(t.detach() / 2, 1) - F.log_softmax(s.detach() / 2, 1))
    torch.testing.assert_close(out, 4 * torch.where(keep, terms, 0.0).sum(1), rtol=RTOL, atol=ATOL)
    gs, gt = torch.autograd.grad(out.sum(), (s, t))
    assert torch.isfinite(gs).all() and torch.isfinite(gt).all() and torch.all(gt[~keep] == 0)


# Shapes and dtypes


def test_unbatched_input_follows_cross_entropy():
    x, t = _log_probs(1, 5, seed=1)[0], _log_probs(1, 5, seed=2)[0]
    for reduction in ("none", "mean", "sum"):
        ours = LF.jsd_loss(x, t, torch.tensor(2), reduction=reduction)
        assert ours.shape == ()
        torch.testing.assert_close(ours, LF.jsd_loss(x[None], t[None], reduction="sum"), rtol=RTOL, atol=ATOL)
        ignored = LF.jsd_loss(x, t, torch.tensor(-100), reduction=reduction)
        assert ignored.item() == 0.0
    s, teacher = torch.randn(5, generator=_gen(1)), torch.randn(5, generator=_gen(2))
    label = torch.tensor(3)
    torch.testing.assert_close(
        el.DistillationLoss(alpha=0.0)(s, teacher, label), nn.CrossEntropyLoss()(s, label), rtol=RTOL, atol=ATOL
    )
    torch.testing.assert_close(
        el.DistillationLoss(temperature=3.0, alpha=0.5)(s, teacher, label),
        el.DistillationLoss(temperature=3.0, alpha=0.5)(s[None], teacher[None], label[None]),
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    s, t = torch.randn(64, 5, generator=_gen(1)) * 4, torch.randn(64, 5, generator=_gen(2)) * 4
    label = torch.randint(0, 5, (64,), generator=_gen(3))
    for loss in (el.DistillationLoss(temperature=2.0, alpha=0.5), el.JSDLoss(beta=0.2)):
        args = (s, t) if isinstance(loss, el.DistillationLoss) else (s.log_softmax(1), t.log_softmax(1))
        out = loss(args[0].to(dtype), args[1].to(dtype), label)
        ref = loss(args[0].to(dtype).float(), args[1].to(dtype).float(), label)
        assert out.dtype == dtype
        torch.testing.assert_close(out, ref.to(dtype), rtol=0, atol=0)


def test_functional_equals_module():
    x, t = _log_probs(6, 5, seed=1), _log_probs(6, 5, seed=2)
    label = torch.tensor([0, 1, -100, 3, 4, 2])
    torch.testing.assert_close(
        LF.jsd_loss(x, t, label, beta=0.3, reduction="per_sample"),
        el.JSDLoss(beta=0.3, reduction="per_sample")(x, t, label),
        rtol=0,
        atol=0,
    )
    label = torch.tensor([0, 1, 2, 3, 4, 1])
    torch.testing.assert_close(
        LF.distillation_loss(x, t, label, temperature=2.5, alpha=0.2, ignore_index=1),
        el.DistillationLoss(2.5, 0.2, ignore_index=1)(x, t, label),
        rtol=0,
        atol=0,
    )
    assert "beta=0.3" in repr(el.JSDLoss(beta=0.3)) and "temperature=2.5" in repr(el.DistillationLoss(2.5))


# The branches no generic case covers, on the script and ONNX paths


BRANCHES = {
    "jsd_forward_kl": lambda: el.JSDLoss(beta=0.0, reduction="per_sample"),
    "jsd_reverse_kl": lambda: el.JSDLoss(beta=1.0, reduction="mean"),
    "distill_alpha0": lambda: el.DistillationLoss(alpha=0.0, reduction="sum"),
    "distill_t1_alpha_half": lambda: el.DistillationLoss(alpha=0.5, reduction="mean"),
}


def _branch_inputs(n: int):
    g = _gen(n)
    x, t = (
        torch.log_softmax(torch.randn(n, 5, 2, generator=g) * 2, 1),
        torch.log_softmax(torch.randn(n, 5, 2, generator=g), 1),
    )
    label = torch.randint(0, 5, (n, 2), generator=g)
    label[::3, 0] = -100
    return x, t, label


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_branches_on_script_and_onnx(name, tmp_path):
    module = BRANCHES[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(module), buffer)
        buffer.seek(0)
        scripted = torch.jit.load(buffer)
    paths = [
        export_onnx(module, _branch_inputs(6), os.path.join(tmp_path, f"{dynamo}.onnx"), dynamo=dynamo)
        for dynamo in (True, False)
    ]
    args = _branch_inputs(9)
    ref = module(*args)
    torch.testing.assert_close(scripted(*args), ref, rtol=RTOL, atol=ATOL)
    for path in paths:
        (out,) = run_onnx(path, args)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# Errors


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]; got 1.5"):
        el.JSDLoss(beta=1.5)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]; got -0.1"):
        el.JSDLoss(beta=-0.1)
    with pytest.raises(ValueError, match="temperature must be positive; got 0.0"):
        el.DistillationLoss(temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be positive; got -1"):
        el.DistillationLoss(temperature=-1)
    with pytest.raises(ValueError, match="temperature must be positive; got nan"):
        el.DistillationLoss(temperature=float("nan"))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]; got 1.2"):
        el.DistillationLoss(alpha=1.2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        el.JSDLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="backend must be one of"):
        el.DistillationLoss(backend="cuda")


def test_call_errors():
    x, t = torch.randn(6, 5), torch.randn(6, 5)
    label = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"alpha < 1 needs label .* got alpha=0.5 and no label"):
        el.DistillationLoss(alpha=0.5)(x, t)
    with pytest.raises(ValueError, match=r"alpha < 1 needs label"):
        LF.distillation_loss(x, t, alpha=0.0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]; got 2.0"):
        LF.jsd_loss(x, t, beta=2.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]; got -0.5"):
        LF.distillation_loss(x, t, label, alpha=-0.5)
    with pytest.raises(ValueError, match="temperature must be positive; got 0.0"):
        LF.distillation_loss(x, t, temperature=0.0)
    for loss in (el.JSDLoss(), el.DistillationLoss()):
        with pytest.raises(ValueError, match=r"same shape; got input \(6, 5\) and target \(6, 4\)"):
            loss(x, t[:, :4])
        with pytest.raises(ValueError, match=r"label must have shape \(6,\) .* got label \(6, 1\)"):
            loss(x, t, label[:, None])
        with pytest.raises(ValueError, match="label must hold integer class indices; got dtype torch.float32"):
            loss(x, t, label.float())
        with pytest.raises(ValueError, match="label must hold integer class indices; got dtype torch.bool"):
            loss(x, t, label.bool())
        with pytest.raises(ValueError, match="input must be a floating-point tensor; got dtype torch.int64"):
            loss(x.long(), t)
        with pytest.raises(ValueError, match="target must be a floating-point tensor; got dtype torch.int64"):
            loss(x, t.long())
        with pytest.raises(ValueError, match="input must have a class dimension"):
            loss(x[0, 0], t[0, 0])
        with pytest.raises(ValueError, match=r"sample_weight must have shape \(6,\)"):
            loss(x, t, None, torch.ones(5))
        with pytest.raises(ValueError, match="sample_weight needs a batch dimension"):
            loss(x[0], t[0], None, torch.ones(1))
        with pytest.raises(ValueError, match="normalizer is used only by reduction='mean'"):
            type(loss)(reduction="sum")(x, t, None, None, torch.tensor(2.0))
        with pytest.raises(ValueError, match="reduction='per_sample' needs a batch dimension"):
            type(loss)(reduction="per_sample")(x[0], t[0])
