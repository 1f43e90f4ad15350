"""Dice and Tversky beyond the generic cases: per_image=False on every path, MONAI's and
segmentation_models_pytorch's definitions written out, edge cases and every error message."""

import io
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from cases_segmentation import CASES, index_target, segmentation_ref

import exportable_loss as el
from exportable_loss import functional as LF
from exportable_loss.export import check_onnx_model, export_onnx, run_onnx

RTOL, ATOL = 1e-5, 1e-6
ONNX_RTOL, ONNX_ATOL = 1e-4, 1e-5
CASE = {c.name: c for c in CASES}


def _grad(out, wrt, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    return torch.autograd.grad((out * g).sum(), wrt, allow_unused=True)


# ------------------------------------------------------------------ per_image=False


def _batch_inputs(kind, n, seed=0):
    g = torch.Generator().manual_seed(seed * 100 + n)
    if kind == "multilabel":
        x = torch.randn(n, 3, 2, 3, generator=g) * 2
        t = torch.rand(n, 3, 2, 3, generator=g)
        t.view(-1)[::7] = -100.0
        return x, t
    x = torch.randn(n, 4, 3, 2, generator=g) * 2
    return x, index_target(n, g, 4, 3, 2)


BATCH = {
    # name: (our module for a reduction, float64 reference factory, input kind)
    "dice": (
        lambda r: el.DiceLoss(per_image=False, reduction=r),
        lambda s: segmentation_ref(dice=True, per_image=False, sample_weight=s),
        "multiclass",
    ),
    "dice_multilabel": (
        lambda r: el.DiceLoss(mode="multilabel", per_image=False, smooth_nr=0.0, smooth_dr=1.0, reduction=r),
        lambda s: segmentation_ref(
            mode="multilabel", dice=True, per_image=False, smooth_nr=0.0, smooth_dr=1.0, sample_weight=s
        ),
        "multilabel",
    ),
    "tversky_focal": (
        lambda r: el.TverskyLoss(0.3, 0.7, 0.75, per_image=False, include_background=False, reduction=r),
        lambda s: segmentation_ref(
            alpha=0.3, beta=0.7, gamma=0.75, include_background=False, per_image=False, sample_weight=s
        ),
        "multiclass",
    ),
}
BATCH_COMBOS = [
    (name, r, w)
    for name in BATCH
    for r in ("none", "mean", "sum")
    for w in ("plain", "sample_weight", "normalizer")
    if w != "normalizer" or r == "mean"
]
# the slow paths (compile, export, ONNX) take the weightings that reach the batch statistics
BATCH_PATH_COMBOS = [
    c for c in BATCH_COMBOS if c[1:] in (("none", "sample_weight"), ("mean", "sample_weight"), ("mean", "normalizer"))
]


def _batch_args(name, n, weighting, grad=True):
    x, t = _batch_inputs(BATCH[name][2], n)
    x.requires_grad_(grad)
    if weighting == "plain":
        return (x, t)
    s = torch.rand(n, generator=torch.Generator().manual_seed(n)) * 2
    s[1] = 0.0
    s.requires_grad_(grad)
    return (x, t, s) if weighting == "sample_weight" else (x, t, s, torch.tensor(2.5))


@pytest.mark.parametrize("combo", BATCH_COMBOS, ids=lambda c: "-".join(c))
def test_whole_batch_against_reference(combo):
    name, reduction, weighting = combo
    make, ref_of, _ = BATCH[name]
    args = _batch_args(name, 6, weighting)
    x, t = args[:2]
    s = args[2] if len(args) > 2 else None
    ours = make(reduction)(*args)
    x64 = x.detach().double().requires_grad_(True)
    s64 = s.detach().double().requires_grad_(True) if s is not None else None
    l, valid, _ = ref_of(s64)(x64, t)
    if reduction == "none":
        ref = l
    elif reduction == "sum":
        ref = l.sum()
    elif weighting == "normalizer":
        ref = l.sum() / 2.5
    else:
        ref = l.sum() / valid.sum()
    assert ours.shape == ref.shape and ours.dtype == x.dtype
    torch.testing.assert_close(ours, ref.float(), rtol=RTOL, atol=ATOL)
    wrt = [x] + ([s] if s is not None else [])
    wrt64 = [x64] + ([s64] if s64 is not None else [])
    for got, want in zip(_grad(ours, wrt), _grad(ref, wrt64)):
        torch.testing.assert_close(got, want.float(), rtol=RTOL, atol=ATOL)


def test_whole_batch_is_not_the_mean_of_per_image_losses():
    x, t = _batch_inputs("multiclass", 6)
    batch = el.DiceLoss(per_image=False)(x, t)
    per_image = el.DiceLoss()(x, t)
    assert not torch.allclose(batch, per_image, rtol=1e-3)
    # one image: the two modes agree
    torch.testing.assert_close(el.DiceLoss(per_image=False)(x[2:3], t[2:3]), el.DiceLoss()(x[2:3], t[2:3]))


def test_whole_batch_sample_weight_scales_statistics():
    x, t = _batch_inputs("multiclass", 6)
    twice = torch.cat([x, x[3:4]]), torch.cat([t, t[3:4]])
    s = torch.ones(6)
    s[3] = 2.0  # an integer weight counts the image that many times
    torch.testing.assert_close(
        el.DiceLoss(per_image=False, reduction="none")(x, t, s),
        el.DiceLoss(per_image=False, reduction="none")(*twice),
    )
    # a zero-weight image counts for nothing, even with NaN logits
    s[3] = 0.0
    poisoned = x.clone()
    poisoned[3] = float("nan")
    keep = torch.tensor([0, 1, 2, 4, 5])
    out = el.DiceLoss(per_image=False, reduction="none")(poisoned, t, s)
    torch.testing.assert_close(out, el.DiceLoss(per_image=False, reduction="none")(x[keep], t[keep]))


def test_whole_batch_empty_and_all_ignored_give_zero_and_zero_gradients():
    for x, t, s in [
        (torch.randn(0, 4, 3, requires_grad=True), torch.zeros(0, 3, dtype=torch.long), None),
        (torch.randn(3, 4, 3, requires_grad=True), torch.full((3, 3), -100), None),
        (torch.randn(3, 4, 3, requires_grad=True), torch.randint(0, 4, (3, 3)), torch.zeros(3)),
    ]:
        for loss in (
            el.DiceLoss(per_image=False, smooth_nr=0.0),
            el.TverskyLoss(0.2, 0.8, 0.5, per_image=False, smooth_dr=0.0),
        ):
            for reduction in ("none", "mean", "sum"):
                loss.reduction = reduction
                out = loss(x, t, s)
                assert torch.all(out == 0), (reduction, out)
                (g,) = torch.autograd.grad(out.sum(), x)
                assert torch.all(g == 0)


def _path_outputs(module, fn, name, weighting, ns=(9, 11)):
    for n in ns:
        args = _batch_args(name, n, weighting)
        ref = module(*args)
        ref_grads = _grad(ref, [a for a in args if a.requires_grad])
        args = _batch_args(name, n, weighting)
        out = fn(*args)
        torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
        for got, want in zip(_grad(out, [a for a in args if a.requires_grad]), ref_grads):
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("combo", BATCH_PATH_COMBOS, ids=lambda c: "-".join(c))
def test_whole_batch_script_compile_export(combo):
    name, reduction, weighting = combo
    module = BATCH[name][0](reduction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(module), buffer)
        buffer.seek(0)
        _path_outputs(module, torch.jit.load(buffer), name, weighting)

    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    _path_outputs(module, compiled, name, weighting, ns=(6,))
    with torch._dynamo.config.patch(error_on_recompile=True):
        _path_outputs(module, compiled, name, weighting)

    args = _batch_args(name, 6, weighting)
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(module, args, dynamic_shapes=tuple({0: batch} if a.dim() else None for a in args))
    _path_outputs(module, program.module(), name, weighting)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("combo", BATCH_PATH_COMBOS, ids=lambda c: "-".join(c))
def test_whole_batch_onnx(combo, dynamo, tmp_path):
    name, reduction, weighting = combo
    module = BATCH[name][0](reduction)
    path = export_onnx(module, _batch_args(name, 6, weighting), os.path.join(tmp_path, "loss.onnx"), dynamo=dynamo)
    for n in (9, 11):
        args = _batch_args(name, n, weighting, grad=False)
        ref = module(*args)
        (out,) = run_onnx(path, args)
        check_onnx_model(path, [ref])
        assert out.shape == ref.shape and out.dtype == ref.dtype
        torch.testing.assert_close(out, ref, rtol=ONNX_RTOL, atol=ONNX_ATOL)


# ------------------------------------------------------------------ peers' definitions


def _monai_dice(x, t_onehot, include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, softmax=True):
    """monai.losses.DiceLoss.forward (monai/losses/dice.py, MONAI 1.3), written out in float64:
    softmax/sigmoid, drop channel 0 unless include_background, sum over the spatial axes (and
    the batch when batch=True), f = 1 - (2 * intersection + smooth_nr) / (ground_o + pred_o +
    smooth_dr), reduction "mean" = torch.mean(f)."""
    p = torch.softmax(x.double(), 1) if softmax else torch.sigmoid(x.double())
    g = t_onehot.double()
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    axes = list(range(2, p.dim()))
    if batch:
        axes = [0] + axes
    intersection = torch.sum(g * p, dim=axes)
    denominator = torch.sum(g, dim=axes) + torch.sum(p, dim=axes)
    return torch.mean(1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr))


