"""Reliability (issue 6): gradcheck, numerical edge cases on every backend, property tests
against a float64 reference, and nn.Module behaviour.

The ``backend`` parameter includes "triton": in the main CI run its ops compute their PyTorch
reference; CI runs the triton cases again under TRITON_INTERPRET=1 with the real kernels."""

import copy
import io
import os
import pickle

import pytest
import torch
from cases import CASES, cast, make_inputs, spec_reduce
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exportable_loss as el

BACKENDS = ["torch", "triton"]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# ------------------------------------------------------------------ gradients

TWICE_DIFFERENTIABLE = {
    "ce",
    "ce_weight_ls_spatial",
    "ce_probs",
    "ce_zloss_softcap",
    "nll",
    "bce_logits",
    "mse",
    "kl",
    "kl_log_target",
    "focal",
    "focal_no_alpha",
}


# CIoU holds its trade-off weight alpha constant (torchvision's no_grad): its gradient is not the
# numerical derivative by design; tests/test_detection.py checks it against torchvision's formula.
NOT_THE_NUMERICAL_GRADIENT = {"ciou", "ciou_extra_dims_eps"}


@pytest.mark.parametrize("name", sorted(set(CASES) - NOT_THE_NUMERICAL_GRADIENT))
def test_gradcheck_float64_every_reduction(name):
    case = CASES[name]
    data = cast(make_inputs(case, 4), torch.float64)
    diff = [i for i, a in enumerate(data) if a.requires_grad]
    s = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_(True)
    for reduction in case.reductions:
        loss = case.make(reduction).double()

        def fn(*inputs, loss=loss):
            args = list(data)
            for i, a in zip(diff, inputs):
                args[i] = a
            return loss(*args, inputs[-1])

        inputs = tuple(data[i] for i in diff) + (s,)
        assert torch.autograd.gradcheck(fn, inputs)
        if name in TWICE_DIFFERENTIABLE:
            assert torch.autograd.gradgradcheck(fn, inputs)


def test_triton_double_backward_is_a_clear_error():
    x = torch.randn(4, 5, requires_grad=True)
    for loss, target in [
        (el.CrossEntropyLoss(backend="triton"), torch.tensor([0, 1, 2, 3])),
        (el.MSELoss(backend="triton"), torch.zeros(4, 5)),
    ]:
        (g,) = torch.autograd.grad(loss(x, target), x, create_graph=True)
        with pytest.raises(RuntimeError, match="backend='triton' does not support double backward"):
            g.sum().backward()


# ------------------------------------------------------------------ numerical edge cases


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_extreme_logits_in_half_precision(backend, dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 7, generator=g).sign() * 1e4).to(dtype)
    t = torch.randint(0, 7, (64,), generator=g)
    for reduction in ("mean", "none"):  # their true values fit the dtype; the sum (6e5) does not
        out = el.CrossEntropyLoss(reduction=reduction, backend=backend)(x, t)
        ref = el.CrossEntropyLoss(reduction=reduction)(x.float(), t)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_nan_in_a_counted_position_propagates(backend, name):
    case = CASES[name]
    x, *rest = make_inputs(case, 6)
    x = x.detach().clone()
    x[2] = float("nan")  # sample 2 has counted positions in every case
    for reduction in ("sum", "mean"):
        out = case.make(reduction, backend=backend)(x, *rest)
        assert torch.isnan(out), reduction
    ce = el.CrossEntropyLoss(backend=backend)
    logits = torch.randn(4, 5)
    logits[2, 3] = float("nan")
    assert torch.isnan(ce(logits, torch.tensor([0, 1, 2, 3])))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_empty_batch(backend, name):
    case = CASES[name]
    data = make_inputs(case, 0)
    x = data[0]
    for reduction in case.reductions:
        out = case.make(reduction, backend=backend)(*data, torch.zeros(0))
        if reduction in ("none", "per_sample"):
            assert out.shape[0] == 0
        else:
            assert out.shape == () and out.item() == 0.0
        (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
        assert g is None or (g.shape == x.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["ce_weight_ls_spatial", "mse", "bce_logits", "kl"])
def test_zero_and_very_large_sample_weights(backend, name):
    case = CASES[name]
    x, t = make_inputs(case, 6)
    s = torch.tensor([0.0, 1e30, 1.0, 0.0, 1e30, 2.0])
    out = case.make("sum", backend=backend)(x.detach(), t, s)
    ref = case.make("sum")(x.detach().double(), t.double() if t.is_floating_point() else t, s.double())
    assert torch.isfinite(out)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)
    mean = case.make("mean", backend=backend)(x.detach(), t, s)
    assert torch.isfinite(mean)


VIEWS = {
    "sliced": lambda a: a[::2],
    "transposed": lambda a: a.transpose(0, -1).contiguous().transpose(0, -1) if a.dim() > 1 else a,
    "expanded": lambda a: a[:1].expand_as(a),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(VIEWS))
