"""GIoU / DIoU / CIoU losses beyond the generic tests: exact values, shapes, degenerate boxes,
half precision, integer targets, torch.func, ONNX on degenerate boxes and every error."""

import math
import os

import pytest
import torch
from cases import CASES  # noqa: F401  (imports the case files in the right order)
from cases_detection import box_loss_ref, box_pair

import exportable_loss as el
from exportable_loss import functional as LF
from exportable_loss.export import export_onnx, run_onnx

KINDS = {
    "giou": (LF.generalized_box_iou_loss, el.GIoULoss),
    "diou": (LF.distance_box_iou_loss, el.DIoULoss),
    "ciou": (LF.complete_box_iou_loss, el.CIoULoss),
}
ALL = list(KINDS)


def _boxes(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def _pairs(n, *rest, seed=0, dtype=torch.float64):
    pred, gt = box_pair(n, torch.Generator().manual_seed(seed), *rest)
    return pred.to(dtype), gt.to(dtype)


# Exact values, worked out by hand (eps = 1e-7 changes them by less than 1e-7).
# pred [0,0,2,2], gt [1,1,3,3]: I = 1, U = 7, hull 3x3 (area 9, diagonal^2 18), centre gap^2 2.
# pred [0,0,1,1], gt [2,0,3,1]: disjoint, U = 2, hull 3x1 (area 3, diagonal^2 10), gap^2 4.
# pred [0,0,2,1], gt [1,0,2,2]: I = 1, U = 3, hull 2x2 (diagonal^2 8), gap^2 0.5, aspect 2 vs 1/2.
_V = 4 / math.pi**2 * (math.atan(2.0) - math.atan(0.5)) ** 2
EXACT = {
    "giou": [1 - 1 / 7 + 2 / 9, 1 + 1 / 3, 1 - 1 / 3 + 1 / 4],
    "diou": [1 - 1 / 7 + 2 / 18, 1 + 4 / 10, 1 - 1 / 3 + 0.5 / 8],
    "ciou": [1 - 1 / 7 + 2 / 18, 1 + 4 / 10, 1 - 1 / 3 + 0.5 / 8 + _V * _V / (2 / 3 + _V)],
}


@pytest.mark.parametrize("kind", ALL)
def test_exact_values(kind):
    fn, _ = KINDS[kind]
    pred = _boxes([0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 1])
    gt = _boxes([1, 1, 3, 3], [2, 0, 3, 1], [1, 0, 2, 2])
    out = fn(pred, gt, reduction="none")
    torch.testing.assert_close(out, torch.tensor(EXACT[kind], dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(fn(pred, gt, eps=0.0, reduction="none"), out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("rest", [(), (3,), (2, 3)], ids=["N", "N3", "N23"])
def test_float64_matches_reference_with_gradients_to_both(kind, rest):
    fn, _ = KINDS[kind]
    pred, gt = _pairs(7, *rest)
    pred.requires_grad_(True)
    gt.requires_grad_(True)
    out = fn(pred, gt, reduction="none")
    ref, _, _ = box_loss_ref(kind)(pred, gt)
    assert out.shape == pred.shape[:-1] and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = torch.autograd.grad((out * w).sum(), (pred, gt))
    want = torch.autograd.grad((ref * w).sum(), (pred, gt))
    for g, r in zip(got, want):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ALL)
def test_unbatched_box(kind):
    fn, cls = KINDS[kind]
    pred, gt = _pairs(3)
    for reduction in ("none", "mean", "sum"):
        out = fn(pred[1], gt[1], reduction=reduction)
        assert out.shape == ()
        torch.testing.assert_close(out, fn(pred[1:2], gt[1:2], reduction="none")[0])
    with pytest.raises(
        ValueError, match=r"per_sample' needs a batch dimension; got an unbatched input of shape \(4,\)"
    ):
        cls(reduction="per_sample")(pred[1], gt[1])
    with pytest.raises(ValueError, match=r"sample_weight needs a batch dimension"):
        cls()(pred[1], gt[1], torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("kind", ALL)
def test_extra_dims_shapes_and_per_sample(kind):
    _, cls = KINDS[kind]
    pred, gt = _pairs(6, 2, 3)
    none = cls(reduction="none")(pred, gt)
    assert none.shape == (6, 2, 3)
    torch.testing.assert_close(cls(reduction="per_sample")(pred, gt), none.mean((1, 2)))
    torch.testing.assert_close(cls(reduction="mean")(pred, gt), none.mean())
    torch.testing.assert_close(cls(reduction="sum")(pred, gt), none.sum())
    assert cls(reduction="per_sample")(pred[:, 0, 0], gt[:, 0, 0]).shape == (6,)


@pytest.mark.parametrize("kind", ALL)
def test_default_reduction_is_mean(kind):
    fn, cls = KINDS[kind]
    pred, gt = _pairs(6)
    assert cls().reduction == "mean" and cls().eps == 1e-7
    torch.testing.assert_close(fn(pred, gt), fn(pred, gt, reduction="none").mean())
    torch.testing.assert_close(cls()(pred, gt), fn(pred, gt))


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_boxes_give_zero(kind, dtype):
    fn, _ = KINDS[kind]
    gt = _pairs(8, dtype=dtype)[1].requires_grad_(True)
    pred = gt.detach().clone().requires_grad_(True)
    out = fn(pred, gt, reduction="none")
    # 1 - A / (A + eps): zero up to eps / area
    assert torch.all(out.abs() < 1e-6), out
    grads = torch.autograd.grad(out.sum(), (pred, gt))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind", ALL)
def test_symmetric_translation_and_scale_invariant(kind):
    fn, _ = KINDS[kind]
    pred, gt = _pairs(9)
    out = fn(pred, gt, reduction="none")
    torch.testing.assert_close(fn(gt, pred, reduction="none"), out, rtol=1e-12, atol=1e-12)
    shift = torch.tensor([5.0, -3.0, 5.0, -3.0], dtype=torch.float64)
    torch.testing.assert_close(fn(pred + shift, gt + shift, reduction="none"), out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fn(pred * 100, gt * 100, reduction="none"), out, rtol=1e-6, atol=1e-6)


def test_disjoint_far_boxes():
    pred = _boxes([0, 0, 1, 1], [0, 0, 1, 1])
    gt = _boxes([100, 100, 101, 101], [1.5, 0, 2.5, 1])
    giou = LF.generalized_box_iou_loss(pred, gt, reduction="none")
    assert torch.all(giou > 1) and giou[0] > 1.99  # tends to 2 with the gap
    assert giou[0] > giou[1]
    diou = LF.distance_box_iou_loss(pred, gt, reduction="none")
    assert torch.all(diou > 1) and diou[0] > 1.98
    # disjoint boxes still get a gradient pulling them together (IoU alone gives none)
    pred.requires_grad_(True)
    for fn in (LF.generalized_box_iou_loss, LF.distance_box_iou_loss, LF.complete_box_iou_loss):
        (g,) = torch.autograd.grad(fn(pred, gt, reduction="sum"), pred)
        # translating each box towards its target lowers the loss
        assert g[0].sum() < 0 and g[1, 0] + g[1, 2] < 0


# Degenerate pairs (pred, gt) and what each loss gives: (GIoU, DIoU, CIoU). Inverted boxes are
# outside torchvision's domain: IoU 0, signed area in the union, enclosing box over all corners.
DEGENERATE = [
    ("zero_width", [1, 1, 1, 3], [0, 0, 2, 2], (1 + 2 / 6, 1 + 1 / 13, 1 + 1 / 13 + 0.05)),
    ("zero_height", [0, 1, 2, 1], [0, 0, 2, 2], (1.0, 1.0, 1.05)),
    ("point_in_box", [1, 1, 1, 1], [0, 0, 2, 2], (1.0, 1.0, 1.05)),
    ("identical_points", [1, 1, 1, 1], [1, 1, 1, 1], (1.0, 1.0, 1.0)),
    ("separate_points", [0, 0, 0, 0], [3, 4, 3, 4], (2.0, 2.0, 2.0)),
    ("both_empty_segments", [0, 0, 1, 0], [2, 0, 3, 0], (1.0, 1 + 4 / 9, 1 + 4 / 9)),
    ("inverted_x", [2, 0, 0, 2], [0, 0, 2, 2], (2.0, 1.0, 1.5)),
    ("both_inverted_x", [3, 0, 1, 1], [4, 0, 2, 1], (1 + 7 / 3, 1.1, 1.1)),
    ("inverted_both_axes", [2, 2, 0, 0], [0, 0, 1, 1], (0.75, 1.0625, 1.0625)),
    ("point_and_inverted", [0, 0, 0, 0], [1, 1, 0, 0], (1.0, 1.25, 1.3)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ALL)
def test_degenerate_boxes_finite_loss_and_gradients(kind, dtype):
    fn, _ = KINDS[kind]
    pred = torch.tensor([d[1] for d in DEGENERATE], dtype=dtype, requires_grad=True)
    gt = torch.tensor([d[2] for d in DEGENERATE], dtype=dtype, requires_grad=True)
    out = fn(pred, gt, reduction="none")
    assert torch.isfinite(out).all(), dict(zip([d[0] for d in DEGENERATE], out.tolist()))
    grads = torch.autograd.grad(out.sum(), (pred, gt))
    for g in grads:
        assert torch.isfinite(g).all(), g
    column = ALL.index(kind)
    for i, (name, _, _, expected) in enumerate(DEGENERATE):
        if expected is not None:
            assert out[i].item() == pytest.approx(expected[column], abs=1e-5), name
    # a point box has no aspect gradient; identical points get none at all
    assert torch.all(grads[0][3] == 0) and torch.all(grads[1][3] == 0)


@pytest.mark.parametrize("kind", ALL)
def test_inverted_box_whose_area_cancels_the_union_with_eps_zero(kind):
    # union = -4 + 4 = 0: torchvision divides 0 by 0 here; the IoU of boxes that do not overlap is 0
    fn, _ = KINDS[kind]
    pred = _boxes([2, 0, 0, 2]).requires_grad_(True)
    gt = _boxes([0, 0, 2, 2]).requires_grad_(True)
    out = fn(pred, gt, eps=0.0, reduction="none")
    assert out.item() == pytest.approx({"giou": 2.0, "diou": 1.0, "ciou": 1.5}[kind])
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.sum(), (pred, gt)))


@pytest.mark.parametrize("kind", ALL)
def test_zero_height_gradient_is_the_limit_of_thin_boxes(kind):
    # torchvision's atan(w / h) has a NaN gradient at h = 0; ours is the limit h -> 0+
    fn, _ = KINDS[kind]
    gt = _boxes([0, 0, 2, 2])

    def grad_at(h):
        pred = _boxes([3, 1, 5, 1 + h]).requires_grad_(True)
        (g,) = torch.autograd.grad(fn(pred, gt, reduction="sum"), pred)
        return g

    at_zero = grad_at(0.0)
    assert torch.isfinite(at_zero).all()
    torch.testing.assert_close(at_zero, grad_at(1e-9), rtol=1e-6, atol=1e-6)


def test_eps_placement():
    # two identical unit-area boxes: IoU = 1 / (1 + eps); empty hull penalty is 0
    box = _boxes([0, 0, 1, 1])
    for eps in (1e-7, 0.5):
        expected = 1 - 1 / (1 + eps)
        for fn, _ in KINDS.values():
            assert fn(box, box, eps=eps, reduction="sum").item() == pytest.approx(expected, rel=1e-9)
    # GIoU hull term (C - U) / (C + eps) and DIoU distance term d^2 / (c^2 + eps)
    pred, gt = _boxes([0, 0, 1, 1]), _boxes([2, 0, 3, 1])
    assert LF.generalized_box_iou_loss(pred, gt, eps=0.5).item() == pytest.approx(1 + 1 / 3.5)
    assert LF.distance_box_iou_loss(pred, gt, eps=0.5).item() == pytest.approx(1 + 4 / 10.5)
    assert LF.complete_box_iou_loss(pred, gt, eps=0.5).item() == pytest.approx(1 + 4 / 10.5)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(kind, dtype):
    fn, _ = KINDS[kind]
    pred, gt = _pairs(64, 3, dtype=torch.float32)
    pred, gt = pred.to(dtype), gt.to(dtype)
    ref = fn(pred.float(), gt.float(), reduction="none")
    out = fn(pred, gt, reduction="none")
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref.to(dtype), rtol=0, atol=0)  # one rounding of the float32 result
    mean = fn(pred, gt)
    assert mean.dtype == dtype
    torch.testing.assert_close(mean.float(), ref.mean(), rtol=1e-2, atol=0)
    # degenerate boxes: the float32 compute keeps eps = 1e-7 (below float16's resolution) and
    # terms of order 1 / eps. Two segments on one line (zero hull area) give GIoU gradients of
    # order 1 / eps (torchvision's too), beyond float16's range: left out there.
    rows = [d for d in DEGENERATE if not (kind == "giou" and dtype == torch.float16 and d[0] == "both_empty_segments")]
    pred = torch.tensor([d[1] for d in rows], dtype=dtype, requires_grad=True)
    gt = torch.tensor([d[2] for d in rows], dtype=dtype, requires_grad=True)
    out = fn(pred, gt, reduction="none")
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.sum(), (pred, gt)))