def _monai_tversky(x, t_onehot, alpha, beta, include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5):
    """monai.losses.TverskyLoss.forward (monai/losses/tversky.py, MONAI 1.3) in float64:
    tp = sum(p0 g0), fp = alpha sum(p0 g1), fn = beta sum(p1 g0),
    score = 1 - (tp + smooth_nr) / (tp + fp + fn + smooth_dr), reduction "mean"."""
    p0 = torch.softmax(x.double(), 1)
    g0 = t_onehot.double()
    if not include_background:
        p0, g0 = p0[:, 1:], g0[:, 1:]
    p1, g1 = 1 - p0, 1 - g0
    axes = list(range(2, p0.dim()))
    if batch:
        axes = [0] + axes
    tp = torch.sum(p0 * g0, axes)
    fp = alpha * torch.sum(p0 * g1, axes)
    fn = beta * torch.sum(p1 * g0, axes)
    return torch.mean(1.0 - (tp + smooth_nr) / (tp + fp + fn + smooth_dr))


def _smp(x, y_true, mode, tversky=None, smooth=0.0, eps=1e-7, ignore_index=None):
    """segmentation_models_pytorch.losses.DiceLoss / TverskyLoss.forward (smp 0.3,
    losses/dice.py, losses/tversky.py, losses/_functional.py) in float64. Statistics are summed
    over dims (0, 2), i.e. over the whole batch; classes absent from the target are zeroed;
    Tversky's aggregate is loss.mean() ** gamma."""
    x = x.double()
    bs, num_classes = x.shape[:2]
    y_pred = x.log_softmax(dim=1).exp() if mode == "multiclass" else F.logsigmoid(x).exp()
    if mode == "multiclass":
        y_true = y_true.view(bs, -1)
        y_pred = y_pred.view(bs, num_classes, -1)
        if ignore_index is not None:
            mask = y_true != ignore_index
            y_pred = y_pred * mask.unsqueeze(1)
            y_true = F.one_hot((y_true * mask).to(torch.long), num_classes)
            y_true = y_true.permute(0, 2, 1) * mask.unsqueeze(1)
        else:
            y_true = F.one_hot(y_true, num_classes).permute(0, 2, 1)
    else:
        y_true = y_true.view(bs, num_classes, -1)
        y_pred = y_pred.view(bs, num_classes, -1)
        if ignore_index is not None:
            mask = y_true != ignore_index
            y_pred = y_pred * mask
            y_true = y_true * mask
    y_true = y_true.type_as(y_pred)
    dims = (0, 2)
    if tversky is None:
        intersection = torch.sum(y_pred * y_true, dim=dims)
        cardinality = torch.sum(y_pred + y_true, dim=dims)
        scores = (2.0 * intersection + smooth) / (cardinality + smooth).clamp_min(eps)
    else:
        alpha, beta, _ = tversky
        intersection = torch.sum(y_pred * y_true, dim=dims)
        fp = torch.sum(y_pred * (1.0 - y_true), dim=dims)
        fn = torch.sum((1 - y_pred) * y_true, dim=dims)
        scores = (intersection + smooth) / (intersection + alpha * fp + beta * fn + smooth).clamp_min(eps)
    loss = 1.0 - scores
    loss = loss * (y_true.sum(dims) > 0).to(loss.dtype)
    return loss.mean() if tversky is None else loss.mean() ** tversky[2]


