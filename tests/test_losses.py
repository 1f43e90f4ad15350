"""Each loss against torch.nn (or an independent float64 formula), and the reductions of
docs/semantics.md against a float64 reference written from that page."""

import pytest
import torch
from cases import CASES, cast, combo_id, combos, make_inputs, spec_reduce
from torch import nn

import exportable_loss as el
from exportable_loss import functional as LF

RTOL, ATOL = 1e-5, 1e-6
N = 6


def _grad(out: torch.Tensor, wrt, seed: int = 1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    return torch.autograd.grad((out * g).sum(), wrt, allow_unused=True)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_torch_nn(case, reduction):
    data = make_inputs(case, N)
    wrt = [a for a in data if a.requires_grad]
    ours = case.make(reduction)(*data)
    if case.twin is not None:
        ref = case.twin(reduction)(*data)
    else:
        l, valid, pw = case.elementwise(*data)
        ref = spec_reduce(l, reduction, valid=valid, position_weight=pw).float()
    assert ours.dtype == data[0].dtype and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL)
    for got, want in zip(_grad(ours, wrt), _grad(ref, wrt)):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("combo", combos(), ids=combo_id)
def test_spec_reductions(combo):
    case, reduction, weighting = combo
    data = make_inputs(case, N)
    args = make_inputs(case, N, weighting=weighting)
    s = args[len(data)].requires_grad_(True) if len(args) > len(data) else None
    normalizer = args[len(data) + 1] if len(args) > len(data) + 1 else None
    ours = case.make(reduction)(*args)

    data64 = cast(args[: len(data)], torch.float64)
    s64 = s.detach().double().requires_grad_(True) if s is not None else None
    l, valid, pw = case.elementwise(*data64)
    ref = spec_reduce(l, reduction, s64, normalizer, valid, pw)
    torch.testing.assert_close(ours, ref.float(), rtol=RTOL, atol=ATOL)
    wrt = [a for a in args[: len(data)] if a.requires_grad] + ([s] if s is not None else [])
    wrt64 = [a for a in data64 if a.requires_grad] + ([s64] if s64 is not None else [])
    for got, want in zip(_grad(ours, wrt), _grad(ref, wrt64)):
        torch.testing.assert_close(got, want.float(), rtol=RTOL, atol=ATOL)


def test_per_sample_equals_none_without_extra_dims():
    x, t = make_inputs(CASES["ce"], N)
    torch.testing.assert_close(
        el.CrossEntropyLoss(reduction="per_sample")(x, t), el.CrossEntropyLoss(reduction="none")(x, t)
    )


def _rows(case, data, part):
    return [a[part] if case.is_batched(i) else a for i, a in enumerate(data)]


