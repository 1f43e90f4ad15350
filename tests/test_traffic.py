"""What the Triton backend launches and moves, counted under Triton's interpreter (CI runs this
file with TRITON_INTERPRET=1; elsewhere it is skipped).

Every kernel launch is held to its declaration (``TRAFFIC`` in its module) byte for byte, and
the declarations to the floors: cross entropy reads the logits once forward, reads them once
and writes the gradient once backward (a probability target is one more read each way). A
``mean``/``sum`` call is at most two launches each way, with no host synchronisation, and the
launch counts on the docs' pages are the ones counted here.
"""

import json
import os

import pytest
import torch

import exportable_loss as el
import exportable_loss.triton_kernels as tk
from exportable_loss import catalog

pytestmark = pytest.mark.skipif(not tk.interpreter_enabled(), reason="counts launches under TRITON_INTERPRET=1")

DOCS_BENCH = os.path.join(os.path.dirname(__file__), "..", "docs", "bench")


def _count(module, args, grad_out=None):
    from exportable_loss.triton_kernels.counting import Counter

    with Counter() as forward:
        out = module(*args)
    grad = torch.ones_like(out) if grad_out is None else grad_out(out)
    with Counter() as backward:
        out.backward(grad)
    return forward, backward


def _check_launches(counter):
    """Every Triton launch moves exactly what its kernel declares; re-reads of the big tensors
    stay within one element per row (the target's logit)."""
    from exportable_loss.triton_kernels import counting

    for launch in counter.triton_launches:
        assert launch.distinct == counting.expected(launch), launch.name
        big = {
            names
            for names, _ in launch.distinct
            if any(a in names for a, _, e in counting.terms(launch) if e == "elements")
        }
        rows = launch.grid[0]
        for (names, kind), requested in launch.requested.items():
            if names in big:
                element = launch.args[names[0]].element_size()
                assert requested <= launch.distinct[(names, kind)] + rows * element, (launch.name, names, kind)


def _ce_inputs(shape, probabilities, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, c, d = shape
    x = torch.randn(n, c, d, generator=g).squeeze(-1) if d == 1 else torch.randn(n, c, d, generator=g)
    if probabilities:
        return x, torch.softmax(torch.randn(x.shape, generator=g), 1)
    t = torch.randint(0, c, (n,) if d == 1 else (n, d), generator=g)
    t[::3] = -100
    return x, t


REDUCTIONS = [
    ("none", False, False),
    ("mean", False, False),
    ("sum", True, False),
    ("mean", True, False),
    ("mean", False, True),
]
# cross entropy also takes one sample weight per position
CE_REDUCTIONS = REDUCTIONS + [("mean", "position", False)]


@pytest.mark.parametrize("inplace", [False, True], ids=["", "inplace"])
@pytest.mark.parametrize("reduction,sample_weight,normalizer", CE_REDUCTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("probabilities", [False, True], ids=["indices", "probabilities"])
@pytest.mark.parametrize("shape", [(5, 300, 1), (3, 40, 4)], ids=["rows", "spatial"])
def test_cross_entropy_moves_its_stated_passes(shape, probabilities, reduction, sample_weight, normalizer, inplace):
    x, t = _ce_inputs(shape, probabilities)
    options = dict(weight=torch.rand(shape[1]) + 0.5, label_smoothing=0.1, z_loss=1e-3, logit_softcap=5.0)
    module = el.CrossEntropyLoss(reduction=reduction, backend="triton", inplace_backward=inplace, **options)
    args = [x.clone().requires_grad_(True), t]
    if sample_weight:
        positions = (shape[0],) + tuple(x.shape[2:]) if sample_weight == "position" else (shape[0],)
        args.append(torch.rand(positions) + 0.1)
    if normalizer:
        args += [None, torch.tensor(7.0, dtype=torch.float64)]
    forward, backward = _count(module, args, lambda out: torch.randn(out.shape))
    from exportable_loss.triton_kernels import counting

    _check_launches(forward)
    _check_launches(backward)
    extra = 1 if probabilities else 0  # the probabilities: one more tensor of the logits' size
    assert [counting.passes(x) for x in forward.triton_launches] == [1 + extra] + ([0] if reduction != "none" else [])
    assert [counting.passes(x) for x in backward.triton_launches] == [2 + extra]
    if reduction != "none":
        assert len(forward.launches) <= 2 and len(backward.launches) <= 2
    assert forward.syncs == [] and backward.syncs == []


POINTWISE = [name for name, entry in catalog.LOSSES.items() if entry.spec.kernel == "pointwise"]


@pytest.mark.parametrize("reduction,sample_weight,normalizer", REDUCTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_moves_its_stated_passes(name, reduction, sample_weight, normalizer):
    entry = catalog.get(name)
    g = torch.Generator().manual_seed(0)
    x, y = entry.spec.example(300, g)
    module = entry.make(reduction, "triton")
    args = [x.clone().requires_grad_(True), y]
    if sample_weight:
        args.append(torch.rand(300, generator=g) + 0.1)
    if normalizer:
        args += [None, torch.tensor(7.0)]
    forward, backward = _count(module, args, lambda out: torch.randn(out.shape))
    from exportable_loss.triton_kernels import counting

    _check_launches(forward)
    _check_launches(backward)
    kernel_forward, kernel_backward = forward.triton_launches[0], backward.triton_launches[0]
    weights = sum(kernel_forward.args[f] for f in ("HAS_W", "HAS_PW"))
    # input and target in, the loss out (none); backward the gradient in (none) and out, and
    # the input only where the derivative depends on it (not KL's)
    kl = name == "kl_div"
    assert counting.passes(kernel_forward) == 2 + weights + (1 if reduction == "none" else 0)
    assert counting.passes(kernel_backward) == 3 - kl + weights + (1 if reduction == "none" else 0)
    if reduction != "none":
        assert [x.name for x in forward.triton_launches] == ["pointwise_forward_kernel", "finish_reduction_kernel"]
        assert len(backward.launches) == 1
    assert forward.syncs == [] and backward.syncs == []


def test_mean_and_sum_are_at_most_two_launches_each_way_with_class_weights():
    """The catalogue's cross entropy (class weights, label smoothing) with sample weights: the
    weighted mean is two launches forward, one backward, where torch.nn takes ten or more."""
    x, t = _ce_inputs((16, 300, 1), False)
    for reduction in ("mean", "sum"):
        module = el.CrossEntropyLoss(reduction=reduction, backend="triton", weight=torch.rand(300), label_smoothing=0.1)
        forward, backward = _count(module, [x.clone().requires_grad_(True), t, torch.rand(16)])
        assert [launch.name for launch in forward.launches] == [
            "cross_entropy_forward_kernel",
            "finish_reduction_kernel",
        ]
        assert [launch.name for launch in backward.launches] == ["cross_entropy_backward_kernel"]


def test_docs_state_the_counted_launches_and_passes():
    """docs/bench/traffic.json (and the Markdown the docs embed) is what the code counts now:
    regenerate with ``TRITON_INTERPRET=1 python -m exportable_loss.bench.traffic --out docs/bench``."""
    from exportable_loss.bench import traffic

    with open(os.path.join(DOCS_BENCH, "traffic.json")) as f:
        committed = json.load(f)
    assert committed["launches"] == traffic.launches()
    assert committed["passes"] == json.loads(json.dumps(traffic.passes()))
    assert committed["projection"] == traffic.projection()
    with open(os.path.join(DOCS_BENCH, "launches.md")) as f:
        assert f.read() == traffic.launches_markdown(committed["launches"])