def _dense(n=5, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 3, 4, generator=g) * 2
    t = torch.randint(0, c, (n, 3, 4), generator=g)
    t[:, 0, :c] = torch.arange(c)  # every class present in every image: smp's class mask is a no-op
    return x, t


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_matches_monai_dice_and_tversky(include_background, batch):
    x, t = _dense()
    onehot = F.one_hot(t, 4).permute(0, 3, 1, 2)
    kw = dict(include_background=include_background, per_image=not batch)
    for smooth_nr, smooth_dr in [(1e-5, 1e-5), (0.0, 1e-6), (1.0, 1.0)]:
        ours = el.DiceLoss(smooth_nr=smooth_nr, smooth_dr=smooth_dr, **kw)(x, t)
        ref = _monai_dice(x, onehot, include_background, batch, smooth_nr, smooth_dr)
        torch.testing.assert_close(ours, ref.float(), rtol=RTOL, atol=ATOL)
        ours = el.TverskyLoss(0.3, 0.7, smooth_nr=smooth_nr, smooth_dr=smooth_dr, **kw)(x, t)
        ref = _monai_tversky(x, onehot, 0.3, 0.7, include_background, batch, smooth_nr, smooth_dr)
        torch.testing.assert_close(ours, ref.float(), rtol=RTOL, atol=ATOL)
    # MONAI's one-hot and softmax path also takes the probability form of the target
    torch.testing.assert_close(
        el.DiceLoss(**kw)(x, onehot.float()), _monai_dice(x, onehot, include_background, batch).float()
    )


