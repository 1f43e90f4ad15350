"""Cross entropy over rows of logits: one program per row, online log-sum-exp over column blocks.

The logits are viewed as ``(N, C, D)`` (``D`` the product of the dimensions after the class
dimension; 1 for ``(N, C)``); row ``r`` is ``(r // D, :, r % D)``. Offsets are int64. Every
value accumulates in float32 whatever the logits' dtype.

Pass structure: the forward reads the logits once and writes a loss, the log-sum-exp and (for
probability targets) the target mass per row; the backward reads the logits once more and
writes the gradient, scaled by an arbitrary (also stride-0) per-row ``grad_loss``. Nothing of
the gradient is computed under ``torch.no_grad``, and the backward may write into the logits'
own memory when the caller opts in.

``mean``/``sum`` are two launches forward and one backward: with ``REDUCE`` the row kernel
writes each row's sample-weighted loss and its weight in the mean's denominator, and
``reduction.finish_reduction_kernel`` sums them in a fixed order and divides; the backward
kernel scales the 0-dim upstream gradient by the saved denominator and the row's sample weight.
"""

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from exportable_loss.triton_kernels.reduction import finish_reduction

# The block sizes the launcher picks on a GPU (the smallest that holds a row, else the largest,
# looping): few enough that every specialisation compiles ahead of time (``aot.py``).
BLOCKS_CUDA = (256, 1024, 4096, 8192)
BLOCK_INTERPRETER = 128


@triton.jit
def _softcap(x, cap, HAS_SOFTCAP: tl.constexpr):
    if HAS_SOFTCAP:
        # cap * tanh(x / cap), tanh from exp: finite for every x
        x = cap * (1.0 - 2.0 / (tl.exp(2.0 * x / cap) + 1.0))
    return x


