"""Per-call cost on the torch backend: the ATen operators one forward+backward dispatches, ours
against torch.nn's (the baselines of exportable_loss.bench.cases), bounded so that a fast path
cannot silently stop applying; and the fast path's edges against torch.nn and the general path."""

import pytest
import torch
import torch.nn.functional as F

import exportable_loss.functional as LF
from exportable_loss.bench import ops
from exportable_loss.bench.cases import cases, step

# operators ours may dispatch beyond torch.nn's per forward+backward, by configuration (class
# losses at C = 16, batch 8; cross entropy reads whether a row is ignored: a min and its item). Before
# the fast path: +31 to +38.
CLASS_EXTRA = {"plain": 2, "class weights": 3, "label smoothing": 2, "sample weights": 2}


@pytest.mark.parametrize("case", cases(["cross_entropy", "nll"], classes=(16,)), ids=lambda c: c.label)
def test_class_losses_dispatch_about_as_many_operators_as_torch_nn(case):
    args = case.inputs(8)
    ours = ops.count(step(case.ours(), args))["compute"]
    base = ops.count(step(case.baseline(), args))["compute"]
    assert base > 0 and ours <= base + CLASS_EXTRA[case.config], (ours, base)


# the other losses (element-wise, probabilistic, ranking) at batch 8, 256 elements per sample:
# plain within 1 operator of torch.nn's; sample weights within 4 of torch.nn's loss weighted by
# hand (the read that no weight is 0, the finite weighted sum's, the denominator's; before the
# finite-sum path of the sample-weighted mean: +16, before the per-sample sums: +7)
OTHER_EXTRA = {"plain": 1, "class weights": 1, "sample weights": 4}


@pytest.mark.parametrize("case", [c for c in cases(classes=(16,)) if c.classes is None], ids=lambda c: c.label)
def test_other_losses_dispatch_about_as_many_operators_as_torch_nn(case):
    args = case.inputs(8)
    ours = ops.count(step(case.ours(), args))["compute"]
    base = ops.count(step(case.baseline(), args))["compute"]
    assert base > 0 and ours <= base + OTHER_EXTRA[case.config], (ours, base)