@pytest.mark.parametrize("kind", ALL)
def test_integer_target_is_upcast(kind):
    fn, _ = KINDS[kind]
    pred = _boxes([0.5, 0.5, 2.5, 3.0], [1, 1, 4, 2]).float()
    gt = torch.tensor([[0, 0, 2, 3], [1, 0, 3, 2]])
    out = fn(pred, gt, reduction="none")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fn(pred, gt.float(), reduction="none"))


@pytest.mark.parametrize("kind", ALL)
def test_autocast_computes_in_float32(kind):
    _, cls = KINDS[kind]
    pred, gt = _pairs(6, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cls()(pred.bfloat16(), gt.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, cls()(pred.bfloat16().float(), gt.bfloat16().float()))


@pytest.mark.parametrize("kind", ALL)
def test_does_not_modify_the_inputs(kind):
    _, cls = KINDS[kind]
    pred, gt = _pairs(6, 2)
    pred_copy, gt_copy = pred.clone(), gt.clone()
    cls(reduction="per_sample")(pred, gt, torch.rand(6, dtype=torch.float64))
    assert torch.equal(pred, pred_copy) and torch.equal(gt, gt_copy)


@pytest.mark.parametrize("kind", ALL)
def test_per_sample_gradients_with_torch_func(kind):
    fn, _ = KINDS[kind]
    pred, gt = _pairs(5, 3)

    def loss(p, t):
        return fn(p.unsqueeze(0), t.unsqueeze(0), reduction="mean")

    per_sample = torch.func.vmap(torch.func.grad(loss))(pred, gt)
    for i in range(5):
        p = pred[i : i + 1].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(fn(p, gt[i : i + 1], reduction="mean"), p)
        torch.testing.assert_close(per_sample[i], expected[0])


@pytest.mark.parametrize("kind", ALL)
def test_module_matches_functional_with_weights(kind):
    fn, cls = KINDS[kind]
    pred, gt = _pairs(6, 3)
    s = torch.rand(6, dtype=torch.float64)
    norm = torch.tensor(4.0)
    torch.testing.assert_close(cls(eps=1e-3)(pred, gt, s, norm), fn(pred, gt, 1e-3, "mean", s, norm))
    expected = (fn(pred, gt, 1e-3, "none") * s[:, None]).sum() / 4.0
    torch.testing.assert_close(cls(eps=1e-3)(pred, gt, s, norm), expected)


@pytest.mark.parametrize("kind", ALL)
def test_repr_and_scripted_constants(kind):
    _, cls = KINDS[kind]
    module = cls(eps=1e-5, reduction="sum", backend="auto")
    assert repr(module) == f"{cls.__name__}(reduction='sum', backend='auto', eps=1e-05)"
    pred, gt = _pairs(6)
    scripted = torch.jit.script(module)
    torch.testing.assert_close(scripted(pred, gt), module(pred, gt))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("kind", ALL)
def test_onnx_degenerate_boxes_stay_finite(kind, dynamo, tmp_path):
    # The TorchScript exporter writes atan2 as Atan(y / x) plus corrections, NaN at (0, 0)
    _, cls = KINDS[kind]
    module = cls(reduction="none")
    pred, gt = _pairs(6, dtype=torch.float32)
    path = export_onnx(module, (pred, gt), os.path.join(tmp_path, "loss.onnx"), dynamo=dynamo)
    pred = torch.tensor([d[1] for d in DEGENERATE], dtype=torch.float32)
    gt = torch.tensor([d[2] for d in DEGENERATE], dtype=torch.float32)
    (out,) = run_onnx(path, (pred, gt))
    ref = module(pred, gt)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ALL)
