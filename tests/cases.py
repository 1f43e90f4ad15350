"""The loss catalogue the tests share: each case builds our module, its torch.nn twin (or an
independent float64 formula) and inputs for any batch size."""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import exportable_loss as el
from exportable_loss._registry import LossSpec

BASE = ("none", "per_sample", "mean", "sum")
# Feature sizes stay below every batch size the tests use (>= 6), so torch.compile's duck
# sizing never ties the batch to another dimension.
C = 5


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[..., nn.Module]  # (reduction, **kw) -> our module
    # (n, generator) -> the data tensors forward takes before sample_weight, batch along dim 0
    inputs: Callable[[int, torch.Generator], Tuple[Tensor, ...]]
    # float64 element-wise reference: (*data) -> (l, valid mask or None, position weight or None)
    elementwise: Callable[..., Tuple[Tensor, Optional[Tensor], Optional[Tensor]]]
    # torch.nn twin for none/mean/sum, None where torch.nn has no such loss
    twin: Optional[Callable[..., nn.Module]] = None
    reductions: Tuple[str, ...] = BASE
    # which data tensors require grad (the first always); gradients are compared for all
    grad_args: Tuple[int, ...] = (0,)
    # which data tensors have the batch on dim 0 (None: all); others are parameters (a classifier)
    batched: Optional[Tuple[int, ...]] = None

    def is_batched(self, i: int) -> bool:
        """Whether argument i of forward has the batch on dim 0 (sample_weight does)."""
        return self.batched is None or i in self.batched or i >= arity(self)

    def __str__(self) -> str:
        return self.name


def _class_target(n: int, g: torch.Generator, *rest: int, ignore: int = -100) -> Tensor:
    t = torch.randint(0, C, (n, *rest), generator=g)
    t.view(-1)[::4] = ignore  # every fourth position ignored, row 0 included
    return t


def _ce_ref(weight, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None):
    """float64 cross entropy from the formula, independent of torch.nn and of our code."""

    def ref(x: Tensor, t: Tensor):
        x = x.double()
        if softcap is not None:
            x = softcap * torch.tanh(x / softcap)
        w = torch.ones(x.shape[1], dtype=torch.float64) if weight is None else weight.double()
        wb = w.view([1, -1] + [1] * (x.dim() - 2))
        lse = torch.logsumexp(x, 1)
        logp = x - lse.unsqueeze(1)
        if t.is_floating_point():
            q = t.double() * (1 - label_smoothing) + label_smoothing / x.shape[1]
            return -(logp * q * wb).sum(1) + z_loss * lse**2, None, None
        valid = t != ignore_index
        safe = torch.where(valid, t, 0)
        wt = torch.where(valid, w[safe], 0.0)
        nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
        smooth = -(logp * wb).sum(1)
        loss = (1 - label_smoothing) * wt * nll + label_smoothing / x.shape[1] * smooth + z_loss * lse**2 * wt
        return torch.where(valid, loss, 0.0), valid, wt

    return ref


def _class_last(ref):
    """A class-dimension-1 reference applied to logits with the classes last."""

    def moved(x: Tensor, t: Tensor):
        return ref(x.movedim(-1, 1), t.movedim(-1, 1) if t.is_floating_point() else t)

    return moved


def _nn_elementwise(fn: Callable[..., Tensor]):
    def ref(x: Tensor, t: Tensor):
        return fn(x.double(), t.double()), None, None

    return ref


def _focal_ref(alpha: float, gamma: float):
    # torchvision.ops.sigmoid_focal_loss, written out in float64
    def ref(x: Tensor, t: Tensor):
        x, t = x.double(), t.double()
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * (1 - p_t) ** gamma
        if alpha >= 0:
            loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
        return loss, None, None

    return ref


_gen = torch.Generator().manual_seed(0)
W5 = torch.rand(C, generator=_gen) + 0.5
W3 = torch.rand(3, generator=_gen) + 0.5
POS3 = torch.rand(3, generator=_gen) * 3


def _nll_ref(x: Tensor, t: Tensor):
    valid = t != -100
    safe = torch.where(valid, t, 0)
    wt = torch.where(valid, W5.double()[safe], 0.0)
    return torch.where(valid, -x.double().gather(1, safe.unsqueeze(1)).squeeze(1) * wt, 0.0), valid, wt