def _grads(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g


# ignore_index below the classes (torch.nn's default), above them, and one of them: the fast path
# finds ignored rows by a min, a max or a comparison
IGNORE_INDICES = [-100, 5, 2]


@pytest.mark.parametrize("ignore_index", IGNORE_INDICES)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fast_path_edges_match_torch_nn_or_the_contract(weighted, reduction, smoothing, ignore_index):
    """Rows ignored, a batch fully ignored (0, not torch.nn's NaN), and an ignored row of NaN logits
    (exactly 0 gradient), with and without class weights and label smoothing."""
    g = torch.Generator().manual_seed(0)
    w = torch.rand(5, generator=g) + 0.5 if weighted else None
    x = torch.randn(6, 5, generator=g, requires_grad=True)
    ig = ignore_index
    t = torch.tensor([0, ig, 4, 3, ig, 1])
    kw = dict(reduction=reduction, label_smoothing=smoothing, ignore_index=ig)
    ours = LF.cross_entropy(x, t, w, **kw)
    ref = F.cross_entropy(x, t, w, **kw)
    torch.testing.assert_close(ours, ref)
    ref_grad = _grads(ref.sum(), x)
    torch.testing.assert_close(_grads(ours.sum(), x), ref_grad)

    everything_ignored = torch.full((6,), ig)
    out = LF.cross_entropy(x, everything_ignored, w, **kw)
    assert torch.all(out == 0) and torch.all(_grads(out.sum(), x) == 0)

    # ignored rows whose log-sum-exp is not finite: a NaN, a +inf, every logit -inf
    for row4 in ("inf at one class", "-inf everywhere"):
        poisoned = x.detach().clone()
        poisoned[1] = float("nan")
        if row4 == "inf at one class":
            poisoned[4, 0] = float("inf")
        else:
            poisoned[4] = float("-inf")
        poisoned.requires_grad_(True)
        out = LF.cross_entropy(poisoned, t, w, **kw)
        torch.testing.assert_close(out, ref.detach())
        grad = _grads(out.sum(), poisoned)
        assert torch.all(grad[[1, 4]] == 0), row4
        torch.testing.assert_close(grad[[0, 2, 3, 5]], ref_grad[[0, 2, 3, 5]])


@pytest.mark.parametrize("ignore_index", IGNORE_INDICES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_class_and_sample_weights_with_ignored_rows_match_the_formula(reduction, weighted, ignore_index):
    """sum(s * w[t] * nll) over the counted rows, / sum(s * w[t]) for the mean (float64 formula)."""
    g = torch.Generator().manual_seed(1)
    w = torch.rand(5, generator=g) + 0.5 if weighted else torch.ones(5)
    x = torch.randn(6, 5, generator=g, requires_grad=True)
    t = torch.tensor([0, ignore_index, 4, 3, 3, 1])
    s = torch.rand(6, generator=g) + 0.5
    out = LF.cross_entropy(
        x, t, w if weighted else None, ignore_index=ignore_index, reduction=reduction, sample_weight=s
    )
    x64 = x.detach().double().requires_grad_(True)
    counted = t != ignore_index
    safe = torch.where(counted, t, 0)
    nll = -torch.log_softmax(x64, 1).gather(1, safe[:, None]).squeeze(1)
    term = torch.where(counted, w.double()[safe] * s.double() * nll, 0.0)
    ref = (
        term.sum()
        if reduction == "sum"
        else term.sum() / torch.where(counted, w.double()[safe] * s.double(), 0.0).sum()
    )
    torch.testing.assert_close(out, ref.float())
    torch.testing.assert_close(_grads(out, x), _grads(ref, x64).float())


def test_fast_path_falls_back_where_it_cannot_match():
    """An index outside [0, C) is NaN at its position (ATen would raise); a zero-weight sample of
    NaN logits contributes exactly 0 (a dot product would give NaN)."""
    x = torch.randn(4, 3, requires_grad=True)
    out = LF.cross_entropy(x, torch.tensor([0, 7, 1, 2]), reduction="none")
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2, 3]]).all()
    poisoned = x.detach().clone()
    poisoned[2] = float("nan")
    poisoned.requires_grad_(True)
    s = torch.tensor([1.0, 2.0, 0.0, 1.0])
    t = torch.tensor([0, 2, 1, 2])
    out = LF.cross_entropy(poisoned, t, sample_weight=s)
    keep = [0, 1, 3]
    ref = (F.cross_entropy(x[keep], t[keep], reduction="none") * s[keep]).sum() / s.sum()
    torch.testing.assert_close(out, ref)
    grad = _grads(out, poisoned)
    assert torch.all(grad[2] == 0) and torch.isfinite(grad).all()


def test_paired_timing_finds_a_known_ratio():
    """A call that does the same work twice takes about twice as long: the paired ratio says so."""
    from exportable_loss.bench import timing

    x = torch.randn(256, 256)
    once = lambda: x @ x  # noqa: E731
    twice = lambda: (x @ x, x @ x)  # noqa: E731
    result = timing.paired(twice, once, budget=0.3)
    assert 1.3 < result.ratio < 3.0 and result.a.ms > result.b.ms


def test_sweep_writes_the_table_with_targets_and_names_the_misses(tmp_path):
    from exportable_loss.bench import sweep

    paths = sweep.run(str(tmp_path), ["mse"], sizes=(1, 512), modes=("eager",), budget=0.05)
    text = open(paths["md"]).read()
    rows = __import__("json").load(open(paths["json"]))["rows"]
    assert len(rows) == 4 and {r["n"] for r in rows} == {1, 512}
    assert all(
        r["target"] == (1.15 if r["n"] == 1 else 1.05) and r["meets"] == (r["ratio"] <= r["target"]) for r in rows
    )
    assert "| mse | plain |" in text and "| mse | sample weights |" in text
    for r in rows:
        if not r["meets"]:
            assert f"**no** (N={r['n']}" in text or f", {r['n']}" in text


