"""Exact normalisation on a real torch.distributed engine: 2 processes, gloo, CPU.

Each rank accumulates 2 micro-batches with different padding (ignore_index) and sample weights.
With step_normalizer, the gradient after accumulation and DDP's (or FSDP2's) averaging equals
the single-process gradient of the whole step's mean to 1e-6, and the logged loss is the exact
global mean; the naive mean of micro-batch means gives another gradient (so the test can fail).
"""

import contextlib
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import exportable_loss as el
from exportable_loss.distributed import denominator, logged_loss, step_normalizer

WORLD = 2
SIZES = [(7, 0), (5, 4), (9, 1), (6, 6)]  # (samples, padded positions) of the 4 micro-batches


def _data():
    g = torch.Generator().manual_seed(0)
    out = []
    for n, pad in SIZES:
        x = torch.randn(n, 3, 6, generator=g)  # (samples, tokens, features)
        t = torch.randint(0, 5, (n, 3), generator=g)
        t.view(-1)[:pad] = -100
        out.append((x, t, torch.rand(n, generator=g) + 0.1))
    return out


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5))


def _loss():
    return el.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0]), label_smoothing=0.1)


def _logits(model, x):
    return model(x).transpose(1, 2)  # (samples, classes, tokens)


def _grads(model):
    return [(p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone() for p in model.parameters()]


def _train(rank, wrapper, exact):
    model = _model()
    loss_fn = _loss()
    if wrapper == "ddp":
        wrapped = nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        wrapped = fully_shard(model)
    mine = _data()[2 * rank : 2 * rank + 2]
    normalizer = step_normalizer(loss_fn, [t for _, t, _ in mine], [s for _, _, s in mine]) if exact else None
    accumulated = torch.zeros(())
    for i, (x, t, s) in enumerate(mine):
        no_sync = wrapped.no_sync() if wrapper == "ddp" and i == 0 else contextlib.nullcontext()
        with no_sync:
            loss = loss_fn(_logits(wrapped, x), t, s, normalizer)
            if not exact:
                loss = loss / len(mine)  # the naive mean of micro-batch means
            loss.backward()
        accumulated = accumulated + loss.detach()
    return _grads(wrapped), logged_loss(accumulated)


def _worker(rank, init_file, out_dir, wrapper):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        exact_grads, exact_loss = _train(rank, wrapper, exact=True)
        naive_grads, naive_loss = _train(rank, wrapper, exact=False)
        torch.save(
            dict(exact=exact_grads, naive=naive_grads, exact_loss=exact_loss, naive_loss=naive_loss),
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _full_batch_reference():
    model, loss_fn = _model(), _loss()
    data = _data()
    # every micro-batch has 3 tokens: the whole step is their concatenation
    x = torch.cat([d[0] for d in data])
    t = torch.cat([d[1] for d in data])
    s = torch.cat([d[2] for d in data])
    loss = loss_fn(_logits(model, x), t, s)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()], loss.detach()


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp2"])
def test_two_ranks_with_accumulation_give_the_full_batch_gradient(wrapper, tmp_path):
    if wrapper == "fsdp2":
        pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 needs torch.distributed.fsdp.fully_shard")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), wrapper), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    ref_grads, ref_loss = _full_batch_reference()
    for result in results:
        for got, want in zip(result["exact"], ref_grads):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(result["exact_loss"], ref_loss, rtol=1e-6, atol=1e-6)
        # the naive mean of micro-batch means is another loss and another gradient
        assert not torch.allclose(result["naive_loss"], ref_loss, rtol=1e-3)
        assert max((g - w).abs().max().item() for g, w in zip(result["naive"], ref_grads)) > 1e-3


@pytest.mark.parametrize(
    "make, input, target",
    [
        (
            lambda r: _loss().__class__(_loss().weight, label_smoothing=0.1, reduction=r),
            torch.randn(5, 5, 3),
            _data()[1][1],
        ),
        (lambda r: el.CrossEntropyLoss(reduction=r), torch.randn(4, 5, 2), torch.softmax(torch.randn(4, 5, 2), 1)),
        (lambda r: el.NLLLoss(ignore_index=2, reduction=r), torch.randn(4, 5), torch.tensor([0, 2, 2, 1])),
        (lambda r: el.MSELoss(reduction=r), torch.randn(4, 3), torch.randn(4, 3)),
        (lambda r: el.KLDivLoss(reduction=r), torch.randn(4, 3), torch.rand(4, 3)),
    ],
)
def test_denominator_is_what_mean_divides_by(make, input, target):
    s = torch.rand(input.shape[0]) + 0.5
    mean = "batchmean" if isinstance(make("sum"), el.KLDivLoss) else "mean"
    for weights in (None, s):
        total = make(mean)(input, target, weights) * denominator(make(mean), target, weights).float()
        torch.testing.assert_close(total, make("sum")(input, target, weights), rtol=1e-6, atol=1e-6)


def test_denominator_counts():
    assert denominator(el.NLLLoss(ignore_index=2), torch.tensor([0, 2, 2, 1])).item() == 2.0
    assert denominator(el.KLDivLoss(reduction="batchmean"), torch.rand(4, 3)).item() == 4.0
    assert denominator(el.MSELoss(), torch.rand(4, 3), torch.full((4,), 0.5)).item() == 6.0


def test_step_normalizer_single_process_and_argument_errors():
    loss_fn = _loss()
    data = _data()
    n = step_normalizer(loss_fn, [t for _, t, _ in data], [s for _, _, s in data])
    assert n.dtype == torch.float64 and n.dim() == 0
    assert torch.allclose(n, sum(denominator(loss_fn, t, s) for _, t, s in data))
    with pytest.raises(ValueError, match="one entry per target; got 1 for 4"):
        step_normalizer(loss_fn, [t for _, t, _ in data], [None])


# ---------------------------------------------------------------- every loss of the library

from cases import CASES, cast, loss_spec, make_inputs, takes_position_weights  # noqa: E402

from exportable_loss._registry import specs  # noqa: E402

SPLITS = ((0, 2), (2, 5), (5, 9))  # three micro-batches of 2, 3 and 4 samples (n = 9)


def _forward_arg(module, name, count):
    """Index of forward's argument ``name`` among its first ``count`` (None if not among them)."""
    import inspect

    params = [p for p in inspect.signature(module.forward).parameters if p != "self"]
    index = params.index(name) if name in params else None
    return index if index is not None and index < count else None


def _mean_variants(case):
    return ["mean"] + (["batchmean"] if "batchmean" in case.reductions else [])


def _micro_batch_case(case, reduction, data, s):
    """(whole-batch loss, sum over micro-batches with step_normalizer) and their gradients."""
    module = case.make(reduction)
    spec = loss_spec(case)
    count = len(data)
    arg = _forward_arg(module, spec.denominator_arg, count)
    if arg is None:  # a distillation loss called without its label: the teacher stands for it
        arg = _forward_arg(module, "target", count)
    leaves = [a for a in data if a.requires_grad]
    num_classes = data[0].shape[1] if data[0].dim() > 1 else None

    def part(lo, hi):
        return tuple(a[lo:hi] if case.is_batched(i) else a for i, a in enumerate(data)), s[lo:hi]

    parts = [part(lo, hi) for lo, hi in SPLITS]
    loss_fn = [m for m in module.modules() if isinstance(getattr(type(m), "spec", None), type(spec))][0]
    normalizer = step_normalizer(loss_fn, [p[arg] for p, _ in parts], [w for _, w in parts], num_classes=num_classes)
    whole = module(*data, sample_weight=s)
    accumulated = sum(module(*p, sample_weight=w, normalizer=normalizer) for p, w in parts)
    return (
        (whole, torch.autograd.grad(whole, leaves)),
        (accumulated, torch.autograd.grad(accumulated, leaves)),
    )


@pytest.mark.parametrize("name", list(CASES))
def test_micro_batches_with_step_normalizer_sum_to_the_whole_batch(name):
    """For every loss: micro-batches of 2, 3 and 4 samples with their own ignore patterns and
    sample weights (zeros included; one per position too where the loss takes those), each
    divided by the step's denominator, sum to the loss of the whole batch, and their gradients
    to its gradients (float64, so exact up to rounding)."""
    case = CASES[name]
    data = cast(make_inputs(case, 9, seed=5), torch.float64)
    s = torch.rand(9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    s[3] = 0.0
    weights = [s]
    if takes_position_weights(case):
        weights.append(make_inputs(case, 9, seed=5, weighting="position_weight")[-1].double())
    for reduction, w in [(r, w) for r in _mean_variants(case) for w in weights]:
        if getattr(case.make(reduction), "per_image", True) is False:
            with pytest.raises(ValueError, match="per_image=False"):
                _micro_batch_case(case, reduction, data, w)
            continue
        (whole, whole_grads), (acc, acc_grads) = _micro_batch_case(case, reduction, data, w)
        torch.testing.assert_close(acc, whole, rtol=1e-10, atol=1e-12)
        for got, want in zip(acc_grads, whole_grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_every_loss_has_a_micro_batch_case():
    assert {loss_spec(c).name for c in CASES.values()} == set(specs())


def test_denominator_refuses_what_it_cannot_split():
    with pytest.raises(TypeError, match="Linear is not a loss of exportable-loss"):
        denominator(nn.Linear(2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="per_image=False"):
        denominator(el.DiceLoss(per_image=False), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="needs num_classes"):
        denominator(el.DiceLoss(), torch.zeros(2, 4, 4, dtype=torch.long))
    assert denominator(el.DiceLoss(), torch.zeros(2, 4, 4, dtype=torch.long), num_classes=3).item() == 6.0
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(3,\)"):
        denominator(el.MSELoss(), torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="reduction='mean'"):
        step_normalizer(el.MSELoss(reduction="sum"), [torch.zeros(3)])


RANK_CASES = ("ce_weight_ls_spatial", "jsd_label_spatial", "dice_multiclass_ignore", "giou", "linear_ce", "kl")


def _rank_case(rank, name, reduction):
    """This rank's micro-batches (two of the four parts of a batch of 9): their summed loss with
    the step normalizer, and the gradients of every leaf (all-reduced where the leaf is shared)."""
    case = CASES[name]
    data = cast(make_inputs(case, 9, seed=5), torch.float64)
    s = torch.rand(9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    s[3] = 0.0
    module = case.make(reduction)
    spec = loss_spec(case)
    arg = _forward_arg(module, spec.denominator_arg, len(data))
    if arg is None:
        arg = _forward_arg(module, "target", len(data))
    loss_fn = [m for m in module.modules() if isinstance(getattr(type(m), "spec", None), type(spec))][0]
    bounds = ((0, 2), (2, 5), (5, 7), (7, 9))[2 * rank : 2 * rank + 2]
    parts = [(tuple(a[lo:hi] if case.is_batched(i) else a for i, a in enumerate(data)), s[lo:hi]) for lo, hi in bounds]
    num_classes = data[0].shape[1] if data[0].dim() > 1 else None
    normalizer = step_normalizer(
        loss_fn, [p[arg] for p, _ in parts], [w for _, w in parts], average_across_ranks=False, num_classes=num_classes
    )
    total = sum(module(*p, sample_weight=w, normalizer=normalizer) for p, w in parts)
    leaves = [a for a in data if a.requires_grad]
    grads = [g.clone() for g in torch.autograd.grad(total, leaves)]
    for i, g in zip([i for i, a in enumerate(data) if a.requires_grad], grads):
        if not case.is_batched(i):  # a shared parameter (the classifier): gradients add up over ranks
            dist.all_reduce(g)
    loss = total.detach().clone()
    dist.all_reduce(loss)
    return loss, grads


def _rank_worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {(name, r): _rank_case(rank, name, r) for name in RANK_CASES for r in _mean_variants(CASES[name])}
        torch.save(results, os.path.join(out_dir, f"cases{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_step_normalizer_give_the_whole_batch_for_representative_losses(tmp_path):
    """Two gloo ranks, two micro-batches each, one all-reduce of the denominator: the summed loss
    is the whole batch's, each rank's input gradients are their slice of the whole batch's, and a
    shared classifier's all-reduced gradient is the whole batch's."""
    mp.spawn(_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"cases{r}.pt") for r in range(WORLD)]
    s = torch.rand(9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    s[3] = 0.0
    for name in RANK_CASES:
        case = CASES[name]
        data = cast(make_inputs(case, 9, seed=5), torch.float64)
        for reduction in _mean_variants(case):
            whole = case.make(reduction)(*data, sample_weight=s)
            leaves = [i for i, a in enumerate(data) if a.requires_grad]
            want = torch.autograd.grad(whole, [data[i] for i in leaves])
            for rank, result in enumerate(ranks):
                loss, grads = result[(name, reduction)]
                torch.testing.assert_close(loss, whole.detach(), rtol=1e-10, atol=1e-12)
                for i, got, full in zip(leaves, grads, want):
                    expected = full
                    if case.is_batched(i):  # this rank's rows carry the gradient, the others' are 0
                        mine = torch.zeros(9, dtype=torch.bool)
                        mine[0:5] = rank == 0
                        mine[5:9] = rank == 1
                        shape = [9] + [1] * (full.dim() - 1)
                        expected = torch.where(mine.view(shape), full, torch.zeros_like(full))
                    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