def test_errors(kind):
    fn, cls = KINDS[kind]
    box = torch.rand(6, 4)
    with pytest.raises(ValueError, match=r"input must hold \(x1, y1, x2, y2\) boxes.*got shape \(6, 5\)"):
        cls()(torch.rand(6, 5), torch.rand(6, 5))
    with pytest.raises(ValueError, match=r"input must hold \(x1, y1, x2, y2\) boxes.*got shape \(\)"):
        fn(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"same shape; got input \(6, 4\) and target \(5, 4\)"):
        cls()(box, torch.rand(5, 4))
    with pytest.raises(ValueError, match=r"same shape; got input \(6, 4\) and target \(4,\)"):
        cls()(box, torch.rand(4))
    with pytest.raises(ValueError, match="input must be a floating-point tensor; got dtype torch.int64"):
        cls()(torch.ones(6, 4, dtype=torch.long), box)
    with pytest.raises(
        ValueError, match="target must hold floating-point or integer box coordinates; got dtype torch.bool"
    ):
        cls()(box, torch.ones(6, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="eps must be non-negative; got -0.1"):
        cls(eps=-0.1)
    with pytest.raises(ValueError, match="eps must be non-negative; got -0.1"):
        fn(box, box, eps=-0.1)
    with pytest.raises(ValueError, match=r"reduction must be one of 'none', 'per_sample', 'mean', 'sum'; got 'avg'"):
        cls(reduction="avg")
    with pytest.raises(ValueError, match=r"reduction must be one of .*got 'batchmean'"):
        fn(box, box, reduction="batchmean")
    with pytest.raises(ValueError, match=r"backend must be one of 'torch', 'triton', 'auto'; got 'cuda'"):
        cls(backend="cuda")
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(6,\).*got \(6, 1\)"):
        cls()(box, box, torch.ones(6, 1))
    with pytest.raises(ValueError, match="normalizer is used only by reduction='mean'"):
        cls(reduction="sum")(box, box, None, torch.tensor(2.0))
    with pytest.raises(ValueError, match="target must be on the input's device"):
        cls()(box, torch.rand(6, 4, device="meta"))


@pytest.mark.parametrize("kind", ALL)
def test_errors_need_no_data(kind):
    _, cls = KINDS[kind]
    meta = torch.empty(6, 5, device="meta")
    with pytest.raises(ValueError, match="boxes along its last dimension"):
        cls()(meta, meta)
    out = cls(reduction="per_sample")(torch.empty(6, 2, 4, device="meta"), torch.empty(6, 2, 4, device="meta"))
    assert out.shape == (6,) and out.device.type == "meta"