def test_micro_batches_with_shared_normalizer_give_full_batch(case):
    if "mean" not in case.reductions:
        pytest.skip()
    *data, s = make_inputs(case, 10, weighting="sample_weight")
    x = data[0]
    full = case.make("mean")(*data, s)
    (gx_full,) = torch.autograd.grad(full, x)
    # the denominator of the whole step, from the full batch's "sum" of denominators
    l, valid, pw = case.elementwise(*cast(data, torch.float64))
    per_pos = valid.double() if pw is None and valid is not None else pw
    if per_pos is None:
        per_pos = torch.ones_like(l)
    denominator = (s.double().view(-1, *[1] * (l.dim() - 1)) * per_pos).sum().float()
    loss = torch.zeros(())
    for part in (slice(0, 3), slice(3, 10)):
        loss = loss + case.make("mean")(*_rows(case, data, part), s[part], denominator)
    (gx_parts,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(loss, full, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx_parts, gx_full, rtol=RTOL, atol=ATOL)
    # the naive mean of micro-batch means differs, so this test can fail
    first, rest = slice(0, 3), slice(3, 10)
    naive = (
        case.make("mean")(*_rows(case, data, first), s[first]) + case.make("mean")(*_rows(case, data, rest), s[rest])
    ) / 2
    assert not torch.allclose(naive, full, rtol=1e-3)


@pytest.mark.parametrize("reduction", ["mean", "sum", "per_sample", "none"])
def test_all_ignored_gives_zero_and_zero_gradients(reduction):
    x = torch.randn(6, 5, 3, requires_grad=True)
    t = torch.full((6, 3), -100)
    for loss in (el.CrossEntropyLoss(reduction=reduction), el.NLLLoss(reduction=reduction)):
        out = loss(x, t)
        assert torch.all(out == 0) and not torch.isnan(out).any()
        (g,) = torch.autograd.grad(out.sum(), x)
        assert torch.all(g == 0)


def test_zero_denominators(case):
    *data, s = make_inputs(case, N, weighting="sample_weight")
    reduction = "batchmean" if "batchmean" in case.reductions else "mean"
    for args in [(*data, torch.zeros(N)), (*data, s, torch.tensor(0.0))]:
        out = case.make(reduction)(*args)
        (g,) = torch.autograd.grad(out, data[0])
        assert out.item() == 0.0 and torch.all(g == 0)


def test_empty_batch(case):
    data = make_inputs(case, 0)
    x = data[0]
    for reduction in case.reductions:
        out = case.make(reduction)(*data)
        if reduction in ("none", "per_sample"):
            assert out.shape[0] == 0
        else:
            assert out.shape == () and out.item() == 0.0
        (g,) = torch.autograd.grad(out.sum(), x)
        assert g.shape == x.shape


def test_ignored_and_zero_weight_positions_contribute_exactly_zero(case):
    x, *rest, s = make_inputs(case, N, weighting="sample_weight")
    t = rest[0]
    poisoned = x.detach().clone()
    poisoned[1] = float("nan")  # sample 1 has weight 0
    if case.name.startswith(("ce", "nll")) and not t.is_floating_point():
        ignore = case.make("none").ignore_index
        t = t.clone()
        t[2] = ignore
        poisoned[2] = float("inf")
    for reduction in case.reductions:
        clean = case.make(reduction)(x.detach(), t, *rest[1:], s)
        dirty = case.make(reduction)(poisoned, t, *rest[1:], s)
        assert torch.isfinite(dirty).all(), reduction
        torch.testing.assert_close(dirty, clean, rtol=RTOL, atol=ATOL)


def test_nan_in_a_counted_position_propagates():
    x, t = make_inputs(CASES["mse"], N)
    x = x.detach().clone()
    x[0, 0, 0] = float("nan")
    assert torch.isnan(el.MSELoss()(x, t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_mean_accumulates_in_float32(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4096, 4, generator=g).sign() * 1e4).to(dtype)
    t = torch.randint(0, 4, (4096,), generator=g)
    out = el.CrossEntropyLoss()(x, t)
    ref = nn.CrossEntropyLoss()(x.float(), t)
    assert out.dtype == dtype and torch.isfinite(out)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=0)
    big = torch.full((70000,), 200.0, dtype=dtype)  # each term 40,000: their fp16 sum overflows
    mean = el.MSELoss(reduction="mean")(big, torch.zeros_like(big))
    assert mean.item() == torch.tensor(40000.0, dtype=dtype).item()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_output_dtype_is_input_dtype(case, dtype):
    data = cast(make_inputs(case, N), dtype)
    for reduction in case.reductions:
        assert case.make(reduction)(*data).dtype == dtype


def test_autocast_computes_in_float32(case):
    if case.name.startswith("linear_ce"):
        pytest.skip("its matmul runs in the autocast dtype, as F.linear's: tests/test_linear_ce.py")
    data = cast(make_inputs(case, N), torch.bfloat16)
    for reduction in ("none", "mean"):
        loss = case.make(reduction)
        ref = loss(*cast(data, torch.float32))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = loss(*data)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)


