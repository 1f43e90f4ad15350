"""The vocabulary-parallel losses against the single-process losses on the whole vocabulary.

One spawn of 4 ranks (gloo, CPU) runs every check on the 4 ranks, then on a group of 2: for every
option set (class weights, ignore_index, label smoothing, z-loss, soft-cap), target kind (class
indices with uneven ignore patterns, spatial positions, class probabilities), reduction and
weighting, every rank's loss equals the single-process loss on the gathered logits and its
gradient equals its slice of the whole gradient, with NaN, +inf or -inf in the logits (hidden
states) of every position that does not count (the hidden states' gradient whole, for the linear
form). The ranks also count their collectives (two all-reduces of position-sized tensors forward,
one of the hidden states' size backward for the linear form), pass a DTensor sharded on the
classes to CrossEntropyLoss, and the pair runs the logits and linear forms under
torch.compile(fullgraph=True).
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import exportable_loss as el
from exportable_loss.distributed import (
    VocabParallelCrossEntropyLoss,
    VocabParallelLinearCrossEntropyLoss,
    denominator,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

WORLD = 4
V, N, T, H = 12, 5, 3, 4  # classes (a multiple of 2 and 4), samples, positions per sample, hidden size
W = torch.linspace(0.5, 2.0, V)
OPTIONS = {
    "plain": {},
    "weight_ignore1_smoothing": dict(weight=W, ignore_index=1, label_smoothing=0.2),
    "weight_zloss_softcap": dict(weight=W, z_loss=0.01, logit_softcap=3.0),
    "everything": dict(weight=W, label_smoothing=0.1, z_loss=0.02, logit_softcap=4.0),
}
WEIGHTINGS = [
    ("none", "plain"),
    ("none", "sample_weight"),
    ("per_sample", "plain"),
    ("per_sample", "sample_weight"),
    ("mean", "plain"),
    ("mean", "sample_weight"),
    ("mean", "normalizer"),
    ("sum", "sample_weight"),
    ("per_sample", "position_weight"),
    ("mean", "position_weight"),
]
# "none" with sample weights and a random upstream gradient checks every position's value and
# gradient; "per_sample" and "mean" the counted positions and class weights. Every weighting
# runs with every option at once.
SOME_WEIGHTINGS = [("none", "sample_weight"), ("per_sample", "plain"), ("mean", "sample_weight")]
TARGETS = ("indices", "spatial", "class_last", "probabilities")
CLASS_DIM = {"class_last": -1}  # the others: classes at dim 1


def _targets(kind, options, g):
    """Uneven ignore patterns: sample 0 wholly ignored, the others at irregular positions."""
    ignore = options.get("ignore_index", -100)
    if kind == "probabilities":
        return torch.softmax(torch.randn(N, V, T, generator=g), 1)
    shape = (N,) if kind == "indices" else (N, T)  # spatial or class_last positions
    t = torch.randint(0, V, shape, generator=g)
    t[0] = ignore
    flat = t.view(-1)
    flat[[4, 7, 8] if kind == "spatial" else [3]] = ignore
    return t


def _data(kind, options, weighting, seed):
    """Whole logits (N, V), (N, V, T) or (N, T, V) (class_last), target, sample weights (per
    sample, or per position) and normalizer."""
    g = torch.Generator().manual_seed(seed)
    shape = {"indices": (N, V), "class_last": (N, T, V)}.get(kind, (N, V, T))
    logits = torch.randn(shape, generator=g) * 3
    target = _targets(kind, options, g)
    positions = (N,) if kind == "indices" else (N, T)
    s = None
    if weighting != "plain":
        s = torch.rand(positions if weighting == "position_weight" else (N,), generator=g) + 0.2
        s[2] = 0.0
    normalizer = torch.tensor(6.5) if weighting == "normalizer" else None
    not_counted = _not_counted(target, options, s, positions)
    logits[not_counted.unsqueeze(_class_dim(kind, logits)).expand(logits.shape)] = POISONS[seed % 3]
    return logits, target, s, normalizer


# positions that do not count (ignored, sample weight 0) hold NaN, +inf or -inf in the logits (the
# hidden states): their loss and gradient must be exactly 0 on every rank, as in one process
POISONS = (float("nan"), float("inf"), float("-inf"))


def _not_counted(target, options, s, positions):
    """(positions) mask of the positions that do not count."""
    ignored = torch.zeros(positions, dtype=torch.bool)
    if not target.is_floating_point():
        ignored = target == options.get("ignore_index", -100)
    if s is not None:
        ignored = ignored | (s.reshape(s.shape + (1,) * (len(positions) - s.dim())) == 0)
    return ignored


def _weightings(option_name):
    return WEIGHTINGS if option_name == "everything" else SOME_WEIGHTINGS


def _cases():
    seed = 0
    for option_name, options in OPTIONS.items():
        for kind in TARGETS:
            for reduction, weighting in _weightings(option_name):
                seed += 1
                yield f"{option_name}-{kind}-{reduction}-{weighting}", options, kind, reduction, weighting, seed


def _upstream(out, seed):
    return torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)


def _logits_reference(options, kind, reduction, weighting, seed):
    x, t, s, normalizer = _data(kind, options, weighting, seed)
    x.requires_grad_(True)
    if s is not None:
        s.requires_grad_(True)
    loss = el.CrossEntropyLoss(reduction=reduction, class_dim=CLASS_DIM.get(kind, 1), **options)
    out = loss(x, t, s, normalizer)
    grads = torch.autograd.grad((out * _upstream(out, seed)).sum(), [x] + ([s] if s is not None else []))
    return out.detach(), grads


def _shard(t, rank, world, dim=1):
    return t.chunk(world, dim)[rank]


def _class_dim(kind, logits):
    return logits.dim() - 1 if kind == "class_last" else 1


def _logits_on_rank(place, options, kind, reduction, weighting, seed):
    rank, world, group = place
    x, t, s, normalizer = _data(kind, options, weighting, seed)
    local = _shard(x, rank, world, _class_dim(kind, x)).clone().requires_grad_(True)
    if kind == "probabilities":
        t = _shard(t, rank, world)
    if s is not None:
        s.requires_grad_(True)
    loss = VocabParallelCrossEntropyLoss(group, reduction=reduction, class_dim=CLASS_DIM.get(kind, 1), **options)
    out = loss(local, t, s, normalizer)
    grads = torch.autograd.grad((out * _upstream(out, seed)).sum(), [local] + ([s] if s is not None else []))
    return out.detach(), grads


def _linear_data(options, kind, weighting, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, T, H, generator=g)
    classifier = torch.randn(V, H, generator=g)
    bias = torch.randn(V, generator=g)
    _, target, s, normalizer = _data("spatial", options, weighting, seed)  # per-position weights: (N, T)
    if kind == "probabilities":
        target = torch.softmax(torch.randn(N, V, T, generator=g), 1)
    hidden[_not_counted(target, options, s, (N, T)).unsqueeze(-1).expand(hidden.shape)] = POISONS[seed % 3]
    return hidden, classifier, bias, target, s, normalizer


def _linear_cases():
    seed = 1000
    for option_name, options in OPTIONS.items():
        for kind in ("indices", "probabilities"):
            for reduction, weighting in _weightings(option_name):
                seed += 1
                yield f"linear-{option_name}-{kind}-{reduction}-{weighting}", options, kind, reduction, weighting, seed


def _linear_reference(options, kind, reduction, weighting, seed):
    hidden, classifier, bias, t, s, normalizer = _linear_data(options, kind, weighting, seed)
    leaves = [a.requires_grad_(True) for a in (hidden, classifier, bias)]
    loss = el.FusedLinearCrossEntropyLoss(reduction=reduction, chunk_size=4, **options)
    out = loss(hidden, classifier, t, bias, s, normalizer)
    return out.detach(), torch.autograd.grad((out * _upstream(out, seed)).sum(), leaves)


def _linear_on_rank(place, options, kind, reduction, weighting, seed, target_grad=False):
    rank, world, group = place
    hidden, classifier, bias, t, s, normalizer = _linear_data(options, kind, weighting, seed)
    leaves = [hidden.requires_grad_(True), _shard(classifier, rank, world, 0), _shard(bias, rank, world, 0)]
    leaves[1:] = [a.clone().requires_grad_(True) for a in leaves[1:]]
    if kind == "probabilities":
        t = _shard(t, rank, world).clone().requires_grad_(target_grad)  # a target with grad: the unfused form
    loss = VocabParallelLinearCrossEntropyLoss(group, reduction=reduction, chunk_size=4, **options)
    out = loss(leaves[0], leaves[1], t, leaves[2], s, normalizer)
    return out.detach(), torch.autograd.grad((out * _upstream(out, seed)).sum(), leaves)


class _CountCollectives:
    """Records the op and shape of every all-reduce (c10d's in eager mode)."""

    def __enter__(self):
        self.original, self.shapes = dist.all_reduce, []

        def counted(t, op=dist.ReduceOp.SUM, group=None, async_op=False):
            self.shapes.append(("max" if op == dist.ReduceOp.MAX else "sum", tuple(t.shape)))
            return self.original(t, op=op, group=group, async_op=async_op)

        dist.all_reduce = counted
        return self

    def __exit__(self, *exc):
        dist.all_reduce = self.original


def _communication(place):
    """Collectives of one forward and backward: (op, shape) of each all-reduce."""
    options = OPTIONS["everything"]
    out = {}
    with _CountCollectives() as counter:
        _logits_on_rank(place, options, "spatial", "mean", "sample_weight", 1)
    out["logits"] = counter.shapes
    with _CountCollectives() as counter:
        _linear_on_rank(place, options, "indices", "mean", "sample_weight", 2)
    out["linear"] = counter.shapes
    return out


def _compiled(place):
    """One logits case and one linear case under torch.compile(fullgraph=True)."""
    rank, world, group = place
    torch._dynamo.reset()
    options = OPTIONS["everything"]
    x, t, s, _ = _data("spatial", options, "sample_weight", 3)
    local = _shard(x, rank, world).clone().requires_grad_(True)
    loss = torch.compile(VocabParallelCrossEntropyLoss(group, **options), fullgraph=True, backend="aot_eager")
    value = loss(local, t, s)
    (grad,) = torch.autograd.grad(value, local)
    hidden, classifier, bias, t, s, _ = _linear_data(options, "indices", "sample_weight", 4)
    leaves = [hidden.requires_grad_(True), _shard(classifier, rank, world, 0).clone().requires_grad_(True)]
    linear = torch.compile(
        VocabParallelLinearCrossEntropyLoss(group, chunk_size=4, **options), fullgraph=True, backend="aot_eager"
    )
    linear_value = linear(leaves[0], leaves[1], t, None, s)
    return (value.detach(), grad), (linear_value.detach(), torch.autograd.grad(linear_value, leaves))


DTENSOR_CASES = {"even": (V, 1), "uneven": (10, 1), "class_last": (10, -1)}  # classes, class_dim


def _dtensor_problem(name):
    """Logits (classes at dim 1, or last), targets with an ignored sample, class weights."""
    classes, class_dim = DTENSOR_CASES[name]
    g = torch.Generator().manual_seed(7)
    x = torch.randn((N, classes, T) if class_dim == 1 else (N, T, classes), generator=g)
    t = torch.randint(0, classes, (N, T), generator=g)
    t[1] = -100
    loss = el.CrossEntropyLoss(
        weight=torch.linspace(0.5, 1.5, classes), label_smoothing=0.1, z_loss=0.01, class_dim=class_dim
    )
    return x, t, loss, 1 if class_dim == 1 else 2


def _dtensor(rank, world):
    """CrossEntropyLoss of a DTensor sharded on the classes (10 classes: uneven shards on 4 ranks)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    out = {}
    for name in DTENSOR_CASES:
        x, t, loss, dim = _dtensor_problem(name)
        dx = distribute_tensor(x, mesh, [Shard(dim)]).requires_grad_(True)
        value = loss(dx, t)
        value.backward()
        out[name] = (value.detach(), dx.grad.to_local())
    return out


def _on_ranks(place):
    results = {}
    for name, *case in _cases():
        results[name] = _logits_on_rank(place, *case)
    for name, *case in _linear_cases():
        results[name] = _linear_on_rank(place, *case)
        if case[1] == "probabilities" and name.startswith("linear-everything"):
            results[name + "-target_grad"] = _linear_on_rank(place, *case, target_grad=True)
    results["communication"] = _communication(place)
    return results


def _worker(rank, init_file, out_dir):
    """4 ranks: every check on the world, then on a group of ranks 0 and 1 (with torch.compile)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        results = {4: _on_ranks((rank, WORLD, None))}
        results[4]["dtensor"] = _dtensor(rank, WORLD)
        pair = dist.new_group([0, 1])
        if rank < 2:
            results[2] = _on_ranks((rank, 2, pair))
            results[2]["compiled"] = _compiled((rank, 2, pair))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _check_logits(results, world):
    for name, options, kind, reduction, weighting, seed in _cases():
        ref, ref_grads = _logits_reference(options, kind, reduction, weighting, seed)
        for rank, result in enumerate(results):
            out, grads = result[name]
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=f"{name} rank {rank}")
            whole = ref_grads[0]
            torch.testing.assert_close(
                grads[0], _shard(whole, rank, world, _class_dim(kind, whole)), rtol=1e-5, atol=1e-6
            )
            for got, want in zip(grads[1:], ref_grads[1:]):  # sample_weight: whole on every rank
                # a zero weight's gradient is its position's loss: NaN where the logits are
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True, msg=f"{name} rank {rank}")