@triton.jit
def cross_entropy_forward_kernel(
    logits_ptr,
    target_ptr,
    weight_ptr,
    sample_weight_ptr,  # (N,) with HAS_SW
    loss_ptr,  # per row: the loss; with REDUCE its sample-weighted value s * l
    den_ptr,  # per row with REDUCE: the row's weight in the mean's denominator (w_t * s)
    lse_ptr,
    mass_ptr,  # per row: sum_c q_c w_c, written by the forward, read by the backward
    n_cols,
    spatial,
    rows_per_weight,  # HAS_SW: rows one sample weight covers (D per sample, 1 per position)
    stride_n,
    stride_c,
    stride_d,
    ignore_index,
    label_smoothing,
    z_loss,
    softcap,
    HAS_WEIGHT: tl.constexpr,
    PROB_TARGET: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    REDUCE: tl.constexpr,
    HAS_SW: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    n = row // spatial
    base = n * stride_n + (row % spatial) * stride_d
    cols = tl.arange(0, BLOCK)
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    sum_wx = tl.zeros([], tl.float32)  # sum_c q_c w_c x_c (q: smoothed target, 1 for index targets)
    sum_qw = tl.zeros([], tl.float32)  # sum_c q_c w_c (q = 1 for index targets: the weight sum)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        offs = base + c.to(tl.int64) * stride_c
        x = tl.load(logits_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
        x = _softcap(x, softcap, HAS_SOFTCAP)
        new_m = tl.maximum(m, tl.max(x, 0))
        # while every logit so far is -inf (classes masked with -inf), exp(-inf - -inf) is NaN
        safe_m = tl.where(new_m == float("-inf"), 0.0, new_m)
        s = s * tl.exp(m - safe_m) + tl.sum(tl.where(mask, tl.exp(x - safe_m), 0.0), 0)
        m = new_m
        w = tl.load(weight_ptr + c, mask=mask, other=0.0).to(tl.float32) if HAS_WEIGHT else 1.0
        if PROB_TARGET:
            q = tl.load(target_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            q = q * (1.0 - label_smoothing) + label_smoothing / n_cols
            qw = tl.where(mask, q * w, 0.0)
            sum_wx += tl.sum(tl.where(mask, qw * x, 0.0), 0)
            sum_qw += tl.sum(qw, 0)
        else:
            sum_wx += tl.sum(tl.where(mask, w * x, 0.0), 0)
            sum_qw += tl.sum(tl.where(mask, w, 0.0), 0)
    lse = m + tl.log(s)
    tl.store(mass_ptr + row, sum_qw)
    if PROB_TARGET:
        loss = lse * sum_qw - sum_wx + z_loss * lse * lse
        den = tl.full([], 1.0, tl.float32)
    else:
        t = tl.load(target_ptr + row).to(tl.int64)
        in_range = (t >= 0) & (t < n_cols)
        safe = tl.where(in_range, t, 0)
        x_t = _softcap(tl.load(logits_ptr + base + safe * stride_c).to(tl.float32), softcap, HAS_SOFTCAP)
        w_t = tl.load(weight_ptr + safe).to(tl.float32) if HAS_WEIGHT else 1.0
        smooth = lse * sum_qw - sum_wx  # inf where a class is masked with -inf, as in torch.nn
        loss = (1.0 - label_smoothing) * w_t * (lse - x_t)
        loss += tl.where(label_smoothing > 0, label_smoothing / n_cols * smooth, 0.0)  # no 0 * inf
        loss += z_loss * lse * lse * w_t
        loss = tl.where(in_range, loss, float("nan"))
        loss = tl.where(t == ignore_index, 0.0, loss)
        den = tl.where(t == ignore_index, 0.0, w_t)
    if REDUCE:
        if HAS_SW:
            s = tl.load(sample_weight_ptr + row // rows_per_weight).to(tl.float32)
            # a zero-weight sample contributes exactly 0, even where its loss is NaN
            loss = tl.where(s != 0.0, loss * s, 0.0)
            den = den * s
        tl.store(den_ptr + row, den)
    tl.store(loss_ptr + row, loss)
    tl.store(lse_ptr + row, lse)


@triton.jit
def cross_entropy_backward_kernel(
    grad_loss_ptr,
    grad_loss_stride,
    logits_ptr,
    target_ptr,
    weight_ptr,
    sample_weight_ptr,  # (N,) with HAS_SW
    den_ptr,  # 0-dim with REDUCED: what the forward divided the sum by
    lse_ptr,
    mass_ptr,
    grad_ptr,
    n_cols,
    spatial,
    rows_per_weight,
    stride_n,
    stride_c,
    stride_d,
    gstride_n,
    gstride_c,
    gstride_d,
    ignore_index,
    label_smoothing,
    z_loss,
    softcap,
    HAS_WEIGHT: tl.constexpr,
    PROB_TARGET: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    REDUCED: tl.constexpr,
    HAS_SW: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    n = row // spatial
    d = row % spatial
    base = n * stride_n + d * stride_d
    gbase = n * gstride_n + d * gstride_d
    cols = tl.arange(0, BLOCK)
    g = tl.load(grad_loss_ptr + row * grad_loss_stride).to(tl.float32)
    if REDUCED:
        # the gradient of a mean or sum reaching this row: g / denominator * s (0 for a zero one)
        den = tl.load(den_ptr)
        g = tl.where(den == 0.0, 0.0, g / tl.where(den == 0.0, 1.0, den))
        if HAS_SW:
            s = tl.load(sample_weight_ptr + row // rows_per_weight).to(tl.float32)
            g = tl.where(s != 0.0, g * s, 0.0)
    lse = tl.load(lse_ptr + row)
    mass = tl.load(mass_ptr + row)
    if PROB_TARGET:
        coef_p = mass + 2.0 * z_loss * lse
        t = 0
        w_t = 1.0
    else:
        t = tl.load(target_ptr + row).to(tl.int64)
        in_range = (t >= 0) & (t < n_cols)
        w_t = tl.load(weight_ptr + tl.where(in_range, t, 0)).to(tl.float32) if HAS_WEIGHT else 1.0
        coef_p = (1.0 - label_smoothing) * w_t + label_smoothing / n_cols * mass + 2.0 * z_loss * w_t * lse
        # ignored rows get exactly zero gradient; an out-of-range index gets NaN (visible)
        g = tl.where(t == ignore_index, 0.0, tl.where(in_range, g, float("nan")))
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        raw = tl.load(logits_ptr + base + c.to(tl.int64) * stride_c, mask=mask, other=0.0).to(tl.float32)
        x = _softcap(raw, softcap, HAS_SOFTCAP)
        p = tl.exp(x - lse)
        w = tl.load(weight_ptr + c, mask=mask, other=0.0).to(tl.float32) if HAS_WEIGHT else 1.0
        if PROB_TARGET:
            q = tl.load(target_ptr + base + c.to(tl.int64) * stride_c, mask=mask, other=0.0).to(tl.float32)
            q = q * (1.0 - label_smoothing) + label_smoothing / n_cols
            dx = coef_p * p - q * w
        else:
            dx = coef_p * p - label_smoothing / n_cols * w - tl.where(c == t, (1.0 - label_smoothing) * w_t, 0.0)
        if HAS_SOFTCAP:
            dx = dx * (1.0 - (x / softcap) * (x / softcap))
        dx = tl.where(g == 0.0, 0.0, dx * g)  # no NaN from an ignored row's logits
        tl.store(grad_ptr + gbase + c.to(tl.int64) * gstride_c, dx.to(grad_ptr.dtype.element_ty), mask=mask)


def _block(n_cols: int, device_type: str) -> int:
    # One block spans the whole row where it fits; past that the online log-sum-exp loops.
    # The interpreter (CPU) runs blocks as NumPy arrays: small blocks keep many-block rows tested.
    if device_type == "cpu":
        return min(triton.next_power_of_2(max(n_cols, 1)), BLOCK_INTERPRETER)
    return next((b for b in BLOCKS_CUDA if b >= n_cols), BLOCKS_CUDA[-1])


def _warps(block: int) -> int:
    # at least 4 elements per thread: 16-byte (fp32) vector loads. At most 8 warps: with 16
    # (512 threads) ptxas spilled on sm_80 (class weights) to fit more programs per SM; aot.py
    return max(1, min(8, block // 128))


def _rows_per_weight(rows: int, sample_weight: Optional[torch.Tensor]) -> int:
    # one weight per sample (N,) or per position (N*D values, row order)
    return max(rows // max(sample_weight.numel(), 1), 1) if sample_weight is not None else 1


def _forward(logits, target, weight, sample_weight, ignore_index, label_smoothing, z_loss, softcap, reduce: bool):
    n, c, d = logits.shape
    rows = n * d
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    den = torch.empty_like(loss) if reduce else loss
    lse = torch.empty_like(loss)
    mass = torch.empty_like(loss)
    if rows > 0:
        block = _block(c, logits.device.type)
        cross_entropy_forward_kernel[(rows,)](
            logits,
            target,
            weight if weight is not None else loss,
            sample_weight if sample_weight is not None else loss,
            loss,
            den,
            lse,
            mass,
            c,
            d,
            _rows_per_weight(rows, sample_weight),
            logits.stride(0),
            logits.stride(1),
            logits.stride(2),
            ignore_index,
            label_smoothing,
            z_loss,
            softcap,
            HAS_WEIGHT=weight is not None,
            PROB_TARGET=target.is_floating_point(),
            HAS_SOFTCAP=softcap > 0,
            REDUCE=reduce,
            HAS_SW=sample_weight is not None,
            BLOCK=block,
            num_warps=_warps(block),
        )
    return loss, den, lse, mass


def cross_entropy_forward(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row loss, log-sum-exp and target mass of ``(N, C, D)`` logits (all float32, ``(N*D,)``).

    ``target`` is ``(N, D)`` int64 class indices or ``(N, C, D)`` probabilities with the
    logits' strides. ``softcap`` 0 means none.
    """
    loss, _, lse, mass = _forward(logits, target, weight, None, ignore_index, label_smoothing, z_loss, softcap, False)
    return loss, lse, mass


def cross_entropy_reduced_forward(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor],
    sample_weight: Optional[torch.Tensor],
    normalizer: Optional[torch.Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    mean: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``mean`` (or sum) of the per-row losses, weighted by ``sample_weight`` (``(N,)``, or
    ``(N, D)`` one weight per position), in
    two launches: ``(loss, lse, mass, denominator)``, the loss 0-dim in the logits' dtype, the
    denominator 0-dim float32 (1 for a sum; ``normalizer`` where given), for the backward."""
    partial, den, lse, mass = _forward(
        logits, target, weight, sample_weight, ignore_index, label_smoothing, z_loss, softcap, True
    )
    denominator = "none" if not mean else "normalizer" if normalizer is not None else "partials"
    out, used = finish_reduction(partial, den, normalizer, 0.0, denominator, logits.dtype)
    return out, lse, mass, used


def cross_entropy_backward(
    grad_loss: torch.Tensor,
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor],
    lse: torch.Tensor,
    mass: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    inplace: bool = False,
    sample_weight: Optional[torch.Tensor] = None,
    denominator: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Gradient of ``sum(grad_loss * loss)`` with respect to ``(N, C, D)`` logits.

    ``grad_loss`` is ``(N*D,)`` with any stride, 0 included; with ``denominator`` (the one
    ``cross_entropy_reduced_forward`` returned) it is the 0-dim gradient of the reduced
    loss, and each row's gradient is ``grad_loss / denominator * sample_weight[n]``. With
    ``inplace`` the gradient overwrites the logits (each program reads its row before writing it).
    """
    n, c, d = logits.shape
    grad = logits if inplace else torch.empty_like(logits)
    rows = n * d
    if rows == 0 or c == 0:
        return grad
    block = _block(c, logits.device.type)
    cross_entropy_backward_kernel[(rows,)](
        grad_loss,
        grad_loss.stride(0) if grad_loss.dim() > 0 else 0,
        logits,
        target,
        weight if weight is not None else lse,
        sample_weight if sample_weight is not None else lse,
        denominator if denominator is not None else lse,
        lse,
        mass,
        grad,
        c,
        d,
        _rows_per_weight(rows, sample_weight),
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        grad.stride(0),
        grad.stride(1),
        grad.stride(2),
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        HAS_WEIGHT=weight is not None,
        PROB_TARGET=target.is_floating_point(),
        HAS_SOFTCAP=softcap > 0,
        REDUCED=denominator is not None,
        HAS_SW=denominator is not None and sample_weight is not None,
        BLOCK=block,
        num_warps=_warps(block),
    )
    return grad


# ---------------------------------------------------------------- what each launch moves


def _extents(a: dict, grid: tuple) -> dict:
    rows = grid[0]
    return {
        "elements": rows * a["n_cols"],  # one pass over the logits
        "rows": rows,
        "classes": a["n_cols"],  # the class weights: every row reads them, from the cache
        "samples": rows // a["rows_per_weight"],
        "grad_rows": rows if a.get("grad_loss_stride", 1) != 0 else 1,
        "one": 1,
    }


def _forward_terms(a: dict) -> list:
    terms = [
        ("logits_ptr", "load", "elements"),
        ("target_ptr", "load", "elements" if a["PROB_TARGET"] else "rows"),
        ("loss_ptr", "store", "rows"),
        ("lse_ptr", "store", "rows"),
        ("mass_ptr", "store", "rows"),
    ]
    if a["HAS_WEIGHT"]:
        terms.append(("weight_ptr", "load", "classes"))
    if a["REDUCE"]:
        terms.append(("den_ptr", "store", "rows"))
        if a["HAS_SW"]:
            terms.append(("sample_weight_ptr", "load", "samples"))
    return terms


def _backward_terms(a: dict) -> list:
    terms = [
        ("logits_ptr", "load", "elements"),
        ("target_ptr", "load", "elements" if a["PROB_TARGET"] else "rows"),
        ("grad_ptr", "store", "elements"),
        ("lse_ptr", "load", "rows"),
        ("mass_ptr", "load", "rows"),
        ("grad_loss_ptr", "load", "one" if a["REDUCED"] else "grad_rows"),
    ]
    if a["HAS_WEIGHT"]:
        terms.append(("weight_ptr", "load", "classes"))
    if a["REDUCED"]:
        terms.append(("den_ptr", "load", "one"))
        if a["HAS_SW"]:
            terms.append(("sample_weight_ptr", "load", "samples"))
    return terms


# What each launch reads and writes: (argument, direction, extent), "elements" being one pass
# over the logits; ``counting.expected`` turns it into bytes and the traffic tests hold the
# kernels to it.
TRAFFIC = {
    "cross_entropy_forward_kernel": (_forward_terms, _extents),
    "cross_entropy_backward_kernel": (_backward_terms, _extents),
}