def test_matches_monai_dice_with_sigmoid():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 5, generator=g) * 2
    t = (torch.rand(4, 3, 5, generator=g) > 0.5).float()
    torch.testing.assert_close(el.DiceLoss(mode="multilabel")(x, t), _monai_dice(x, t, softmax=False).float())


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_matches_segmentation_models_pytorch(smooth):
    x, t = _dense(seed=2)
    t_ignored = t.clone()
    t_ignored[:, 2, 1:] = -100
    kw = dict(per_image=False, smooth_nr=smooth, smooth_dr=smooth)
    for target, ignore_index in [(t, None), (t_ignored, -100)]:
        ours = el.DiceLoss(**kw)(x, target)
        torch.testing.assert_close(ours, _smp(x, target, "multiclass", None, smooth, ignore_index=ignore_index).float())
        ours = el.TverskyLoss(0.3, 0.7, **kw)(x, target)
        ref = _smp(x, target, "multiclass", (0.3, 0.7, 1.0), smooth, ignore_index=ignore_index)
        torch.testing.assert_close(ours, ref.float())
    # multilabel with smp's ignore_index, and binary focal Tversky (one class: gamma applies alike)
    g = torch.Generator().manual_seed(3)
    y = torch.rand(5, 3, 4, generator=g)
    y.view(-1)[::5] = -100.0
    ours = el.DiceLoss(mode="multilabel", **kw)(x[:, :3, 0], y)
    torch.testing.assert_close(ours, _smp(x[:, :3, 0], y, "multilabel", None, smooth, ignore_index=-100).float())
    binary = (torch.rand(5, 1, 3, 4, generator=g) > 0.5).float()
    ours = el.TverskyLoss(0.2, 0.8, 0.75, mode="multilabel", **kw)(x[:, :1], binary)
    torch.testing.assert_close(ours, _smp(x[:, :1], binary, "multilabel", (0.2, 0.8, 0.75), smooth).float())


