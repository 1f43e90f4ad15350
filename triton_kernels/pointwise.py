"""Element-wise losses: loss, sample weights and a deterministic reduction in one kernel.

One program per block of elements. With ``REDUCE`` each program writes the float32 sum of
``s * l`` over its block (and of ``s``, the mean's denominator), and
``reduction.finish_reduction_kernel`` sums these partials in a fixed order and divides: two
launches, no float atomics, two runs give identical bits. Without it, it writes ``l``. The
backward recomputes the derivative from the inputs and scales it by ``grad`` (a scalar for a
reduced loss, divided by the saved denominator, else one value per element) and the sample
weight. ``KIND`` selects the loss at compile time.
"""

from typing import Tuple

import torch
import triton
import triton.language as tl

from exportable_loss.triton_kernels import POINTWISE_KINDS
from exportable_loss.triton_kernels.reduction import finish_reduction

KINDS = {name: i for i, name in enumerate(POINTWISE_KINDS)}
MSE = tl.constexpr(KINDS["mse"])
L1 = tl.constexpr(KINDS["l1"])
SMOOTH_L1 = tl.constexpr(KINDS["smooth_l1"])
HUBER = tl.constexpr(KINDS["huber"])
BCE_LOGITS = tl.constexpr(KINDS["bce_logits"])
KL = tl.constexpr(KINDS["kl"])
KL_LOG_TARGET = tl.constexpr(KINDS["kl_log_target"])
FOCAL = tl.constexpr(KINDS["focal"])
# 8 elements per thread (two 16-byte fp32 vectors): focal loss's backward needs some 100 registers
BLOCK_CUDA = 2048
WARPS_CUDA = 8
BLOCK_INTERPRETER = 256


@triton.jit
def _sign(d):
    return tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))


@triton.jit
def _softplus_neg(x):
    # log(1 + exp(-x)), stable for every x
    return tl.log(1.0 + tl.exp(-tl.abs(x))) + tl.maximum(-x, 0.0)


@triton.jit
def _pow(base, exponent):
    # base ** exponent for base >= 0, with 0 ** 0 = 1 as torch
    safe = tl.where(base > 0, base, 1.0)
    return tl.where(base > 0, tl.exp(exponent * tl.log(safe)), tl.where(exponent == 0, 1.0, 0.0))


@triton.jit
def _loss_and_grad(x, y, w, pw, p1, p2, KIND: tl.constexpr):
    """(l, dl/dx) of one element; p1/p2: beta, delta, or alpha and gamma."""
    if KIND == MSE:
        d = x - y
        loss = d * d
        grad = 2.0 * d
    elif KIND == L1:
        d = x - y
        loss = tl.abs(d)
        grad = _sign(d)
    elif KIND == SMOOTH_L1:
        d = x - y
        ad = tl.abs(d)
        small = ad < p1
        loss = tl.where(small, 0.5 * d * d / p1, ad - 0.5 * p1)
        grad = tl.where(small, d / p1, _sign(d))
    elif KIND == HUBER:
        d = x - y
        ad = tl.abs(d)
        small = ad < p1
        loss = tl.where(small, 0.5 * d * d, p1 * (ad - 0.5 * p1))
        grad = tl.where(small, d, p1 * _sign(d))
    elif KIND == BCE_LOGITS:
        log_weight = 1.0 + (pw - 1.0) * y
        loss = w * ((1.0 - y) * x + log_weight * _softplus_neg(x))
        grad = w * ((1.0 - y) - log_weight * tl.sigmoid(-x))
    elif KIND == KL:
        entropy = tl.where(y == 0.0, 0.0, y * tl.log(y))
        loss = entropy - y * x
        grad = -y
    elif KIND == KL_LOG_TARGET:
        e = tl.exp(y)
        loss = e * (y - x)
        grad = -e
    elif KIND == FOCAL:  # p1 = alpha (< 0: no balancing), p2 = gamma
        p = tl.sigmoid(x)
        ce = (1.0 - y) * x + _softplus_neg(x)
        one_minus_pt = 1.0 - (p * y + (1.0 - p) * (1.0 - y))
        modulator = _pow(one_minus_pt, p2)
        d_pt = p * (1.0 - p) * (2.0 * y - 1.0)
        d_modulator = -p2 * _pow(one_minus_pt, p2 - 1.0) * d_pt
        alpha_t = tl.where(p1 >= 0, p1 * y + (1.0 - p1) * (1.0 - y), 1.0)
        loss = alpha_t * ce * modulator
        grad = alpha_t * ((p - y) * modulator + ce * d_modulator)
    return loss, grad


