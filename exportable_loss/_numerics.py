"""Small numerical helpers every family shares: the accumulation dtype, a stable softplus, and
the autocast rule."""

from typing import List

import torch
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for the half types (so sums cannot overflow), else the dtype itself."""
    if dtype == torch.float16 or dtype == torch.bfloat16:
        return torch.float32
    return dtype


def to_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)`` without the call where ``t`` has that dtype already (about 1 us in eager
    mode, as much as a small loss's operator)."""
    return t if t.dtype == dtype else t.to(dtype)


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` for every ``x``: no overflow, 0 (and a zero gradient) at ``-inf``, and
    exported as itself (ONNX's ``Log(Sigmoid(-x))`` is ``-inf`` for ``x >= 20``)."""
    return torch.log1p(torch.exp(-torch.abs(x))) + torch.relu(x)


def autocast_float32(tensors: List[Tensor]) -> List[Tensor]:
    """Under ``torch.autocast`` losses compute in float32, as ``torch.nn``'s do: the half-precision
    tensors are upcast, the others (float64 included, as autocast leaves it) returned as they are."""
    for t in tensors:
        if t.dtype in _HALF:
            break
    else:
        return tensors  # the common case, without autocast's per-device queries (1 us a call)
    device = tensors[0].device.type
    # torch.compile on torch 2.11 cannot trace is_autocast_available; what it compiles for has autocast
    available = torch.compiler.is_compiling() or torch.amp.is_autocast_available(device)
    if available and torch.is_autocast_enabled(device):
        return [t.float() if t.dtype in _HALF else t for t in tensors]
    return tensors


def focal_modulator(q: Tensor, gamma: float) -> Tensor:
    """``q ** gamma`` for ``q = 1 - p_t`` in ``[0, 1]``, with a finite gradient for every gamma.

    For ``0 < gamma < 1`` the derivative ``gamma * q ** (gamma - 1)`` is infinite at ``q = 0``
    (a confident, correct prediction) and overflows below the dtype's smallest normal number;
    there the modulator passes no gradient (the loss's own gradient is of the order of ``q``).
    """
    if gamma > 0.0 and gamma < 1.0:
        tiny = 6.103515625e-05 if q.dtype == torch.float16 else 1.1754943508222875e-38
        safe = q > tiny
        return torch.where(safe, torch.where(safe, q, 1.0) ** gamma, q.detach() ** gamma)
    return q**gamma
