"""What language-model training needs of cross entropy, beyond the generic cases (the
``ce_class_last`` case and every ``position_weight`` combination run through every generic test):
``(B, T, V)`` logits with ``class_dim=-1`` on both backends without a copy of the logits, the
causal shift of the labels, and per-token weights against hand-written reductions."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import exportable_loss as el
from exportable_loss import functional as LF
from exportable_loss.distributed import denominator

B, T, V = 3, 6, 11
BACKENDS = ("torch", "triton")
REDUCTIONS = ("none", "per_sample", "mean", "sum")


def _logits(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, V, generator=g) * 2
    t = torch.randint(0, V, (B, T), generator=g)
    t[0, 4:] = -100
    t[2, ::2] = -100
    return x, t


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("probabilities", [False, True], ids=["indices", "probabilities"])
def test_class_last_equals_classes_at_dim_1(backend, probabilities):
    x, t = _logits()
    if probabilities:
        t = torch.softmax(torch.randn(B, T, V, generator=torch.Generator().manual_seed(1)), -1)
    options = dict(weight=torch.linspace(0.5, 2.0, V), label_smoothing=0.1, z_loss=0.01, logit_softcap=4.0)
    for reduction in REDUCTIONS:
        last = x.clone().requires_grad_(True)
        moved = x.transpose(1, 2).contiguous().requires_grad_(True)
        ours = el.CrossEntropyLoss(class_dim=-1, reduction=reduction, backend=backend, **options)(last, t)
        ref = el.CrossEntropyLoss(reduction=reduction, backend=backend, **options)(
            moved, t.transpose(1, 2) if probabilities else t
        )
        torch.testing.assert_close(ours, ref)
        g = torch.randn(ours.shape, generator=torch.Generator().manual_seed(2))
        (got,) = torch.autograd.grad((ours * g).sum(), last)
        (want,) = torch.autograd.grad((ref * g).sum(), moved)
        torch.testing.assert_close(got, want.transpose(1, 2))
    functional = LF.cross_entropy(x, t, class_dim=-1, backend=backend, **options)
    torch.testing.assert_close(functional, el.CrossEntropyLoss(class_dim=-1, backend=backend, **options)(x, t))


class _LogitsSizedOps(TorchDispatchMode):
    """The operators (outside the fused ops) whose result is as large as the logits."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.ops = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(r, torch.Tensor) and r.numel() >= self.numel for r in results):
            self.ops.append(func.__name__)
        return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_last_takes_no_copy_of_the_logits(backend):
    """Logits sliced as a causal shift leaves them (not contiguous), forward and backward: no
    clone, copy or contiguous of the logits outside the fused op, on either backend."""
    x, t = _logits()
    logits = torch.cat([x, x[:, :1]], 1)[:, :-1].detach().requires_grad_(True)  # strides of a (B, T+1, V) tensor
    assert not logits.is_contiguous()
    with _LogitsSizedOps(logits.numel()) as recorded:
        loss = el.CrossEntropyLoss(class_dim=-1, label_smoothing=0.1, backend=backend)(logits, t)
        loss.backward()
    copies = [op for op in recorded.ops if any(word in op for word in ("clone", "copy", "contiguous"))]
    assert recorded.ops and not copies, recorded.ops


def test_shift_labels_is_transformers_shift_and_leaves_the_logits_alone():
    x, labels = _logits()
    shifted = el.shift_labels(labels)
    want = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]  # transformers' ForCausalLMLoss
    assert torch.equal(shifted, want)
    assert torch.equal(el.shift_labels(labels, ignore_index=7)[:, -1], torch.full((B,), 7))
    # the loss of every position against the next label, the last position not counted: the same
    # as the loss of the first T - 1 positions against labels[:, 1:]
    ours = el.CrossEntropyLoss(class_dim=-1)(x, shifted)
    explicit = torch.nn.functional.cross_entropy(x[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(ours, explicit)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_token_weights_against_hand_written_reductions(backend):
    x, t = _logits()
    s = torch.rand(B, T, generator=torch.Generator().manual_seed(3)) + 0.5
    s[1, :3] = 0.0
    w = torch.linspace(0.5, 2.0, V)
    per_token = el.CrossEntropyLoss(weight=w, class_dim=-1, reduction="none", backend=backend)(x, t)
    counted = (t != -100).float()
    class_weight = torch.where(t != -100, w[t.clamp_min(0)], 0.0)
    expected = {
        "none": s * per_token,
        "sum": (s * per_token).sum(),
        # each sequence: its weighted mean over its counted tokens
        "per_sample": (s * per_token).sum(1) / (s * counted).sum(1),
        # the weighted sum over the weighted count (class weights of the counted targets)
        "mean": (s * per_token).sum() / (s * class_weight).sum(),
    }
    for reduction, want in expected.items():
        got = el.CrossEntropyLoss(weight=w, class_dim=-1, reduction=reduction, backend=backend)(x, t, s)
        torch.testing.assert_close(got, want)
    # a per-token weight constant along each sequence is a per-sequence weight, but for per_sample
    # (a weighted mean over a sequence's tokens does not scale with the sequence's weight)
    rows = torch.tensor([2.0, 0.5, 1.0])
    for reduction in ("none", "mean", "sum"):
        loss = el.CrossEntropyLoss(weight=w, class_dim=-1, reduction=reduction, backend=backend)
        torch.testing.assert_close(loss(x, t, rows[:, None].expand(B, T)), loss(x, t, rows))
    # the denominator of exportable_loss.distributed is what the mean divides by
    loss = el.CrossEntropyLoss(weight=w, class_dim=-1)
    torch.testing.assert_close(denominator(loss, t, s).float(), (s * class_weight).sum())


def test_per_token_weights_of_the_wrong_shape_or_for_a_loss_without_positions():
    x, t = _logits()
    with pytest.raises(
        ValueError,
        match=r"sample_weight must have shape \(3,\) .* or \(3, 6\) \(one weight per position\); got \(3, 5\)",
    ):
        el.CrossEntropyLoss(class_dim=-1)(x, t, torch.ones(B, T - 1))
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(4, 1)
    with pytest.raises(
        ValueError,
        match=r"sample_weight must have shape \(4,\) \(one weight per sample of input \(4, 4\)\); got \(4, 4\)",
    ):
        el.GIoULoss()(boxes, boxes, torch.ones(4, 4))  # one term per box: weights per box only
    with pytest.raises(
        ValueError,
        match=r"sample_weight must have shape \(3,\), one weight per sample of target \(3, 6\) or \(3, 6\), one per position; got \(6, 3\)",
    ):
        denominator(el.CrossEntropyLoss(), t, torch.ones(T, B))