def test_dice_is_tversky_with_half_the_smoothing():
    x, t = _dense()
    for nr, dr in [(1e-5, 1e-5), (0.0, 2.0), (0.3, 0.1)]:
        torch.testing.assert_close(
            el.DiceLoss(smooth_nr=nr, smooth_dr=dr, reduction="none")(x, t),
            el.TverskyLoss(smooth_nr=nr / 2, smooth_dr=dr / 2, reduction="none")(x, t),
        )


# ------------------------------------------------------------------ edge cases


def test_all_ignored_image_is_finite_zero_and_not_counted():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 5, generator=g, requires_grad=True)
    t = torch.randint(0, 3, (4, 5), generator=g)
    t[1] = -100
    for loss in (el.DiceLoss(smooth_nr=0.0, smooth_dr=0.0), el.TverskyLoss(0.3, 0.7, 0.6, smooth_nr=0.0)):
        per_sample = loss.__class__(**{**_options(loss), "reduction": "per_sample"})(x, t)
        assert per_sample[1] == 0 and torch.isfinite(per_sample).all()
        mean = loss(x, t)
        torch.testing.assert_close(mean, per_sample[[0, 2, 3]].mean())  # image 1 does not dilute the mean
        (g_x,) = torch.autograd.grad(mean, x)
        assert torch.isfinite(g_x).all() and torch.all(g_x[1] == 0) and torch.any(g_x[0] != 0)
    # ignored positions get exactly zero gradient, even where their logits are Inf
    x2 = x.detach().clone()
    x2[2, :, 0] = float("inf")
    t2 = t.clone()
    t2[2, 0] = -100
    x2.requires_grad_(True)
    out = el.TverskyLoss(gamma=0.75)(x2, t2)
    (g_x,) = torch.autograd.grad(out, x2)
    assert torch.isfinite(out) and torch.isfinite(g_x).all() and torch.all(g_x[2, :, 0] == 0)


def _options(loss):
    return {name: getattr(loss, name) for name in loss.__constants__}


def test_focal_power_has_finite_gradients_at_a_perfect_prediction():
    t = torch.tensor([[0, 1, 2, 1]])
    x = (F.one_hot(t, 3).permute(0, 2, 1).float() * 40).requires_grad_(True)  # softmax is exactly one-hot
    for gamma in (0.5, 0.75, 1.0, 2.0):
        out = el.TverskyLoss(gamma=gamma)(x, t)
        (g,) = torch.autograd.grad(out, x)
        assert out == 0 and torch.isfinite(g).all() and torch.all(g == 0)
    # a smoothed index above 1 (smooth_nr > smooth_dr) is clamped: loss 0, not a negative base
    out = el.TverskyLoss(gamma=0.5, smooth_nr=1.0, smooth_dr=0.0, reduction="none")(x, t)
    assert torch.all(out == 0)


def test_gamma_matches_power_of_tversky():
    x, t = _dense()
    base = el.TverskyLoss(0.3, 0.7, reduction="none")(x.double(), t)
    torch.testing.assert_close(el.TverskyLoss(0.3, 0.7, 0.75, reduction="none")(x.double(), t), base**0.75)
    torch.testing.assert_close(el.TverskyLoss(0.3, 0.7, 2.0, reduction="none")(x.double(), t), base**2)


def test_out_of_range_index_gives_nan_for_its_image_only():
    x, t = _dense()
    t = t.clone()
    t[3, 2, 2] = 4  # C = 4
    out = el.DiceLoss(reduction="per_sample")(x, t)
    assert torch.isnan(out[3]) and torch.isfinite(out[[0, 1, 2, 4]]).all()
    t[3, 2, 2] = -3
    assert torch.isnan(el.DiceLoss()(x, t))


