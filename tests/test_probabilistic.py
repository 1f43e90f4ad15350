"""Poisson / Gaussian NLL, margin ranking, triplet margin and cosine embedding beyond the generic
tests: unbatched and odd shapes against torch.nn, every error, the Gaussian variance check
(eager only), the full=True terms, swap and every norm degree, hinge boundaries, and PyTorch's
own module_db inputs."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import exportable_loss as el
from exportable_loss import functional as LF

REDUCTIONS = ("none", "mean", "sum")


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]


def _grads(out, wrt):
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    return torch.autograd.grad((out * g).sum(), wrt, allow_unused=True)


def assert_twin(ours, theirs, *data, finite_where_torch_nan=None):
    """ours(*data) equals theirs(*data), forward and the gradients of every floating input.

    finite_where_torch_nan: index of the input whose gradient may be finite where torch.nn's is
    NaN (Poisson's target at a zero count with full=True, a deliberate difference).
    """
    a, b = _leaves(*data), _leaves(*data)
    out, ref = ours(*a), theirs(*b)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, equal_nan=True)
    wrt_a = [t for t in a if t.requires_grad]
    wrt_b = [t for t in b if t.requires_grad]
    for i, got, want in zip(range(len(wrt_a)), _grads(out, wrt_a), _grads(ref, wrt_b)):
        if want is None:
            assert got is None or torch.all(got == 0)
            continue
        if i == finite_where_torch_nan:
            torch_nan = torch.isnan(want) & ~torch.isnan(data[i])
            assert torch.all(data[i][torch_nan] <= 0) and torch.isfinite(got[torch_nan]).all()
            want = torch.where(torch_nan, got, want)
        torch.testing.assert_close(got, want)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- unbatched and other shapes


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched_inputs_match_torch_nn(reduction):
    g = _g()
    scalar = [torch.randn((), generator=g) for _ in range(3)]
    vec = [torch.randn(4, generator=g) for _ in range(3)]
    sign, counts = torch.tensor(-1.0), torch.tensor(3.0)
    assert_twin(
        el.PoissonNLLLoss(full=True, reduction=reduction),
        nn.PoissonNLLLoss(full=True, reduction=reduction),
        scalar[0],
        counts,
    )
    assert_twin(
        el.GaussianNLLLoss(reduction=reduction),
        nn.GaussianNLLLoss(reduction=reduction),
        scalar[0],
        scalar[1],
        torch.tensor(0.7),
    )
    # (D,) input with a 0-dim variance: torch.nn's "one dimension fewer" rule
    assert_twin(
        el.GaussianNLLLoss(reduction=reduction),
        nn.GaussianNLLLoss(reduction=reduction),
        vec[0],
        vec[1],
        torch.tensor(0.7),
    )
    assert_twin(
        el.MarginRankingLoss(0.5, reduction=reduction),
        nn.MarginRankingLoss(0.5, reduction=reduction),
        scalar[0],
        scalar[1],
        sign,
    )
    assert_twin(el.TripletMarginLoss(reduction=reduction), nn.TripletMarginLoss(reduction=reduction), *vec)
    assert_twin(
        el.TripletMarginLoss(swap=True, reduction=reduction),
        nn.TripletMarginLoss(swap=True, reduction=reduction),
        *scalar,
    )
    assert_twin(
        el.CosineEmbeddingLoss(0.1, reduction=reduction),
        nn.CosineEmbeddingLoss(0.1, reduction=reduction),
        vec[0],
        vec[1],
        sign,
    )
    assert_twin(
        el.CosineEmbeddingLoss(reduction=reduction),
        nn.CosineEmbeddingLoss(reduction=reduction),
        vec[0],
        vec[1],
        torch.tensor(1),
    )


def test_unbatched_inputs_have_no_per_sample_or_sample_weight():
    v = torch.randn(4)
    with pytest.raises(ValueError, match="per_sample"):
        el.TripletMarginLoss(reduction="per_sample")(v, v, v)
    with pytest.raises(ValueError, match="sample_weight"):
        el.CosineEmbeddingLoss()(v, v, torch.tensor(1.0), torch.ones(1))
    with pytest.raises(ValueError, match="per_sample"):
        el.MarginRankingLoss(reduction="per_sample")(v[0], v[1], torch.tensor(1.0))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_extra_dimensions_match_torch_nn(reduction):
    g = _g(1)
    x = [torch.randn(3, 2, 4, generator=g) for _ in range(3)]
    assert_twin(
        el.PoissonNLLLoss(reduction=reduction), nn.PoissonNLLLoss(reduction=reduction), x[0], x[1].abs().round()
    )
    assert_twin(el.TripletMarginLoss(p=3.0, reduction=reduction), nn.TripletMarginLoss(p=3.0, reduction=reduction), *x)
    signs = torch.randint(0, 2, (3, 2, 4), generator=g).float() * 2 - 1
    assert_twin(
        el.MarginRankingLoss(0.2, reduction=reduction),
        nn.MarginRankingLoss(0.2, reduction=reduction),
        x[0],
        x[1],
        signs,
    )
    # integer targets, as torch.nn accepts them
    assert_twin(
        el.PoissonNLLLoss(reduction=reduction), nn.PoissonNLLLoss(reduction=reduction), x[0], x[1].abs().round().long()
    )
    assert_twin(
        el.CosineEmbeddingLoss(reduction=reduction),
        nn.CosineEmbeddingLoss(reduction=reduction),
        x[0][:, 0],
        x[1][:, 0],
        torch.tensor([1, -1, 1]),
    )


def test_per_sample_of_extra_dimensions_is_the_mean_over_them():
    a, p, n = (torch.randn(5, 3, 4, generator=_g(i)) for i in range(3))
    per_sample = el.TripletMarginLoss(margin=2.0, reduction="per_sample")(a, p, n)
    torch.testing.assert_close(per_sample, F.triplet_margin_loss(a, p, n, margin=2.0, reduction="none").mean(1))


# ---------------------------------------------------------------- Poisson


@pytest.mark.parametrize("log_input", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_poisson_full_matches_torch_nn_around_the_stirling_cut(log_input, reduction):
    # the Stirling term is added only where target > 1: 1 and below (0.5, 1e-3) get none
    target = torch.tensor([[0.5, 1.0, 1.0 + 1e-6, 2.0], [1e-3, 3.0, 7.5, 40.0]])
    x = torch.tensor([[0.3, -1.0, 2.0, 0.1], [1.5, 0.2, 2.5, 3.0]])
    if not log_input:
        x = x.exp()
    ours = el.PoissonNLLLoss(log_input=log_input, full=True, eps=1e-6, reduction=reduction)
    theirs = nn.PoissonNLLLoss(log_input=log_input, full=True, eps=1e-6, reduction=reduction)
    assert_twin(ours, theirs, x, target)
    partial = el.PoissonNLLLoss(log_input=log_input, reduction="none")(x, target)
    stirling = target * target.log() - target + 0.5 * torch.log(2 * math.pi * target)
    torch.testing.assert_close(
        el.PoissonNLLLoss(log_input=log_input, full=True, reduction="none")(x, target),
        partial + torch.where(target > 1, stirling, 0.0),
    )


def test_poisson_zero_counts_give_a_finite_target_gradient():
    """Deliberate: torch.nn's target gradient is NaN at a zero (or negative) count with full=True,
    although no Stirling term is added there; ours is the gradient of what is computed."""
    x = torch.tensor([0.5, -0.2, 1.0])
    target = torch.tensor([0.0, 0.0, 3.0])
    ours_x, ours_t = _leaves(x, target)
    ref_x, ref_t = _leaves(x, target)
    out = el.PoissonNLLLoss(full=True, reduction="sum")(ours_x, ours_t)
    ref = nn.PoissonNLLLoss(full=True, reduction="sum")(ref_x, ref_t)
    torch.testing.assert_close(out, ref)
    gx, gt = torch.autograd.grad(out, [ours_x, ours_t])
    rx, rt = torch.autograd.grad(ref, [ref_x, ref_t])
    torch.testing.assert_close(gx, rx)
    assert torch.isnan(rt[:2]).all()  # torch.nn's
    torch.testing.assert_close(gt[:2], -x[:2])  # d/dt of exp(x) - t * x
    torch.testing.assert_close(gt[2], rt[2])


def test_poisson_nan_target_propagates_as_in_torch_nn():
    x, t = torch.zeros(3), torch.tensor([float("nan"), 0.0, 2.0])
    out = el.PoissonNLLLoss(full=True, reduction="none")(x, t)
    ref = nn.PoissonNLLLoss(full=True, reduction="none")(x, t)
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert torch.isnan(out[0]) and torch.isfinite(out[1:]).all()


def test_poisson_rate_input_uses_eps_inside_the_log():
    x, t = torch.tensor([0.0, 1e-9]), torch.tensor([2.0, 1.0])
    for eps in (1e-8, 0.5):
        torch.testing.assert_close(
            el.PoissonNLLLoss(log_input=False, eps=eps, reduction="none")(x, t),
            x - t * torch.log(x + eps),
        )
        torch.testing.assert_close(
            el.PoissonNLLLoss(log_input=False, eps=eps, reduction="none")(x, t),
            nn.PoissonNLLLoss(log_input=False, eps=eps, reduction="none")(x, t),
        )


# ---------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "input_shape, var_shape",
    [
        ((4, 3), (4, 3)),
        ((4, 3), (4,)),
        ((4, 3), (4, 1)),
        ((4, 3), (1, 3)),  # module_db's "homoscedastic": one variance per feature, broadcast over the batch
        ((4, 3, 2), (4, 1, 2)),
        ((4, 3, 2), (4, 3)),
        ((4, 3, 1), (4, 3)),
        ((4, 0), (4, 1)),
    ],
)
def test_gaussian_var_shapes_match_torch_nn(input_shape, var_shape, reduction):
    g = _g(2)
    x, t = torch.randn(input_shape, generator=g), torch.randn(input_shape, generator=g)
    var = torch.rand(var_shape, generator=g) + 0.05
    if x.numel() == 0 and reduction == "mean":
        # a deliberate difference from torch.nn (docs/semantics.md): its NaN mean of nothing is 0 here
        assert el.GaussianNLLLoss(reduction="mean")(x, t, var).item() == 0.0
        return
    for full in (False, True):
        assert_twin(
            el.GaussianNLLLoss(full=full, eps=0.1, reduction=reduction),
            nn.GaussianNLLLoss(full=full, eps=0.1, reduction=reduction),
            x,
            t,
            var,
        )
    out = el.GaussianNLLLoss(reduction="none")(x, t, var)
    assert out.shape == x.shape  # per-element loss has input's shape whatever var's is


def test_gaussian_float_var_matches_torch_nn():
    x, t = torch.randn(5, 3, generator=_g(3)), torch.randn(5, 3, generator=_g(4))
    for var in (0.7, 1e-9, 0.0):
        for reduction in REDUCTIONS:
            ours = el.GaussianNLLLoss(reduction=reduction)
            theirs = nn.GaussianNLLLoss(reduction=reduction)
            assert_twin(lambda a, b, m=ours, v=var: m(a, b, v), lambda a, b, m=theirs, v=var: m(a, b, v), x, t)
    assert_twin(
        lambda a, b: LF.gaussian_nll_loss(a, b, 2, reduction="sum"),
        lambda a, b: F.gaussian_nll_loss(a, b, 2.0, reduction="sum"),
        x,
        t,
    )


def test_gaussian_clamp_is_invisible_to_autograd_as_in_torch_nn():
    # var below eps (and 0): the loss sees eps, the gradient still flows into var
    x = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    t = torch.tensor([[0.0, 0.0, 1.0, 0.1]])
    var = torch.tensor([[1e-8, 0.0, 0.5, 1e-3]])
    for reduction in REDUCTIONS:
        assert_twin(
            el.GaussianNLLLoss(eps=1e-3, reduction=reduction),
            nn.GaussianNLLLoss(eps=1e-3, reduction=reduction),
            x,
            t,
            var,
        )
    v = var.clone().requires_grad_(True)
    el.GaussianNLLLoss(eps=1e-3, reduction="sum")(x, t, v).backward()
    assert torch.all(v.grad != 0)


def _small_variances(n: int):
    g = _g(n)
    x, t = torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)
    var = torch.rand(n, 3, generator=g) + 0.2
    var.view(-1)[::4] = 1e-3  # below eps = 0.1
    var.view(-1)[1::5] = 0.0
    return x, t, var


@pytest.mark.parametrize("path", ["script", "compile", "export", "onnx_dynamo", "onnx_torchscript"])
def test_every_path_clamps_small_variances_as_torch_nn(path, tmp_path):
    """Variances below eps (kept out of the generic cases: gradcheck rejects torch.nn's
    straight-through gradient) give torch.nn's loss and gradients on every path."""
    loss = el.GaussianNLLLoss(eps=0.1, reduction="per_sample")
    theirs = lambda x, t, v: nn.GaussianNLLLoss(eps=0.1, reduction="none")(x, t, v).mean(1)  # noqa: E731
    if path == "script":
        fn = torch.jit.script(loss)
    elif path == "compile":
        torch._dynamo.reset()
        fn = torch.compile(loss, fullgraph=True, dynamic=True, backend="aot_eager")
    elif path == "export":
        batch = torch.export.Dim("batch", min=2)
        fn = torch.export.export(loss, _small_variances(6), dynamic_shapes=({0: batch},) * 3).module()
    else:
        from exportable_loss.export import export_onnx, run_onnx

        onnx_path = export_onnx(loss, _small_variances(6), str(tmp_path / "g.onnx"), dynamo=path == "onnx_dynamo")
        data = _small_variances(9)
        torch.testing.assert_close(run_onnx(onnx_path, data)[0], theirs(*data), rtol=1e-4, atol=1e-5)
        return
    assert_twin(fn, theirs, *_small_variances(9))


def test_gaussian_infinite_and_nan_var_as_torch_nn():
    x, t = torch.zeros(1, 3), torch.ones(1, 3)
    var = torch.tensor([[float("inf"), float("nan"), 1.0]])
    out = el.GaussianNLLLoss(reduction="none")(x, t, var)
    torch.testing.assert_close(out, nn.GaussianNLLLoss(reduction="none")(x, t, var), equal_nan=True)
    assert out[0, 0] == float("inf") and torch.isnan(out[0, 1])


def test_gaussian_negative_var_raises_in_eager_mode():
    x, t = torch.randn(4, 3), torch.randn(4, 3)
    var = torch.rand(4, 3) + 0.1
    var[2, 1] = -0.5
    with pytest.raises(ValueError, match="negative entry"):
        nn.GaussianNLLLoss()(x, t, var)  # torch.nn raises as well
    with pytest.raises(ValueError, match="var must be non-negative"):
        el.GaussianNLLLoss()(x, t, var)
    with pytest.raises(ValueError, match="var must be non-negative"):
        LF.gaussian_nll_loss(x, t, var)
    with pytest.raises(ValueError, match="var must be non-negative; got -1.0"):
        el.GaussianNLLLoss()(x, t, -1.0)
    # validate=False: no check (no sync); a negative variance is clamped to eps like a small one
    clamped = var.clamp_min(1e-6)
    torch.testing.assert_close(el.GaussianNLLLoss(validate=False)(x, t, var), nn.GaussianNLLLoss()(x, t, clamped))
    torch.testing.assert_close(LF.gaussian_nll_loss(x, t, var, validate=False), F.gaussian_nll_loss(x, t, clamped))


def test_gaussian_negative_var_check_stays_out_of_compiled_graphs():
    x, t = torch.randn(6, 3), torch.randn(6, 3)
    var = torch.rand(6, 3) + 0.1
    var[0, 0] = -0.5
    expected = el.GaussianNLLLoss(validate=False)(x, t, var)
    torch._dynamo.reset()
    # fullgraph=True: a value-dependent check (a sync) would be a graph break, and an error
    compiled = torch.compile(el.GaussianNLLLoss(), fullgraph=True, dynamic=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, t, var), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(el.GaussianNLLLoss(), (x, t, var))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    reads = ("local_scalar_dense", "_assert_async", "aten.any", "aten.item", "nonzero")
    assert "aten.log.default" in targets and not any(r in name for name in targets for r in reads), targets
    torch.testing.assert_close(program.module()(x, t, var), expected)
    scripted = torch.jit.script(el.GaussianNLLLoss())
    torch.testing.assert_close(scripted(x, t, var), expected)


def test_gaussian_scripted_module_takes_a_float_var():
    x, t = torch.randn(5, 3), torch.randn(5, 3)
    scripted = torch.jit.script(el.GaussianNLLLoss(full=True, reduction="per_sample"))
    torch.testing.assert_close(scripted(x, t, 0.5), el.GaussianNLLLoss(full=True, reduction="per_sample")(x, t, 0.5))
    torch.testing.assert_close(scripted(x, t, torch.full((5,), 0.5)), scripted(x, t, 0.5))


def test_gaussian_vmap_skips_the_value_check():
    x, t, var = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4, 3) + 0.1
    loss = el.GaussianNLLLoss(reduction="sum")
    out = torch.func.vmap(lambda a, b, v: loss(a[None], b[None], v[None]))(x, t, var)
    torch.testing.assert_close(out, nn.GaussianNLLLoss(reduction="none")(x, t, var).sum(1))