def _check_linear(results, world):
    for name, options, kind, reduction, weighting, seed in _linear_cases():
        ref, (g_hidden, g_classifier, g_bias) = _linear_reference(options, kind, reduction, weighting, seed)
        unfused = kind == "probabilities" and name.startswith("linear-everything")
        for suffix in ("", "-target_grad") if unfused else ("",):
            for rank, result in enumerate(results):
                out, (hidden, classifier, bias) = result[name + suffix]
                msg = f"{name}{suffix} rank {rank}"
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=msg)
                torch.testing.assert_close(hidden, g_hidden, rtol=1e-5, atol=1e-5, msg=msg)
                torch.testing.assert_close(classifier, _shard(g_classifier, rank, world, 0), rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(bias, _shard(g_bias, rank, world, 0), rtol=1e-5, atol=1e-5)


def _check_communication(results):
    positions = N * T
    for result in results:
        logits, linear = result["communication"]["logits"], result["communication"]["linear"]
        # forward: a MAX of the positions, then the three statistics stacked; nothing backward
        assert logits == [("max", (N, T)), ("sum", (3, N, T))]
        # the linear form's rows, then the hidden states' gradient (backward)
        assert linear == [("max", (positions,)), ("sum", (3, positions)), ("sum", (N, T, H))]


def _check_dtensor(results):
    for name in DTENSOR_CASES:
        x, t, loss, dim = _dtensor_problem(name)
        x.requires_grad_(True)
        ref = loss(x, t)
        (grad,) = torch.autograd.grad(ref, x)
        shards = grad.chunk(len(results), dim)
        for rank, result in enumerate(results):
            value, local_grad = result["dtensor"][name]
            torch.testing.assert_close(value, ref.detach(), rtol=1e-5, atol=1e-6, msg=name)
            torch.testing.assert_close(local_grad, shards[rank], rtol=1e-5, atol=1e-6, msg=name)


def _check_compiled(results):
    options = OPTIONS["everything"]
    x, t, s, _ = _data("spatial", options, "sample_weight", 3)
    x.requires_grad_(True)
    ref = el.CrossEntropyLoss(**options)(x, t, s)
    (grad,) = torch.autograd.grad(ref, x)
    hidden, classifier, bias, lt, ls, _ = _linear_data(options, "indices", "sample_weight", 4)
    leaves = [hidden.requires_grad_(True), classifier.requires_grad_(True)]
    linear_ref = el.FusedLinearCrossEntropyLoss(**options)(hidden, classifier, lt, None, ls)
    linear_grads = torch.autograd.grad(linear_ref, leaves)
    for rank, result in enumerate(results):
        (value, local_grad), (linear_value, (g_hidden, g_classifier)) = result["compiled"]
        torch.testing.assert_close(value, ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(local_grad, _shard(grad, rank, len(results)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(linear_value, linear_ref.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g_hidden, linear_grads[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g_classifier, _shard(linear_grads[1], rank, 2, 0), rtol=1e-5, atol=1e-5)


def test_every_option_on_2_and_4_ranks_matches_the_single_process_loss(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    saved = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for world in (2, 4):
        results = [r[world] for r in saved[:world]]
        _check_logits(results, world)
        _check_linear(results, world)
        _check_communication(results)
    _check_dtensor([r[4] for r in saved])
    _check_compiled([r[2] for r in saved[:2]])


# ---------------------------------------------------------------- one process (no process group)


def test_one_process_is_the_whole_vocabulary():
    for name, options, kind, reduction, weighting, seed in list(_cases())[::5]:
        ref, ref_grads = _logits_reference(options, kind, reduction, weighting, seed)
        out, grads = _logits_on_rank((0, 1, None), options, kind, reduction, weighting, seed)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(grads[0], ref_grads[0], rtol=1e-5, atol=1e-6, msg=name)
        for got, want in zip(grads[1:], ref_grads[1:]):  # a zero weight's gradient: NaN where its logits are
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
    x = torch.randn(7, requires_grad=True)  # unbatched
    torch.testing.assert_close(
        vocab_parallel_cross_entropy(x, torch.tensor(3)), el.CrossEntropyLoss()(x, torch.tensor(3))
    )


def test_padded_classes_at_minus_infinity_change_nothing():
    x, t, _, _ = _data("indices", {}, "plain", 5)
    padded = torch.cat([x, torch.full((N, 4), float("-inf"))], 1).requires_grad_(True)
    out = vocab_parallel_cross_entropy(padded, t)
    (grad,) = torch.autograd.grad(out, padded)
    x.requires_grad_(True)
    ref = el.CrossEntropyLoss()(x, t)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad[:, :V], torch.autograd.grad(ref, x)[0])
    assert torch.all(grad[:, V:] == 0)


def test_denominator_is_the_non_parallel_one():
    t = torch.tensor([[1, -100, 3], [0, 2, -100]])
    loss = VocabParallelCrossEntropyLoss(weight=torch.arange(1.0, 5.0))
    assert denominator(loss, t).item() == 2.0 + 4.0 + 1.0 + 3.0


def test_argument_errors():
    x = torch.randn(4, 6)
    with pytest.raises(
        ValueError,
        match=r"weight must have shape \(6,\), one weight per class of the vocabulary \(6 classes\); got \(5,\)",
    ):
        vocab_parallel_cross_entropy(x, torch.zeros(4, dtype=torch.long), weight=torch.ones(5))
    with pytest.raises(ValueError, match="class index 9 at position"):
        vocab_parallel_cross_entropy(x, torch.tensor([0, 9, 1, 2]), validate=True)
    with pytest.raises(ValueError, match="inplace_backward is not supported"):
        VocabParallelCrossEntropyLoss(inplace_backward=True)
    with pytest.raises(ValueError, match=r"linear_bias must have shape \(6,\)"):
        vocab_parallel_linear_cross_entropy(
            torch.randn(4, 3), torch.randn(6, 3), torch.zeros(4, dtype=torch.long), torch.ones(5)
        )