def test_ignore_index_inside_the_class_range():
    x, t = _dense()
    ours = el.DiceLoss(ignore_index=0, reduction="none")(x, t)
    l, valid, _ = segmentation_ref(dice=True, ignore_index=0)(x, t)
    torch.testing.assert_close(ours, l.float(), rtol=RTOL, atol=ATOL)


def test_multilabel_integer_and_bool_masks_equal_float_masks():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 2, 4, generator=g)
    mask = torch.rand(3, 2, 4, generator=g) > 0.5
    ref = el.DiceLoss(mode="multilabel", reduction="none")(x, mask.float())
    for target in (mask, mask.long(), mask.to(torch.uint8)):
        torch.testing.assert_close(el.DiceLoss(mode="multilabel", reduction="none")(x, target), ref)


def test_binary_is_multilabel_with_one_channel_and_sigmoid_equals_two_class_softmax():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(4, 1, 6, generator=g)
    mask = (torch.rand(4, 1, 6, generator=g) > 0.5).float()
    # sigmoid(z) is softmax([0, z])[1]: the binary loss is class 1 of the two-class softmax loss
    two = el.DiceLoss(include_background=False, reduction="none")(
        torch.cat([torch.zeros_like(z), z], 1), mask[:, 0].long()
    )
    torch.testing.assert_close(el.DiceLoss(mode="multilabel", reduction="none")(z, mask), two)


def test_per_sample_is_the_class_mean_and_mean_is_their_mean():
    x, t = _dense()
    none = el.DiceLoss(reduction="none")(x, t)
    torch.testing.assert_close(el.DiceLoss(reduction="per_sample")(x, t), none.mean(1))
    torch.testing.assert_close(el.DiceLoss()(x, t), none.mean())
    torch.testing.assert_close(el.DiceLoss(reduction="sum")(x, t), none.sum())


def test_spatial_size_zero_counts_nothing():
    x = torch.randn(3, 4, 0, 2, requires_grad=True)
    for t in (torch.zeros(3, 0, 2, dtype=torch.long), torch.zeros(3, 4, 0, 2)):
        for reduction in ("none", "per_sample", "mean", "sum"):
            out = el.DiceLoss(smooth_nr=0.0, reduction=reduction)(x, t)
            assert torch.all(out == 0)
        out = el.DiceLoss(per_image=False, smooth_nr=0.0, reduction="none")(x, t)
        assert out.shape == (4,) and torch.all(out == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 64, 64, generator=g)
    t = torch.randint(0, 3, (2, 64, 64), generator=g)
    for loss in (el.DiceLoss(reduction="none"), el.TverskyLoss(0.3, 0.7, 0.75, per_image=False)):
        out = loss(x.to(dtype), t)
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), loss(x, t), rtol=2e-2, atol=2e-3)


def test_autocast_computes_in_float32():
    x, t = _dense()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = el.DiceLoss()(x.bfloat16(), t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, el.DiceLoss()(x.bfloat16().float(), t))


def test_gradient_flows_to_probability_targets():
    x, t = _dense()
    probs = F.one_hot(t, 4).permute(0, 3, 1, 2).float().requires_grad_(True)
    (g,) = torch.autograd.grad(el.DiceLoss()(x, probs), probs)
    assert torch.any(g != 0)
    torch.autograd.gradcheck(
        lambda a, b: el.TverskyLoss(0.3, 0.7, 0.75)(a, b),
        (x.double().requires_grad_(True), probs.detach().double().requires_grad_(True)),
    )


def test_backends_agree_and_module_options_are_constants():
    x, t = _dense()
    for backend in ("triton", "auto"):
        torch.testing.assert_close(el.TverskyLoss(0.3, 0.7, backend=backend)(x, t), el.TverskyLoss(0.3, 0.7)(x, t))
    loss = el.TverskyLoss(0.3, 0.7, 0.75, mode="multilabel", per_image=False, ignore_index=-1)
    assert "alpha=0.3" in repr(loss) and "per_image=False" in repr(loss) and "mode='multilabel'" in repr(loss)
    scripted = torch.jit.script(loss)
    assert scripted.gamma == 0.75 and scripted.per_image is False
    torch.testing.assert_close(
        LF.tversky_loss(x, t, 0.3, 0.7, 0.75, reduction="none"), el.TverskyLoss(0.3, 0.7, 0.75, reduction="none")(x, t)
    )


