"""The second stage of every fused ``mean``/``sum``: one program sums the float32 partials that
the first stage wrote (one per row or per block), in a fixed order, and divides.

No float atomics: the order of the additions is the same on every run, so two runs give the
same bits. The program also writes what it divided by (1 for a sum, 0 for a zero denominator)
for the backward kernels, which scale the upstream gradient by it on the GPU: no host
synchronisation anywhere.
"""

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

# What the reduced loss is divided by (the DENOMINATOR constexpr).
NONE = tl.constexpr(0)  # a sum
PARTIALS = tl.constexpr(1)  # the sum of the denominator partials the first stage wrote
NORMALIZER = tl.constexpr(2)  # a 0-dim tensor the caller gave
COUNT = tl.constexpr(3)  # a number known on the host (the element or batch count)
DENOMINATORS = {"none": 0, "partials": 1, "normalizer": 2, "count": 3}
BLOCK = 1024


@triton.jit
def finish_reduction_kernel(
    total_ptr,  # n_partials float32 partial sums of s * l
    partial_den_ptr,  # n_partials float32 partial denominators (DENOMINATOR == PARTIALS)
    normalizer_ptr,  # 0-dim, any real dtype (DENOMINATOR == NORMALIZER)
    out_ptr,  # 0-dim, the loss's dtype
    den_ptr,  # 0-dim float32: what the sum was divided by, read by the backward kernels
    n_partials,
    count,
    DENOMINATOR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    acc_den = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_partials, BLOCK):
        mask = start + offs < n_partials
        acc += tl.load(total_ptr + start + offs, mask=mask, other=0.0)
        if DENOMINATOR == PARTIALS:
            acc_den += tl.load(partial_den_ptr + start + offs, mask=mask, other=0.0)
    total = tl.sum(acc, 0)
    if DENOMINATOR == NONE:
        den = tl.full([], 1.0, tl.float32)
    elif DENOMINATOR == PARTIALS:
        den = tl.sum(acc_den, 0)
    elif DENOMINATOR == NORMALIZER:
        den = tl.load(normalizer_ptr).to(tl.float32)
    else:
        den = tl.full([], 1.0, tl.float32) * count
    # a zero denominator gives 0 (and zero gradients), never NaN
    out = tl.where(den == 0.0, 0.0, total / tl.where(den == 0.0, 1.0, den))
    tl.store(out_ptr, out.to(out_ptr.dtype.element_ty))
    tl.store(den_ptr, den)


def finish_reduction(
    partials: torch.Tensor,
    partial_den: Optional[torch.Tensor],
    normalizer: Optional[torch.Tensor],
    count: float,
    denominator: str,
    dtype: torch.dtype,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(reduced loss in ``dtype``, float32 denominator), both 0-dim, from one launch.

    ``denominator``: ``"none"`` (a sum), ``"partials"`` (``partial_den`` summed),
    ``"normalizer"`` or ``"count"``.
    """
    out = torch.empty((), dtype=dtype, device=partials.device)
    den = torch.empty((), dtype=torch.float32, device=partials.device)
    finish_reduction_kernel[(1,)](
        partials,
        partial_den if partial_den is not None else partials,
        normalizer if normalizer is not None else partials,
        out,
        den,
        partials.numel(),
        float(count),
        DENOMINATOR=DENOMINATORS[denominator],
        BLOCK=BLOCK,
        num_warps=4,
    )
    return out, den


def _terms(a: dict) -> list:
    terms = [("total_ptr", "load", "partials"), ("out_ptr", "store", "one"), ("den_ptr", "store", "one")]
    if a["DENOMINATOR"] == DENOMINATORS["partials"]:
        terms.append(("partial_den_ptr", "load", "partials"))
    if a["DENOMINATOR"] == DENOMINATORS["normalizer"]:
        terms.append(("normalizer_ptr", "load", "one"))
    return terms


# What each launch reads and writes (argument, direction, extent); ``counting.expected`` turns
# it into bytes and the traffic tests hold the kernel to it.
TRAFFIC = {"finish_reduction_kernel": (_terms, lambda a, grid: {"partials": a["n_partials"], "one": 1})}