# ---------------------------------------------------------------- ranking, triplet, cosine


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, float("inf"), 0.0, -1.0])
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_every_norm_degree_and_swap_match_torch_nn(p, swap):
    g = _g(5)
    anchor = torch.randn(9, 4, generator=g)
    positive = anchor + torch.randn(9, 4, generator=g) * torch.tensor([0.5, 2.0, 2.0]).repeat(3)[:, None]
    # negatives near the anchor, far from both, and near a far positive (where swap matters)
    near_anchor = anchor + torch.randn(9, 4, generator=g) * 0.2
    far = anchor + torch.randn(9, 4, generator=g) * 3.0
    near_positive = positive + torch.randn(9, 4, generator=g) * 0.3
    negative = torch.stack([near_anchor, far, near_positive], 1)[torch.arange(9), torch.arange(9) % 3]
    for reduction in REDUCTIONS:
        ours = el.TripletMarginLoss(margin=0.7, p=p, eps=1e-4, swap=swap, reduction=reduction)
        theirs = nn.TripletMarginLoss(margin=0.7, p=p, eps=1e-4, swap=swap, reduction=reduction)
        assert_twin(ours, theirs, anchor, positive, negative)
    if swap:
        # the swap must change something for this test to mean anything
        plain = F.triplet_margin_loss(anchor, positive, negative, margin=0.7, p=p, eps=1e-4, reduction="none")
        swapped = el.TripletMarginLoss(margin=0.7, p=p, eps=1e-4, swap=True, reduction="none")(
            anchor, positive, negative
        )
        assert p <= 0 or not torch.equal(plain, swapped)