def test_autocast_leaves_float64_alone(case):
    """Autocast upcasts half precision only: float64 stays float64, as in torch.nn."""
    data = cast(make_inputs(case, N), torch.float64)
    loss = case.make("mean")
    ref = loss(*data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(*data)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_per_sample_gradients_with_torch_func(case):
    """DP-SGD style: vmap(grad) over samples equals one autograd call per sample."""
    torch.manual_seed(0)
    x, *rest = (a.detach() for a in make_inputs(case, N))
    features = x[0].numel()
    w = torch.randn(features, features, requires_grad=True)
    loss = case.make("sum")
    dims = [0 if case.is_batched(i + 1) else None for i in range(len(rest))]

    def per_example(weight, xi, *ri):
        out = (xi.reshape(-1) @ weight).reshape(xi.shape)
        return loss(out.unsqueeze(0), *(r if d is None else r.unsqueeze(0) for r, d in zip(ri, dims)))

    grads = torch.func.vmap(torch.func.grad(per_example), in_dims=(None, 0, *dims))(w, x, *rest)
    for i in range(N):
        (ref,) = torch.autograd.grad(per_example(w, x[i], *(r if d is None else r[i] for r, d in zip(rest, dims))), w)
        torch.testing.assert_close(grads[i], ref, rtol=RTOL, atol=ATOL)


def test_unbatched_inputs_match_torch_nn():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(C := 5, generator=g, requires_grad=True)
    for target in (torch.tensor(3), torch.softmax(torch.randn(C, generator=g), 0)):
        for reduction in ("none", "mean", "sum"):
            ours = el.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)(x, target)
            ref = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)(x, target)
            torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(el.NLLLoss()(x, torch.tensor(2)), nn.NLLLoss()(x, torch.tensor(2)))
    scalar, other = torch.tensor(1.5), torch.tensor(-0.5)
    for ours, ref in [(el.MSELoss(), nn.MSELoss()), (el.HuberLoss(), nn.HuberLoss()), (el.L1Loss(), nn.L1Loss())]:
        torch.testing.assert_close(ours(scalar, other), ref(scalar, other))
    with pytest.raises(ValueError, match="per_sample"):
        el.MSELoss(reduction="per_sample")(scalar, other)
    with pytest.raises(ValueError, match="sample_weight"):
        el.CrossEntropyLoss()(x, torch.tensor(1), torch.ones(1))


def test_legacy_size_average_and_reduce():
    with pytest.warns(DeprecationWarning):
        assert el.MSELoss(size_average=False).reduction == "sum"
    with pytest.warns(DeprecationWarning):
        assert el.CrossEntropyLoss(reduce=False).reduction == "none"


def test_functional_twins_match_modules():
    x, t = make_inputs(CASES["ce_weight_ls_spatial"], N)
    torch.testing.assert_close(
        LF.cross_entropy(
            x, t, weight=CASES["ce_weight_ls_spatial"].make("mean").weight, ignore_index=1, label_smoothing=0.2
        ),
        CASES["ce_weight_ls_spatial"].make("mean")(x, t),
    )
    x, t = make_inputs(CASES["smooth_l1"], N)
    torch.testing.assert_close(LF.smooth_l1_loss(x, t, beta=0.5, reduction="sum"), CASES["smooth_l1"].make("sum")(x, t))


def test_out_of_range_class_index_gives_nan_not_a_crash():
    x = torch.randn(6, 5)
    t = torch.tensor([0, 1, 7, 2, -3, 4])
    out = el.CrossEntropyLoss(reduction="none")(x, t)
    assert torch.isnan(out[2]) and torch.isnan(out[4]) and torch.isfinite(out[[0, 1, 3, 5]]).all()
    with pytest.raises(ValueError, match=r"class index 7 at position \(2,\).*\[0, 4\]"):
        el.CrossEntropyLoss(validate=True)(x, t)
    with pytest.raises(ValueError, match="class index 7"):
        el.NLLLoss(validate=True)(x, t)


def test_inputs_are_not_modified(case):
    args = make_inputs(case, N, weighting="sample_weight")
    before = [a.detach().clone() for a in args]
    out = case.make("mean")(*args)
    out.backward()
    for a, b in zip(args, before):
        assert torch.equal(a.detach(), b)