CASES: Dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "ce",
            lambda r, **kw: el.CrossEntropyLoss(reduction=r, **kw),
            lambda n, g: (torch.randn(n, C, generator=g) * 3, _class_target(n, g)),
            _ce_ref(None),
            twin=lambda r: nn.CrossEntropyLoss(reduction=r),
        ),
        Case(
            "ce_weight_ls_spatial",
            lambda r, **kw: el.CrossEntropyLoss(W5, ignore_index=1, reduction=r, label_smoothing=0.2, **kw),
            lambda n, g: (torch.randn(n, C, 3, generator=g), _class_target(n, g, 3, ignore=1)),
            _ce_ref(W5, ignore_index=1, label_smoothing=0.2),
            twin=lambda r: nn.CrossEntropyLoss(W5, ignore_index=1, reduction=r, label_smoothing=0.2),
        ),
        Case(
            "ce_probs",
            lambda r, **kw: el.CrossEntropyLoss(W5, reduction=r, label_smoothing=0.1, **kw),
            lambda n, g: (
                torch.randn(n, C, 2, generator=g),
                torch.softmax(torch.randn(n, C, 2, generator=g), 1),
            ),
            _ce_ref(W5, label_smoothing=0.1),
            twin=lambda r: nn.CrossEntropyLoss(W5, reduction=r, label_smoothing=0.1),
        ),
        Case(
            "ce_class_last",  # (N, T, C) logits, as a language model's
            lambda r, **kw: el.CrossEntropyLoss(W5, reduction=r, label_smoothing=0.1, z_loss=0.01, class_dim=-1, **kw),
            lambda n, g: (torch.randn(n, 3, C, generator=g) * 2, _class_target(n, g, 3)),
            _class_last(_ce_ref(W5, label_smoothing=0.1, z_loss=0.01)),
        ),
        Case(
            "ce_zloss_softcap",
            lambda r, **kw: el.CrossEntropyLoss(W5, reduction=r, z_loss=0.01, logit_softcap=3.0, **kw),
            lambda n, g: (torch.randn(n, C, generator=g) * 4, _class_target(n, g)),
            _ce_ref(W5, z_loss=0.01, softcap=3.0),
        ),
        Case(
            "nll",
            lambda r, **kw: el.NLLLoss(W5, reduction=r, **kw),
            lambda n, g: (torch.log_softmax(torch.randn(n, C, generator=g), 1), _class_target(n, g)),
            _nll_ref,
            twin=lambda r: nn.NLLLoss(W5, reduction=r),
        ),
        Case(
            "bce_logits",
            lambda r, **kw: el.BCEWithLogitsLoss(W3, reduction=r, pos_weight=POS3, **kw),
            lambda n, g: (torch.randn(n, 3, generator=g) * 8, torch.rand(n, 3, generator=g)),
            _nn_elementwise(
                lambda x, t: F.binary_cross_entropy_with_logits(
                    x, t, W3.double(), reduction="none", pos_weight=POS3.double()
                )
            ),
            twin=lambda r: nn.BCEWithLogitsLoss(W3, reduction=r, pos_weight=POS3),
        ),
        Case(
            "mse",
            lambda r, **kw: el.MSELoss(reduction=r, **kw),
            lambda n, g: (torch.randn(n, 3, 2, generator=g), torch.randn(n, 3, 2, generator=g)),
            _nn_elementwise(lambda x, t: F.mse_loss(x, t, reduction="none")),
            twin=lambda r: nn.MSELoss(reduction=r),
        ),
        Case(
            "l1",
            lambda r, **kw: el.L1Loss(reduction=r, **kw),
            lambda n, g: (torch.randn(n, 3, 2, generator=g), torch.randn(n, 3, 2, generator=g)),
            _nn_elementwise(lambda x, t: F.l1_loss(x, t, reduction="none")),
            twin=lambda r: nn.L1Loss(reduction=r),
        ),
        Case(
            "smooth_l1",
            lambda r, **kw: el.SmoothL1Loss(reduction=r, beta=0.5, **kw),
            lambda n, g: (torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)),
            _nn_elementwise(lambda x, t: F.smooth_l1_loss(x, t, reduction="none", beta=0.5)),
            twin=lambda r: nn.SmoothL1Loss(reduction=r, beta=0.5),
        ),
        Case(
            "huber",
            lambda r, **kw: el.HuberLoss(reduction=r, delta=0.7, **kw),
            lambda n, g: (torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)),
            _nn_elementwise(lambda x, t: F.huber_loss(x, t, reduction="none", delta=0.7)),
            twin=lambda r: nn.HuberLoss(reduction=r, delta=0.7),
        ),
        Case(
            "kl",
            lambda r, **kw: el.KLDivLoss(reduction=r, **kw),
            lambda n, g: (
                torch.log_softmax(torch.randn(n, 4, generator=g), 1),
                torch.softmax(torch.randn(n, 4, generator=g), 1),
            ),
            _nn_elementwise(lambda x, t: F.kl_div(x, t, reduction="none")),
            twin=lambda r: nn.KLDivLoss(reduction=r),
            reductions=BASE + ("batchmean",),
        ),
        Case(
            "kl_log_target",
            lambda r, **kw: el.KLDivLoss(reduction=r, log_target=True, **kw),
            lambda n, g: (
                torch.log_softmax(torch.randn(n, 4, generator=g), 1),
                torch.log_softmax(torch.randn(n, 4, generator=g), 1),
            ),
            _nn_elementwise(lambda x, t: F.kl_div(x, t, reduction="none", log_target=True)),
            twin=lambda r: nn.KLDivLoss(reduction=r, log_target=True),
            reductions=BASE + ("batchmean",),
        ),
        Case(
            "focal",
            lambda r, **kw: el.FocalLoss(reduction=r, **kw),
            lambda n, g: (torch.randn(n, 3, generator=g) * 3, (torch.rand(n, 3, generator=g) > 0.5).float()),
            _focal_ref(0.25, 2.0),
        ),
        Case(
            "focal_no_alpha",
            lambda r, **kw: el.FocalLoss(alpha=-1.0, gamma=1.5, reduction=r, **kw),
            lambda n, g: (torch.randn(n, 3, generator=g) * 3, torch.rand(n, 3, generator=g)),
            _focal_ref(-1.0, 1.5),
        ),
    ]
}


