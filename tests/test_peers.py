"""Our segmentation, focal and box losses against the libraries users compare them with:
MONAI, segmentation_models_pytorch (smp) and torchvision. Values and gradients with respect to
the logits, multiclass and multilabel, statistics per image and over the batch, several
smoothing settings. Each peer is optional (``pip install -e .[peers]``): its tests skip
cleanly when it does not import (torchvision's wheels are CUDA builds that do not import on a
CPU-only torch).
"""

import importlib
import importlib.util
import sys
import warnings

import pytest
import torch

import exportable_loss as el
from exportable_loss import functional as elf


def _import(name: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:  # not installed, or installed but broken (a CUDA torchvision on CPU torch)
        return None


def _smp_losses():
    """smp's losses depend on torch and numpy only, but its package imports its encoders (timm,
    torchvision): where that fails, load the losses subpackage by itself."""
    module = _import("segmentation_models_pytorch.losses")
    if module is not None:
        return module
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = spec.submodule_search_locations[0] + "/losses"
    name = "_smp_losses_standalone"
    if name not in sys.modules:
        loader = importlib.util.spec_from_file_location(
            name, folder + "/__init__.py", submodule_search_locations=[folder]
        )
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except Exception:
            del sys.modules[name]
            return None
    return sys.modules[name]


monai_losses = _import("monai.losses")
smp_losses = _smp_losses()
torchvision_ops = _import("torchvision.ops")
needs_monai = pytest.mark.skipif(monai_losses is None, reason="MONAI is not installed (pip install -e .[peers])")
needs_smp = pytest.mark.skipif(
    smp_losses is None, reason="segmentation_models_pytorch is not installed (pip install -e .[peers])"
)
needs_torchvision = pytest.mark.skipif(torchvision_ops is None, reason="torchvision does not import here")

SMOOTHING = [(1e-5, 1e-5), (0.0, 1e-6), (1.0, 1.0), (0.5, 2.0)]


def _segmentation(mode: str, seed: int = 0, n: int = 3, c: int = 4):
    """Logits (N, C, 5, 6) and a target where every class occurs in every image (smp drops the
    classes absent from the target; MONAI and we do not)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 5, 6, generator=g, dtype=torch.float64) * 2
    if mode == "multiclass":
        t = torch.randint(0, c, (n, 5, 6), generator=g)
        t[:, 0, :c] = torch.arange(c)
    else:
        t = (torch.rand(n, c, 5, 6, generator=g) > 0.6).double()
        t[:, :, 0, 0] = 1.0
    return x, t


def _value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


def _assert_same(ours, theirs, x, tol=1e-7):
    got, got_grad = _value_and_grad(ours, x)
    want, want_grad = _value_and_grad(theirs, x)
    torch.testing.assert_close(got, want.reshape(got.shape).to(got.dtype), rtol=tol, atol=tol * 1e-1)
    torch.testing.assert_close(got_grad, want_grad.to(got.dtype), rtol=tol, atol=tol * 1e-1)


def _onehot(t, c):
    return torch.nn.functional.one_hot(t, c).movedim(-1, 1).double()


# ---------------------------------------------------------------- MONAI


@needs_monai
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize("per_image", [True, False], ids=["per_image", "batch"])
@pytest.mark.parametrize("smooth", SMOOTHING, ids=str)
def test_dice_matches_monai(mode, per_image, smooth):
    x, t = _segmentation(mode)
    smooth_nr, smooth_dr = smooth
    options = dict(smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=not per_image, reduction="none")
    if mode == "multiclass":
        theirs = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, **options)
        target = t.unsqueeze(1)
    else:
        theirs = monai_losses.DiceLoss(sigmoid=True, **options)
        target = t
    ours = el.DiceLoss(mode=mode, per_image=per_image, smooth_nr=smooth_nr, smooth_dr=smooth_dr, reduction="none")
    _assert_same(lambda a: ours(a, t), lambda a: theirs(a, target), x)


@needs_monai
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize("per_image", [True, False], ids=["per_image", "batch"])
@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.7), (0.8, 0.1)])
@pytest.mark.parametrize("smooth", SMOOTHING[:3], ids=str)
def test_tversky_matches_monai(mode, per_image, alpha, beta, smooth):
    x, t = _segmentation(mode, seed=1)
    smooth_nr, smooth_dr = smooth
    options = dict(alpha=alpha, beta=beta, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=not per_image)
    if mode == "multiclass":
        theirs = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, reduction="none", **options)
        target = t.unsqueeze(1)
    else:
        theirs = monai_losses.TverskyLoss(sigmoid=True, reduction="none", **options)
        target = t
    ours = el.TverskyLoss(
        alpha=alpha,
        beta=beta,
        mode=mode,
        per_image=per_image,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        reduction="none",
    )
    _assert_same(lambda a: ours(a, t), lambda a: theirs(a, target), x)


@needs_monai
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.25, None])
def test_sigmoid_focal_matches_monai(gamma, alpha):
    x, t = _segmentation("multilabel", seed=2)
    theirs = monai_losses.FocalLoss(gamma=gamma, alpha=alpha, reduction="none")
    ours = el.FocalLoss(alpha=-1.0 if alpha is None else alpha, gamma=gamma, reduction="none")
    # MONAI computes in float32 whatever the input's dtype
    _assert_same(lambda a: ours(a, t), lambda a: theirs(a, t), x, tol=1e-5)


# ---------------------------------------------------------------- segmentation_models_pytorch


@needs_smp
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize("smooth", [0.0, 1e-3, 1.0, 5.0])
def test_dice_matches_smp(mode, smooth):
    """smp >= 0.4: ``smooth=s`` is our ``smooth_nr = smooth_dr = 2 * s`` (statistics summed
    over the batch, our ``per_image=False``)."""
    x, t = _segmentation(mode, seed=3)
    theirs = smp_losses.DiceLoss(mode=mode, smooth=smooth, eps=0.0)
    ours = el.DiceLoss(mode=mode, per_image=False, smooth_nr=2 * smooth, smooth_dr=2 * smooth)
    _assert_same(lambda a: ours(a, t), lambda a: theirs(a, t), x)


@needs_smp
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.7)])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
@pytest.mark.parametrize("gamma", [1.0, 0.75, 2.0])
def test_tversky_matches_smp(mode, alpha, beta, smooth, gamma):
    """smp's ``smooth=s`` is our ``smooth_nr = smooth_dr = s``; smp raises the mean over
    classes to ``gamma``, we raise each class's loss: compared through our ``gamma=1`` losses."""
    x, t = _segmentation(mode, seed=4)
    theirs = smp_losses.TverskyLoss(mode=mode, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth, eps=0.0)
    ours = el.TverskyLoss(
        alpha=alpha, beta=beta, gamma=1.0, mode=mode, per_image=False, smooth_nr=smooth, smooth_dr=smooth
    )
    _assert_same(lambda a: ours(a, t) ** gamma, lambda a: theirs(a, t), x)
    if gamma != 1.0:  # and ours with gamma applies it per class
        focal = el.TverskyLoss(
            alpha=alpha, beta=beta, gamma=gamma, mode=mode, per_image=False, smooth_nr=smooth, smooth_dr=smooth
        )
        _assert_same(
            lambda a: focal(a, t),
            lambda a: (
                ours.__class__(
                    alpha=alpha,
                    beta=beta,
                    mode=mode,
                    per_image=False,
                    smooth_nr=smooth,
                    smooth_dr=smooth,
                    reduction="none",
                )(a, t)
                ** gamma
            ).mean(),
            x,
        )


@needs_smp
@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [0.25, 0.6, None])
def test_sigmoid_focal_matches_smp(gamma, alpha):
    """smp's focal term ``(1 - exp(-bce)) ** gamma`` is ours for binary targets."""
    x, t = _segmentation("multilabel", seed=5)
    ours = el.FocalLoss(alpha=-1.0 if alpha is None else alpha, gamma=gamma, reduction="none")
    _assert_same(
        lambda a: ours(a, t),
        lambda a: smp_losses._functional.focal_loss_with_logits(a, t, gamma=gamma, alpha=alpha, reduction="none"),
        x,
    )