def test_triplet_eps_is_added_to_the_difference():
    a = torch.zeros(2, 4)
    # identical points: d(a, a) = ||eps * ones||_p, not eps
    out = el.TripletMarginLoss(margin=1.0, eps=0.1, reduction="none")(a, a, a + 10)
    d_neg = torch.linalg.vector_norm(torch.full((4,), -10 + 0.1), 2)
    torch.testing.assert_close(out, (1.0 + 0.2 - d_neg).clamp_min(0).expand(2))
    torch.testing.assert_close(out, F.triplet_margin_loss(a, a, a + 10, eps=0.1, reduction="none"))


def test_hinge_boundaries_pass_the_gradient_as_in_torch_nn():
    # margin + d_pos - d_neg exactly 0, and -y * (x1 - x2) + margin exactly 0: clamp_min's gradient
    x1, x2, y = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 2.5]), torch.tensor([1.0, -1.0])
    assert_twin(el.MarginRankingLoss(0.5, reduction="sum"), nn.MarginRankingLoss(0.5, reduction="sum"), x1, x2, y)
    a, p, n = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    assert_twin(el.TripletMarginLoss(1.0, p=1.0, eps=0.0), nn.TripletMarginLoss(1.0, p=1.0, eps=0.0), a, p, n)


def test_margin_ranking_target_gets_torch_nn_gradient():
    x1, x2, y = torch.randn(5), torch.randn(5), torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    y = y.requires_grad_(True)
    (gy,) = torch.autograd.grad(el.MarginRankingLoss(0.1, reduction="sum")(x1, x2, y), y)
    y2 = y.detach().clone().requires_grad_(True)
    (ry,) = torch.autograd.grad(nn.MarginRankingLoss(0.1, reduction="sum")(x1, x2, y2), y2)
    torch.testing.assert_close(gy, ry)
    assert torch.any(gy != 0)