def test_functional_transforms_give_per_sample_gradients():
    x, t = _dense()
    loss = el.TverskyLoss(0.3, 0.7, 0.75)

    def one(xi, ti):
        return loss(xi.unsqueeze(0), ti.unsqueeze(0))

    per_sample = torch.func.vmap(torch.func.grad(one))(x, t)
    for i in range(x.shape[0]):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(xi, t[i : i + 1]), xi)
        torch.testing.assert_close(per_sample[i], g[0])


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="binary"), "mode must be one of 'multiclass', 'multilabel'; got 'binary'"),
        (dict(alpha=-0.1), "alpha must be non-negative; got -0.1"),
        (dict(beta=float("nan")), "beta must be non-negative; got nan"),
        (dict(gamma=0.0), "gamma must be positive; got 0.0"),
        (dict(smooth_nr=-1.0), "smooth_nr must be non-negative"),
        (dict(smooth_dr=-1.0), "smooth_dr must be non-negative"),
        (dict(mode="multilabel", include_background=False), "include_background=False drops class 0.*multilabel"),
        (dict(per_image=False, reduction="per_sample"), "reduction='per_sample' needs per_image=True"),
        (dict(reduction="batchmean"), "reduction must be one of"),
        (dict(backend="cuda"), "backend must be one of"),
    ],
)
def test_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        el.TverskyLoss(**kwargs)
    x, t = _dense()
    with pytest.raises(ValueError, match=match):
        LF.tversky_loss(x, t, **kwargs)
    if not {"alpha", "beta", "gamma"} & set(kwargs):
        with pytest.raises(ValueError, match=match):
            el.DiceLoss(**kwargs)
        with pytest.raises(ValueError, match=match):
            LF.dice_loss(x, t, **kwargs)


def test_tensor_errors():
    x, t = _dense()
    cases = [
        ((torch.randn(4), torch.tensor(1)), {}, r"input must have shape \(N, C\) or \(N, C, d1, ..., dk\); got \(4,\)"),
        ((x.long(), t), {}, "input must be a floating-point tensor; got dtype torch.int64"),
        ((x, t[:, :2]), {}, r"class-index target must have shape \(5, 3, 4\)"),
        ((x, torch.rand(5, 4, 3)), {}, r"class-probability target must have the input's shape \(5, 4, 3, 4\)"),
        ((x, t.bool()), {}, "target must hold integer class indices or float probabilities; got dtype torch.bool"),
        ((x, torch.rand(5, 4, 3)), dict(mode="multilabel"), r"input and target must have the same shape"),
        ((x, torch.zeros(x.shape, dtype=torch.complex64)), dict(mode="multilabel"), "target must be real"),
        ((x[:, :1], t), dict(include_background=False), "include_background=False needs at least 2 classes"),
        ((x, t), dict(sample_weight=torch.ones(4)), r"sample_weight must have shape \(5,\)"),
        ((x, t), dict(sample_weight=torch.ones(5, dtype=torch.long)), "sample_weight must be a floating-point"),
        ((x, t), dict(reduction="sum", normalizer=torch.tensor(2.0)), "normalizer is used only by reduction='mean'"),
        ((x, t), dict(normalizer=torch.ones(1)), "normalizer must be a 0-dim tensor"),
        ((x, t.to("meta")), {}, "target must be on the input's device"),
    ]
    for args, kwargs, match in cases:
        for fn in (LF.dice_loss, LF.tversky_loss):
            with pytest.raises(ValueError, match=match):
                fn(*args, **kwargs)


def test_checks_read_no_data():
    x, t = _dense()
    for loss in (el.DiceLoss(per_image=False), el.TverskyLoss(0.3, 0.7, 0.5, mode="multiclass")):
        out = loss.to("meta")(x.to("meta"), t.to("meta"), torch.ones(5, device="meta"))
        assert out.device.type == "meta"