# ---------------------------------------------------------------- torchvision


@needs_torchvision
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_sigmoid_focal_matches_torchvision(gamma):
    x, t = _segmentation("multilabel", seed=6)
    _assert_same(
        lambda a: elf.sigmoid_focal_loss(a, t, gamma=gamma, reduction="none"),
        lambda a: torchvision_ops.sigmoid_focal_loss(a, t, gamma=gamma, reduction="none"),
        x,
    )


@needs_torchvision
@pytest.mark.parametrize(
    "ours,theirs",
    [
        (el.GIoULoss, "generalized_box_iou_loss"),
        (el.DIoULoss, "distance_box_iou_loss"),
        (el.CIoULoss, "complete_box_iou_loss"),
    ],
    ids=["giou", "diou", "ciou"],
)
def test_box_losses_match_torchvision(ours, theirs):
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(16, 2, generator=g, dtype=torch.float64) * 10
    wh = torch.rand(16, 2, generator=g, dtype=torch.float64) * 5 + 0.5
    pred = torch.cat([xy, xy + wh], 1)
    gt = pred.detach() + torch.randn(16, 4, generator=g, dtype=torch.float64)
    gt = torch.cat([torch.minimum(gt[:, :2], gt[:, 2:]), torch.maximum(gt[:, :2], gt[:, 2:]) + 0.1], 1)
    _assert_same(
        lambda a: ours(reduction="none")(a, gt),
        lambda a: getattr(torchvision_ops, theirs)(a, gt, reduction="none"),
        pred,
    )