@triton.jit
def pointwise_forward_kernel(
    x_ptr,
    y_ptr,
    sw_ptr,
    w_ptr,
    pw_ptr,
    out_ptr,  # l per element, or with REDUCE one partial sum of s * l per program
    den_ptr,  # with REDUCE and HAS_SW: one partial sum of s per program (the mean's denominator)
    n_elements,
    per_sample,
    p1,
    p2,
    KIND: tl.constexpr,
    HAS_SW: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_PW: tl.constexpr,
    REDUCE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_W else 1.0
    pw = tl.load(pw_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_PW else 1.0
    loss, _ = _loss_and_grad(x, y, w, pw, p1, p2, KIND)
    if REDUCE:
        if HAS_SW:
            s = tl.load(sw_ptr + offs // per_sample, mask=mask, other=0.0).to(tl.float32)
            # a zero-weight sample contributes exactly 0, even where its loss is NaN
            loss = tl.where(s != 0.0, loss * s, 0.0)
            tl.store(den_ptr + pid, tl.sum(s, 0))
        tl.store(out_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), 0))
    else:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def pointwise_backward_kernel(
    grad_ptr,
    x_ptr,
    y_ptr,
    sw_ptr,
    w_ptr,
    pw_ptr,
    den_ptr,  # 0-dim with SCALAR_GRAD: what the forward divided the sum by
    gx_ptr,
    n_elements,
    per_sample,
    p1,
    p2,
    KIND: tl.constexpr,
    HAS_SW: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_PW: tl.constexpr,
    SCALAR_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    # KL's derivative does not depend on the input: not read
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) if KIND != KL and KIND != KL_LOG_TARGET else 0.0
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_W else 1.0
    pw = tl.load(pw_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_PW else 1.0
    _, grad = _loss_and_grad(x, y, w, pw, p1, p2, KIND)
    if SCALAR_GRAD:
        den = tl.load(den_ptr)
        g = tl.load(grad_ptr).to(tl.float32)
        g = tl.where(den == 0.0, 0.0, g / tl.where(den == 0.0, 1.0, den))
    else:
        g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad = grad * g
    if HAS_SW:
        s = tl.load(sw_ptr + offs // per_sample, mask=mask, other=0.0).to(tl.float32)
        grad = tl.where(s != 0.0, grad * s, 0.0)
    tl.store(gx_ptr + offs, grad.to(gx_ptr.dtype.element_ty), mask=mask)


def _elements_per_weight(x, sample_weight):
    """The elements one sample weight covers: those of a sample, or 1 for a weight per element."""
    weights = sample_weight.numel() if sample_weight is not None else (x.shape[0] if x.dim() > 0 else 1)
    return max(x.numel() // max(weights, 1), 1)


def _launch_args(x):
    cuda = x.device.type != "cpu"  # the interpreter runs on the CPU
    block = BLOCK_CUDA if cuda else BLOCK_INTERPRETER
    return block, (triton.cdiv(x.numel(), block),), WARPS_CUDA if cuda else 4


def pointwise_forward(x, y, sample_weight, weight, pos_weight, kind: str, p1: float, p2: float):
    """The element-wise loss ``l`` in ``x``'s dtype.

    ``x``, ``y``, ``weight`` and ``pos_weight`` are contiguous and of one shape.
    """
    block, grid, warps = _launch_args(x)
    out = torch.empty_like(x)
    if x.numel() > 0:
        _launch_forward(x, y, None, weight, pos_weight, out, out, kind, p1, p2, False, block, grid, warps)
    return out


def pointwise_reduced_forward(
    x, y, sample_weight, weight, pos_weight, normalizer, kind: str, p1: float, p2: float, reduction: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``sum(s * l)`` divided as ``reduction`` says (``"mean"``, ``"sum"``, ``"batchmean"``;
    ``normalizer`` replaces the mean's denominator) in two launches: (0-dim loss in ``x``'s
    dtype, 0-dim float32 denominator for the backward). ``sample_weight`` is ``(N,)`` for
    ``x.shape[0] == N``, or one weight per element (contiguous, ``x``'s shape)."""
    block, grid, warps = _launch_args(x)
    partials = torch.empty(grid[0], dtype=torch.float32, device=x.device)
    den = torch.empty_like(partials) if sample_weight is not None else partials
    if x.numel() > 0:
        _launch_forward(x, y, sample_weight, weight, pos_weight, partials, den, kind, p1, p2, True, block, grid, warps)
    if reduction == "sum" or (reduction == "batchmean" and x.dim() == 0):
        return finish_reduction(partials, None, None, 0.0, "none", x.dtype)
    if normalizer is not None:
        return finish_reduction(partials, None, normalizer, 0.0, "normalizer", x.dtype)
    if reduction == "batchmean":
        return finish_reduction(partials, None, None, max(x.shape[0], 1), "count", x.dtype)
    if sample_weight is not None:
        return finish_reduction(partials, den, None, 0.0, "partials", x.dtype)
    return finish_reduction(partials, None, None, max(x.numel(), 1), "count", x.dtype)


def _launch_forward(x, y, sample_weight, weight, pos_weight, out, den, kind, p1, p2, reduce, block, grid, warps):
    pointwise_forward_kernel[grid](
        x,
        y,
        sample_weight if sample_weight is not None else x,
        weight if weight is not None else x,
        pos_weight if pos_weight is not None else x,
        out,
        den,
        x.numel(),
        _elements_per_weight(x, sample_weight),
        p1,
        p2,
        KIND=KINDS[kind],
        HAS_SW=sample_weight is not None,
        HAS_W=weight is not None,
        HAS_PW=pos_weight is not None,
        REDUCE=reduce,
        BLOCK=block,
        num_warps=warps,
    )


def pointwise_backward(
    grad, x, y, sample_weight, weight, pos_weight, kind: str, p1: float, p2: float, denominator=None
) -> torch.Tensor:
    """Gradient with respect to ``x``: ``grad`` is one contiguous value per element, or, with
    ``denominator`` (the one ``pointwise_reduced_forward`` returned), the 0-dim gradient of
    the reduced loss (``sample_weight`` applied here)."""
    gx = torch.empty_like(x)
    block, grid, warps = _launch_args(x)
    if x.numel() > 0:
        pointwise_backward_kernel[grid](
            grad,
            x,
            y,
            sample_weight if sample_weight is not None else x,
            weight if weight is not None else x,
            pos_weight if pos_weight is not None else x,
            denominator if denominator is not None else x,
            gx,
            x.numel(),
            _elements_per_weight(x, sample_weight),
            p1,
            p2,
            KIND=KINDS[kind],
            HAS_SW=sample_weight is not None,
            HAS_W=weight is not None,
            HAS_PW=pos_weight is not None,
            SCALAR_GRAD=denominator is not None,
            BLOCK=block,
            num_warps=warps,
        )
    return gx


# ---------------------------------------------------------------- what each launch moves


def _extents(a: dict, grid: tuple) -> dict:
    n = a["n_elements"]
    return {"elements": n, "programs": grid[0], "samples": triton.cdiv(n, a["per_sample"]), "one": 1}


def _inputs(a: dict, backward: bool = False) -> list:
    kl = a["KIND"] in (KINDS["kl"], KINDS["kl_log_target"])
    terms = [("y_ptr", "load", "elements")] + ([] if backward and kl else [("x_ptr", "load", "elements")])
    if a["HAS_W"]:
        terms.append(("w_ptr", "load", "elements"))
    if a["HAS_PW"]:
        terms.append(("pw_ptr", "load", "elements"))
    if a["HAS_SW"]:
        terms.append(("sw_ptr", "load", "samples"))
    return terms


def _forward_terms(a: dict) -> list:
    terms = _inputs(a) + [("out_ptr", "store", "programs" if a["REDUCE"] else "elements")]
    if a["REDUCE"] and a["HAS_SW"]:
        terms.append(("den_ptr", "store", "programs"))
    return terms


def _backward_terms(a: dict) -> list:
    terms = _inputs(a, backward=True) + [("gx_ptr", "store", "elements")]
    if a["SCALAR_GRAD"]:
        terms += [("grad_ptr", "load", "one"), ("den_ptr", "load", "one")]
    else:
        terms.append(("grad_ptr", "load", "elements"))
    return terms


# What each launch reads and writes: (argument, direction, extent), "elements" being one pass
# over the input; ``counting.expected`` turns it into bytes and the traffic tests hold the
# kernels to it.
TRAFFIC = {
    "pointwise_forward_kernel": (_forward_terms, _extents),
    "pointwise_backward_kernel": (_backward_terms, _extents),
}