def test_sweep_goes_on_past_a_baseline_that_does_not_compile(tmp_path):
    """torch.nn's Gaussian NLL reads its variances (a data-dependent check) and cannot compile
    with fullgraph=True: the sweep marks its rows not comparable, names the error, and goes on."""
    from exportable_loss.bench import sweep

    paths = sweep.run(str(tmp_path), ["gaussian_nll"], sizes=(1, 8), modes=("compiled",), budget=0.05)
    text = open(paths["md"]).read()
    rows = __import__("json").load(open(paths["json"]))["rows"]
    assert len(rows) == 4 and all(r["ratio"] is None and r["meets"] is None for r in rows)
    assert all(r["failed"].startswith("torch.nn: ") for r in rows)
    assert "| gaussian_nll | plain | n/a | n/a | not comparable |" in text
    assert "0 of 0 rows meet" in text and "- gaussian_nll, plain: torch.nn: " in text


@pytest.mark.parametrize("dynamo", [False, True])
def test_cheap_context_predicates_agree_with_torch(dynamo, tmp_path):
    """The ONNX-export flag read without torch.onnx.is_in_onnx_export's per-call imports agrees with
    it in eager mode and inside both exporters, and capturing() is True there."""
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from exportable_loss import _dispatch

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((_dispatch.onnx_exporting(), torch.onnx.is_in_onnx_export(), _dispatch.capturing()))
            return x * 2

    Probe()(torch.ones(2))
    torch.onnx.export(Probe(), (torch.ones(2),), str(tmp_path / "probe.onnx"), dynamo=dynamo)
    assert seen[0] == (False, False, False)
    assert len(seen) > 1 and all(s == (True, True, True) for s in seen[1:]), seen


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_class_weights_that_take_gradients_get_them(smoothing):
    """Learnable class weights: ATen's NLL refuses them; the loss differentiates them as its general
    path does on every other path (float64 formula)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g, requires_grad=True)
    t = torch.tensor([0, 3, -100, 2, 1])
    w = (torch.rand(4, generator=g) + 0.5).requires_grad_(True)
    out = LF.cross_entropy(x, t, w, label_smoothing=smoothing)
    x64, w64 = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    # torch.nn's loss with the weights as a differentiable factor: sum over counted rows of
    # w[t] * ((1 - e) * nll + e * mean smoothing term) / sum of w[t]
    logp = torch.log_softmax(x64, 1)
    keep = t != -100
    tk = t[keep]
    nll = -logp[keep].gather(1, tk[:, None]).squeeze(1)
    smooth = -(logp[keep] * w64).sum(1) / 4
    term = (1 - smoothing) * w64[tk] * nll + smoothing * smooth
    ref = term.sum() / w64[tk].sum()
    torch.testing.assert_close(out, ref.float())
    gx, gw = torch.autograd.grad(out, (x, w))
    rx, rw = torch.autograd.grad(ref, (x64, w64))
    torch.testing.assert_close(gx, rx.float())
    torch.testing.assert_close(gw, rw.float())


@pytest.mark.parametrize("class_dim", [1, -1])
def test_compiled_cross_entropy_picks_the_targets_as_eager_does(class_dim):
    """Under torch.compile the class-index terms come from F.nll_loss (its backward fuses, gather's
    scatters): the same numbers as eager, an out-of-range index NaN at its position, ignored rows 0."""
    g = torch.Generator().manual_seed(4)
    shape = (3, 5, 4) if class_dim == 1 else (3, 4, 5)  # 5 classes, 4 positions per sample
    x = torch.randn(shape, generator=g, requires_grad=True)
    t = torch.tensor([[0, 4, -100, 2], [1, 9, 3, 0], [-100, 2, 2, 4]])
    w = torch.rand(5, generator=g) + 0.5
    loss = lambda a: LF.cross_entropy(a, t, w, reduction="none", class_dim=class_dim)  # noqa: E731
    compiled = torch.compile(loss, fullgraph=True, dynamic=True)
    out, ref = compiled(x), loss(x)
    assert torch.isnan(out[1, 1]) and torch.isnan(ref[1, 1])
    keep = ~torch.isnan(ref)
    torch.testing.assert_close(out[keep], ref[keep])
    assert torch.all(out[t == -100] == 0)
    torch.testing.assert_close(_grads(out[keep].sum(), x), _grads(ref[keep].sum(), x))