@pytest.mark.parametrize("name", ["ce", "ce_probs", "ce_weight_ls_spatial", "mse", "focal", "huber"])
def test_non_contiguous_inputs(backend, kind, name):
    case = CASES[name]
    x, t = make_inputs(case, 12)
    view = VIEWS[kind]
    for reduction in ("none", "mean"):
        leaf, ref_leaf = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
        xv = view(leaf)
        assert not xv.is_contiguous() or kind == "sliced" and xv.dim() == 1
        got = case.make(reduction, backend=backend)(xv, view(t))
        want = case.make(reduction)(view(ref_leaf).contiguous(), view(t).contiguous())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        (g1,) = torch.autograd.grad(got.sum(), leaf)
        (g2,) = torch.autograd.grad(want.sum(), ref_leaf)
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_classes", [1, 2, 131, 262_144])
def test_vocabulary_sizes(backend, num_classes):
    n = 2 if num_classes > 1000 else 6
    g = torch.Generator().manual_seed(num_classes)
    x = torch.randn(n, num_classes, generator=g, requires_grad=True)
    t = torch.randint(0, num_classes, (n,), generator=g)
    out = el.CrossEntropyLoss(backend=backend, label_smoothing=0.1)(x, t)
    ref = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(x, t)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(out, x)
    (g2,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ property tests


@st.composite
def _problem(draw):
    name = draw(st.sampled_from(sorted(CASES)))
    case = CASES[name]
    n = draw(st.integers(min_value=1, max_value=9))
    reduction = draw(st.sampled_from(case.reductions))
    weighting = draw(
        st.sampled_from(
            ["plain", "sample_weight", "normalizer"]
            if reduction in ("mean", "batchmean")
            else ["plain", "sample_weight"]
        )
    )
    seed = draw(st.integers(min_value=0, max_value=2**16))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    backend = draw(st.sampled_from(BACKENDS))
    return case, n, reduction, weighting, seed, dtype, backend


@given(_problem())
def test_property_against_float64_reference(problem):
    case, n, reduction, weighting, seed, dtype, backend = problem
    arity = len(make_inputs(case, 1))
    args = make_inputs(case, n, seed=seed, weighting=weighting)
    data, rest = cast(args[:arity], dtype), args[arity:]
    x = data[0]
    out = case.make(reduction, backend=backend).to(dtype)(*data, *rest)
    l, valid, pw = case.elementwise(*cast(data, torch.float64))
    s = rest[0] if rest else None
    normalizer = rest[1] if len(rest) > 1 else None
    ref = spec_reduce(l, reduction, s, normalizer, valid, pw)
    # float32 formulas such as (1 - y) * x + softplus(-x) cancel: their absolute error grows
    # like eps32 * |x| (1.7e-6 at |x| = 24 in torch.nn itself), so atol scales with the input
    scale = 1.0 + float(x.detach().abs().max()) if x.numel() else 1.0
    tol = dict(rtol=1e-5, atol=2e-7 * scale) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12 * scale)
    torch.testing.assert_close(out.double(), ref, **tol)


# ------------------------------------------------------------------ nn.Module behaviour


def _modules():
    return [
        el.CrossEntropyLoss(weight=torch.rand(5), ignore_index=2, label_smoothing=0.1, z_loss=1e-3, logit_softcap=5.0),
        el.NLLLoss(weight=torch.rand(5)),
        el.BCEWithLogitsLoss(weight=torch.rand(3), pos_weight=torch.rand(3)),
        el.SmoothL1Loss(beta=0.3, reduction="per_sample"),
        el.HuberLoss(delta=2.0, backend="triton"),
        el.KLDivLoss(reduction="batchmean", log_target=True),
        el.FocalLoss(alpha=0.5, gamma=1.0, reduction="sum"),
        el.MSELoss(),
        el.L1Loss(),
    ]


@pytest.mark.parametrize("module", _modules(), ids=lambda m: type(m).__name__)
def test_module_behaves_like_torch_nn(module):
    # state_dict round trip: class weights are buffers
    fresh = copy.deepcopy(module)
    for buffer in fresh.buffers():
        buffer.zero_()
    fresh.load_state_dict(module.state_dict())
    for (name, a), (_, b) in zip(module.named_buffers(), fresh.named_buffers()):
        assert torch.equal(a, b), name
    assert set(module.state_dict()) == {n for n, b in module.named_buffers() if b is not None}
    # deepcopy and pickle keep every option
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert repr(clone) == repr(module)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    assert repr(torch.load(buffer, weights_only=False)) == repr(module)
    # .to(dtype) moves the buffers
    double = copy.deepcopy(module).to(torch.float64)
    assert all(b.dtype == torch.float64 for b in double.buffers())
    # repr shows the options
    assert f"reduction={module.reduction!r}" in repr(module) and f"backend={module.backend!r}" in repr(module)


def test_repr_lists_constructor_options():
    text = repr(el.CrossEntropyLoss(ignore_index=3, label_smoothing=0.2, backend="auto"))
    assert "ignore_index=3" in text and "label_smoothing=0.2" in text and "backend='auto'" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend):
    x, t = make_inputs(CASES["ce_weight_ls_spatial"], 8)
    runs = []
    for _ in range(2):
        xi = x.detach().clone().requires_grad_(True)
        out = CASES["ce_weight_ls_spatial"].make("mean", backend=backend)(xi, t)
        runs.append((out, torch.autograd.grad(out, xi)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
