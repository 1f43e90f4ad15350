"""CUDA part of ``exportable-loss bench``: the Triton backend's forward+backward time, peak
extra memory and achieved bandwidth, against the torch backend (eager and torch.compile),
torch.nn eager and Liger-Kernel's cross entropy when it is installed, in the same run.

Bytes counted for our design: cross entropy reads the logits in the forward and again in the
backward and writes the gradient once (3 logits-sized passes; the floor is 2: one read, one
write); an element-wise loss reads input and target in the forward and again in the backward
and writes the gradient (5 input-sized passes).
"""

from typing import Callable, Dict, List, Optional, Tuple, Type

import torch
from torch import nn

import exportable_loss as el
from exportable_loss.bench import timing

PEAK_GBPS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0, "A100-SXM4-80GB": 2039.0}


def _peak(name: str, override: Optional[float]) -> Optional[float]:
    if override:
        return override
    return next((v for k, v in PEAK_GBPS.items() if k in name), None)


def _measure(step: Callable[[], None], budget: float) -> Tuple[timing.Timing, Dict[str, object]]:
    """The time of many calls, and the row's figures: time and peak extra memory of one call."""
    step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    extra_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    t = timing.measure(step, budget, cuda=True)
    return t, {"ms": t.ms, "time": t.to_dict(), "extra_mb": extra_mb}


def _fwd_bwd(loss: Callable, x: torch.Tensor, *rest: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        loss(x, *rest).backward()

    return step


def _candidates(ours_cls: type, nn_cls: Optional[type], kwargs: Dict[str, object]) -> Dict[str, Callable]:
    out = {
        "triton": ours_cls(backend="triton", **kwargs),
        "torch backend": ours_cls(**kwargs),
        "torch backend + compile": torch.compile(ours_cls(**kwargs), fullgraph=True, dynamic=False),
        "torch.nn eager": nn_cls(**kwargs) if nn_cls is not None else None,
    }
    return {k: v for k, v in out.items() if v is not None}


def run(quick: bool, budget: float, peak: Optional[float]) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []
    ce_shapes = [(4096, 32768)] if quick else [(16384, 32768), (16384, 128256)]
    for n, c in ce_shapes:
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(n, c, device="cuda", dtype=dtype, requires_grad=True)
            t = torch.randint(0, c, (n,), device="cuda")
            floor = 2 * x.numel() * x.element_size()
            moved = 3 * x.numel() * x.element_size()
            cands = _candidates(el.CrossEntropyLoss, nn.CrossEntropyLoss, {})
            try:
                from liger_kernel.transformers import LigerCrossEntropyLoss

                cands["liger-kernel"] = LigerCrossEntropyLoss()
            except ImportError:
                pass
            for name, loss in cands.items():
                torch.cuda.empty_cache()
                took, r = _measure(_fwd_bwd(loss, x, t), budget)
                rows.append(dict(loss="cross_entropy", shape=f"({n}, {c})", dtype=str(dtype)[6:], impl=name, **r))
                if name == "triton":
                    seconds = took.ms * 1e-3
                    gbps = moved / seconds / 1e9
                    rows[-1].update(gbps=gbps, floor_ratio=(floor / seconds / 1e9) / gbps)
                    if peak:
                        rows[-1]["peak_fraction"] = gbps / peak
            del x
    n = (1 << 22) if quick else (1 << 24)
    pointwise: List[Tuple[str, Type[nn.Module], Optional[type], Dict[str, object]]] = [
        ("mse", el.MSELoss, nn.MSELoss, {}),
        ("l1", el.L1Loss, nn.L1Loss, {}),
        ("smooth_l1", el.SmoothL1Loss, nn.SmoothL1Loss, {}),
        ("huber", el.HuberLoss, nn.HuberLoss, {}),
        ("bce_logits", el.BCEWithLogitsLoss, nn.BCEWithLogitsLoss, {}),
        ("focal", el.FocalLoss, None, {}),
    ]
    for name, ours, theirs, kwargs in pointwise:
        x = torch.randn(n, device="cuda", requires_grad=True)
        y = torch.rand(n, device="cuda")
        for impl, loss in _candidates(ours, theirs, kwargs).items():
            took, r = _measure(_fwd_bwd(loss, x, y), budget)
            rows.append(dict(loss=name, shape=f"({n},)", dtype="float32", impl=impl, **r))
            if impl == "triton":
                gbps = 5 * n * 4 / (took.ms * 1e-3) / 1e9
                rows[-1]["gbps"] = gbps
                if peak:
                    rows[-1]["peak_fraction"] = gbps / peak
    return rows