def make_inputs(case: Case, n: int, seed: int = 0, weighting: str = "plain"):
    """(*data[, sample_weight[, normalizer]]) for batch size n; ``case.grad_args`` require grad.
    ``"position_weight"``: one sample weight per position (the shape of the loss's positions)."""
    g = torch.Generator().manual_seed(seed * 1000 + n)
    data = tuple(case.inputs(n, g))
    for i in case.grad_args:
        data[i].requires_grad_(True)
    if weighting == "plain":
        return data
    if weighting == "position_weight":
        with torch.no_grad():
            positions = case.make("none")(*data).shape
        # in [0.5, 1.5): a weighted mean's gradient by a weight cancels to 0 where one position
        # counts, up to rounding in units of loss / weight
        s = torch.rand(positions, generator=g) + 0.5
        if n > 2:
            s[1] = 0.0  # a zero-weight sample counts for nothing
            s.view(n, -1)[2, ::2] = 0.0  # nor do zero-weight positions
        return (*data, s)
    s = torch.rand(n, generator=g) * 2
    if n > 1:
        s[1] = 0.0  # a zero-weight sample counts for nothing
    if weighting == "sample_weight":
        return (*data, s)
    return (*data, s, torch.tensor(7.5))


def spec_reduce(
    l: Tensor,
    reduction: str,
    s: Optional[Tensor] = None,
    normalizer: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
    position_weight: Optional[Tensor] = None,
) -> Tensor:
    """The Reductions of docs/semantics.md, written out in float64 with loops: the independent
    reference. ``s`` is ``(N,)`` or one weight per position (``l``'s shape)."""
    l = l.double()
    n = l.shape[0]
    s = torch.ones(n, dtype=torch.float64) if s is None else s.double()
    per_position = s.dim() > 1
    valid = torch.ones_like(l, dtype=torch.bool) if valid is None else valid
    pw = valid.double() if position_weight is None else position_weight.double()
    weighted = torch.stack([torch.where(s[i] != 0, s[i] * l[i], torch.zeros_like(l[i])) for i in range(n)])
    if reduction == "none":
        return weighted
    if reduction == "per_sample" and per_position:  # each sample's weighted mean over its counted positions
        counted = [(s[i] * valid[i].double()).sum() for i in range(n)]
        zero = torch.zeros((), dtype=torch.float64)
        return torch.stack([zero if counted[i] == 0 else weighted[i].sum() / counted[i] for i in range(n)])
    if reduction == "per_sample":
        return torch.stack([weighted[i].sum() / max(1, int(valid[i].sum())) for i in range(n)])
    total = weighted.sum()
    if reduction == "sum":
        return total
    if normalizer is not None:
        d = normalizer.double()
    elif reduction == "batchmean":
        d = torch.tensor(float(n), dtype=torch.float64)
    else:
        d = sum((s[i] * pw[i]).sum() for i in range(n))
    return torch.zeros((), dtype=torch.float64) if d == 0 else total / d