def test_cosine_odd_targets_and_zero_vectors_match_torch_nn():
    x1 = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, -1.0, 0.0], [2.0, 0.5, 1.0]])
    x2 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.5], [-2.0, 0.5, 1.0]])
    for target in (torch.tensor([1, -1, 0, 2]), torch.tensor([1.0, -1.0, -1.0, 1.0]), torch.tensor([-1, 1, 1, -1])):
        for margin in (0.0, -0.5, 0.3):
            for reduction in REDUCTIONS:
                assert_twin(
                    el.CosineEmbeddingLoss(margin, reduction=reduction),
                    nn.CosineEmbeddingLoss(margin, reduction=reduction),
                    x1,
                    x2,
                    target,
                )
    out = el.CosineEmbeddingLoss(reduction="none")(x1, x2, torch.tensor([1, -1, 0, 2]))
    assert out[2] == 0 and out[3] == 0 and out[0] == 1  # zero vector: cos 0 (EPSILON), no NaN


def test_cosine_target_gets_no_gradient():
    x1, x2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    target = torch.tensor([1.0, -1.0, 1.0], requires_grad=True)
    out = el.CosineEmbeddingLoss()(x1, x2, target)
    _, gt = torch.autograd.grad(out, [x1, target], allow_unused=True)
    assert gt is None