# Cases that take every (reduction, weighting) pair through the slow paths (compile, export,
# ONNX); the others take one weighting per reduction (see path_combos).
REPRESENTATIVE = ("ce_weight_ls_spatial", "bce_logits", "kl")

# The newer loss families keep their cases in files of their own.
from cases_detection import CASES as _DETECTION  # noqa: E402
from cases_distillation import CASES as _DISTILLATION  # noqa: E402
from cases_linear_ce import CASES as _LINEAR_CE  # noqa: E402
from cases_probabilistic import CASES as _PROBABILISTIC  # noqa: E402
from cases_segmentation import CASES as _SEGMENTATION  # noqa: E402

for _case in _DETECTION + _DISTILLATION + _LINEAR_CE + _PROBABILISTIC + _SEGMENTATION:
    if _case.name in CASES:
        raise ValueError(f"duplicate case name {_case.name!r}")
    CASES[_case.name] = _case


def loss_spec(case: Case) -> LossSpec:
    """The declaration of the library loss a case tests (the case's module may wrap it)."""
    for m in case.make("mean").modules():
        spec = getattr(type(m), "spec", None)
        if isinstance(spec, LossSpec):
            return spec
    raise ValueError(f"case {case.name!r} builds no loss of the library")


# The cases whose loss declares a Triton kernel.
FUSED = tuple(name for name, case in CASES.items() if loss_spec(case).kernel is not None)


def arity(case: Case) -> int:
    """How many data tensors the case's forward takes before sample_weight."""
    return len(case.inputs(1, torch.Generator().manual_seed(0)))


def cast(tensors, dtype: torch.dtype):
    """The floating-point tensors converted to dtype (requires_grad kept), the others as they are."""
    return tuple(t.detach().to(dtype).requires_grad_(t.requires_grad) if t.is_floating_point() else t for t in tensors)


WEIGHTINGS = ("plain", "sample_weight", "normalizer", "position_weight")


def takes_position_weights(case: Case) -> bool:
    """Whether the case's loss declares per-position sample weights (its ``positions``)."""
    return loss_spec(case).positions is not None


def combos(names=None):
    """Every (case, reduction, weighting) the semantics define; normalizer only with
    mean/batchmean, per-position weights only for the losses that declare them."""
    out = []
    for case in CASES.values() if names is None else [CASES[n] for n in names]:
        for reduction in case.reductions:
            for weighting in WEIGHTINGS:
                if weighting == "normalizer" and reduction not in ("mean", "batchmean"):
                    continue
                if weighting == "position_weight" and not takes_position_weights(case):
                    continue
                out.append((case, reduction, weighting))
    return out


# The weighting each reduction takes through the slow paths in the other cases: the weighting
# itself, and "sum", are the shared reduction routine's (every pair runs in the representative
# cases), while the loss-specific parts are each loss's element-wise term ("none"), its counted
# positions ("per_sample") and its "mean" denominator.
PATH_WEIGHTING = {
    "none": "sample_weight",
    "per_sample": "plain",
    "mean": "sample_weight",
    "batchmean": "normalizer",
}


def path_combos():
    """The (case, reduction, weighting) triples that compile, export and ONNX tests run; the
    representative cases take per-position weights with the reductions that read them apart
    (``per_sample``'s weighted means, ``mean``'s weighted count)."""
    return [
        (case, reduction, weighting)
        for case, reduction, weighting in combos()
        if (case.name in REPRESENTATIVE and (weighting != "position_weight" or reduction in ("per_sample", "mean")))
        or PATH_WEIGHTING.get(reduction) == weighting
    ]


def combo_id(combo) -> str:
    case, reduction, weighting = combo
    return f"{case.name}-{reduction}-{weighting}"