# ---------------------------------------------------------------- errors


def _raises(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


def test_shapes_torch_nn_would_broadcast_raise_value_error_naming_them():
    a3, a1 = torch.randn(3), torch.randn(1)
    m32, m12 = torch.randn(3, 2), torch.randn(1, 2)
    # torch.nn broadcasts every one of these
    nn.MarginRankingLoss()(a3, a3, a1)
    nn.PoissonNLLLoss()(m32, m12)
    nn.TripletMarginLoss()(m32, m12, m32)
    nn.CosineEmbeddingLoss()(m32, m12, torch.ones(3))
    nn.CosineEmbeddingLoss()(m32, m32, torch.ones(1))
    nn.GaussianNLLLoss()(m32, m12, torch.ones(3, 2))
    _raises(
        lambda: el.MarginRankingLoss()(a3, a3, a1), r"input1, input2 and target must have the same shape.*target \(1,\)"
    )
    _raises(lambda: el.MarginRankingLoss()(a1, a3, a3), r"input1 \(1,\), input2 \(3,\)")
    _raises(lambda: el.PoissonNLLLoss()(m32, m12), r"same shape.*\(3, 2\).*\(1, 2\)")
    _raises(lambda: el.TripletMarginLoss()(m32, m12, m32), r"positive \(1, 2\)")
    _raises(
        lambda: el.CosineEmbeddingLoss()(m32, m12, torch.ones(3)),
        r"input1 and input2 must have the same shape.*\(1, 2\)",
    )
    _raises(lambda: el.CosineEmbeddingLoss()(m32, m32, torch.ones(1)), r"target must have shape \(3,\).*target \(1,\)")
    _raises(
        lambda: el.GaussianNLLLoss()(m32, m12, torch.ones(3, 2)), r"input and target must have the same shape.*\(1, 2\)"
    )


def test_shapes_torch_nn_rejects_raise_value_error():
    v, m = torch.randn(4), torch.randn(4, 3)
    with pytest.raises(RuntimeError):
        nn.MarginRankingLoss()(v, v, m)
    _raises(lambda: el.MarginRankingLoss()(v, v, m), r"target \(4, 3\)")
    with pytest.raises(RuntimeError):
        nn.TripletMarginLoss()(m, v, m)
    _raises(lambda: el.TripletMarginLoss()(m, v, m), r"anchor \(4, 3\), positive \(4,\), negative \(4, 3\)")
    for x1, target in [
        (m, torch.ones(4, 1)),
        (v, torch.ones(4)),
        (m, torch.tensor(1.0)),
        (torch.randn(2, 4, 3), torch.ones(2)),
    ]:
        with pytest.raises(RuntimeError):
            nn.CosineEmbeddingLoss()(x1, x1, target)
        with pytest.raises(ValueError, match=r"\(N, D\) with target \(N,\), or \(D,\) with a 0-dim target"):
            el.CosineEmbeddingLoss()(x1, x1, target)
    with pytest.raises(RuntimeError):
        nn.CosineEmbeddingLoss()(m, m, torch.ones(5))
    _raises(lambda: el.CosineEmbeddingLoss()(m, m, torch.ones(5)), r"target must have shape \(4,\)")


@pytest.mark.parametrize(
    "input_shape, var_shape",
    [
        ((4, 3), (4, 2)),
        ((4, 3), ()),
        ((4, 3, 2), (4, 1, 1)),
        ((4, 3), (3,)),
        ((4, 1), (4, 3)),
        ((4, 3), (4, 3, 1)),
        ((4, 2, 3), (4, 0, 1)),
    ],
)
def test_gaussian_var_of_incorrect_size_raises(input_shape, var_shape):
    x, var = torch.randn(input_shape), torch.rand(var_shape)
    with pytest.raises((ValueError, RuntimeError)):
        nn.GaussianNLLLoss()(x, x, var)
    with pytest.raises(ValueError, match=rf"var must have input's shape.*got var {re_shape(var_shape)}"):
        el.GaussianNLLLoss()(x, x, var)


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_option_and_dtype_errors():
    m = torch.randn(4, 3)
    with pytest.raises(ValueError, match="margin to be greater than 0"):
        nn.TripletMarginLoss(margin=0.0)
    for margin in (0.0, -1.0):
        with pytest.raises(ValueError, match="margin must be greater than 0"):
            el.TripletMarginLoss(margin=margin)
        with pytest.raises(ValueError, match="margin must be greater than 0"):
            LF.triplet_margin_loss(m, m, m, margin=margin)
    _raises(lambda: el.PoissonNLLLoss(reduction="batchmean"), "reduction must be one of")
    _raises(lambda: el.CosineEmbeddingLoss(backend="cuda"), "backend must be one of")
    _raises(lambda: LF.margin_ranking_loss(m, m, m, reduction="avg"), "reduction must be one of")
    ints = torch.ones(4, 3, dtype=torch.long)
    _raises(lambda: el.PoissonNLLLoss()(ints, m), "input must be a floating-point tensor")
    _raises(lambda: el.MarginRankingLoss()(m, ints, m), "input2 must be a floating-point tensor")
    _raises(lambda: el.TripletMarginLoss()(m, m, ints), "negative must be a floating-point tensor")
    _raises(lambda: el.CosineEmbeddingLoss()(ints, m, torch.ones(4)), "input1 must be a floating-point tensor")
    _raises(lambda: el.GaussianNLLLoss()(m, m, ints), "var must be a floating-point tensor")
    _raises(lambda: el.GaussianNLLLoss()(m, m, "1.0"), "var must be a tensor or a float; got str")
    _raises(lambda: el.MarginRankingLoss()(m, m, m > 0), "target must have a real, non-bool dtype")
    _raises(lambda: el.MarginRankingLoss(reduction="sum")(m, m, m, None, torch.tensor(2.0)), "normalizer is used only")
    _raises(lambda: el.TripletMarginLoss()(m, m, m, torch.ones(3)), r"sample_weight must have shape \(4,\)")
    with pytest.raises(TypeError):
        el.GaussianNLLLoss(True)  # keyword-only, as torch.nn's


def test_legacy_size_average_and_reduce():
    for cls in (el.PoissonNLLLoss, el.MarginRankingLoss, el.TripletMarginLoss, el.CosineEmbeddingLoss):
        with pytest.warns(DeprecationWarning):
            assert cls(size_average=False).reduction == "sum"
        with pytest.warns(DeprecationWarning):
            assert cls(reduce=False).reduction == "none"


def test_constructor_arguments_mirror_torch_nn():
    import inspect

    for ours, theirs in [
        (el.PoissonNLLLoss, nn.PoissonNLLLoss),
        (el.GaussianNLLLoss, nn.GaussianNLLLoss),
        (el.MarginRankingLoss, nn.MarginRankingLoss),
        (el.TripletMarginLoss, nn.TripletMarginLoss),
        (el.CosineEmbeddingLoss, nn.CosineEmbeddingLoss),
    ]:
        mine = inspect.signature(ours.__init__).parameters
        ref = inspect.signature(theirs.__init__).parameters
        assert list(mine)[: len(ref)] == list(ref), ours
        for name, param in ref.items():
            assert mine[name].default == param.default and mine[name].kind == param.kind, (ours, name)


# ---------------------------------------------------------------- PyTorch's own inputs

TWINS = {
    nn.PoissonNLLLoss: el.PoissonNLLLoss,
    nn.GaussianNLLLoss: el.GaussianNLLLoss,
    nn.MarginRankingLoss: el.MarginRankingLoss,
    nn.TripletMarginLoss: el.TripletMarginLoss,
    nn.CosineEmbeddingLoss: el.CosineEmbeddingLoss,
}


def _module_db_infos():
    try:
        import expecttest  # noqa: F401
        from torch.testing._internal.common_modules import module_db
    except Exception:  # noqa: BLE001  (module_db is internal: skip whatever stops it importing)
        return []
    return [info for info in module_db if info.module_cls in TWINS]


INFOS = _module_db_infos()


@pytest.mark.skipif(not INFOS, reason="torch.testing's module_db is not importable (needs expecttest)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("info", INFOS, ids=[i.module_cls.__name__ for i in INFOS])
def test_module_db_inputs(info, dtype):
    inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True)
    assert inputs, "module_db returned no inputs"
    for sample in inputs:
        c = sample.constructor_input
        theirs = info.module_cls(*c.args, **c.kwargs)
        ours = TWINS[info.module_cls](*c.args, **c.kwargs)
        data = sample.forward_input.args
        assert not sample.forward_input.kwargs
        full_poisson = isinstance(theirs, nn.PoissonNLLLoss) and theirs.full
        assert_twin(ours, theirs, *data, finite_where_torch_nan=1 if full_poisson else None)


def test_module_db_has_these_losses():
    if not INFOS:
        pytest.skip("module_db not importable")
    # TripletMarginLoss has no module_db entry; the four others must be found, or this file tests nothing
    assert {i.module_cls for i in INFOS} >= {
        nn.PoissonNLLLoss,
        nn.GaussianNLLLoss,
        nn.MarginRankingLoss,
        nn.CosineEmbeddingLoss,
    }


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_elementwise_is_bit_identical_to_torch_nn(dtype):
    """The same operators in the same order as ATen: reduction="none" agrees bit for bit."""
    g = _g(7)
    a, b, c = (torch.randn(8, 4, generator=g).to(dtype) for _ in range(3))
    y = (torch.randint(0, 2, (8,), generator=g) * 2 - 1).to(dtype)
    for ours, theirs, data in [
        (el.TripletMarginLoss, nn.TripletMarginLoss, (a, b, c)),
        (el.CosineEmbeddingLoss, nn.CosineEmbeddingLoss, (a, b, y)),
        (el.MarginRankingLoss, nn.MarginRankingLoss, (a[:, 0], b[:, 0], y)),
        (el.PoissonNLLLoss, nn.PoissonNLLLoss, (a, (b * 3).abs().round())),
        (el.GaussianNLLLoss, nn.GaussianNLLLoss, (a, b, c.abs())),
    ]:
        kwargs = {"full": True} if ours in (el.PoissonNLLLoss, el.GaussianNLLLoss) else {}
        out = ours(reduction="none", **kwargs)(*data)
        assert out.dtype == dtype and torch.equal(out, theirs(reduction="none", **kwargs)(*data)), ours
