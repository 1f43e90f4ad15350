"""``exportable-loss bench-linear-ce``: working memory and time of FusedLinearCrossEntropyLoss
against the unfused ``F.linear`` + ``F.cross_entropy`` and the public alternatives installed.

Working memory is the peak of the memory allocated during one forward+backward, minus the
inputs, parameters and their gradients (which every method must hold). On CUDA it comes from
``torch.cuda.max_memory_allocated``; on the CPU from the allocation and free events of the torch
profiler, summed in order (the CPU allocator keeps no peak statistic). Both count PyTorch's
allocations only (a BLAS library's private workspace is not seen).
"""

import functools
import json
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import exportable_loss as el
from exportable_loss._io import stderr_without
from exportable_loss.bench import timing

Method = Callable[[Tensor, Tensor, Tensor], Tensor]


def methods(device: str) -> Dict[str, Method]:
    """Every method this installation can run, by name; each maps (x, W, target) to a mean loss."""
    ours = el.FusedLinearCrossEntropyLoss()
    found: Dict[str, Method] = {
        "F.linear + F.cross_entropy (eager)": lambda x, w, t: F.cross_entropy(F.linear(x, w), t),
        "ours, backend torch": ours,
        "ours, backend torch, torch.compile": torch.compile(ours, fullgraph=True, dynamic=True),
    }
    if device == "cuda":
        found["ours, backend triton"] = el.FusedLinearCrossEntropyLoss(backend="triton")
    if hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions"):
        options = torch.nn.LinearCrossEntropyOptions()
        found["F.linear_cross_entropy (chunked options)"] = lambda x, w, t: F.linear_cross_entropy(
            x, w, t, options=options
        )
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        found["Liger-Kernel fused linear cross entropy"] = lambda x, w, t: liger(w, x, t)
    except ImportError:
        pass
    try:
        from cut_cross_entropy import linear_cross_entropy as cce

        found["Cut Cross-Entropy"] = lambda x, w, t: cce(x, w, t)
    except ImportError:
        pass
    return found


def _inputs(shape: Tuple[int, int, int], dtype: torch.dtype, device: str) -> Tuple[Tensor, Tensor, Tensor]:
    tokens, hidden, vocab = shape
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(tokens, hidden, generator=g) * hidden**-0.5).to(device, dtype).requires_grad_(True)
    w = (torch.randn(vocab, hidden, generator=g) * hidden**-0.5).to(device, dtype).requires_grad_(True)
    t = torch.randint(0, vocab, (tokens,), generator=g).to(device)
    t[::7] = -100
    return x, w, t


def _step(method: Method, x: Tensor, w: Tensor, t: Tensor) -> Tensor:
    x.grad, w.grad = None, None
    loss = method(x, w, t)
    loss.backward()
    return loss.detach()


def _cpu_peak(run: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    # the profiler's C++ side prints "USDT:" start/stop notes on file descriptor 2
    with stderr_without(("USDT:",)), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    current = peak = 0
    for e in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        if e["args"].get("Device Type", 0) == 0:  # CPU
            current += e["args"]["Bytes"]
            peak = max(peak, current)
    return peak


def working_memory(method: Method, x: Tensor, w: Tensor, t: Tensor) -> int:
    """Peak bytes allocated by one forward+backward beyond the inputs and their gradients."""
    grads = x.numel() * x.element_size() + w.numel() * w.element_size()
    if x.is_cuda:
        torch.cuda.synchronize()
        x.grad, w.grad = None, None
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(method, x, w, t)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before - grads
    x.grad, w.grad = None, None
    return _cpu_peak(lambda: _step(method, x, w, t)) - grads


def selected(shape: Tuple[int, ...], repeats: int, only: Optional[List[str]], device: str) -> Dict[str, Method]:
    """The methods to measure; ``ValueError`` for a shape or repeat count below 1 and for
    ``only`` words that match no method. Cheap: call it before any work."""
    if len(shape) != 3 or any(d < 1 for d in shape):
        raise ValueError(f"shape is (tokens, hidden, vocab), each at least 1; got {tuple(shape)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}")
    found = methods(device)
    chosen = {n: m for n, m in found.items() if only is None or any(word in n for word in only)}
    if not chosen:
        raise ValueError(f"--only {' '.join(only or [])} matches no method; the methods are {', '.join(found)}")
    return chosen


def run(
    shape: Tuple[int, int, int],
    dtype: torch.dtype = torch.float32,
    device: Optional[str] = None,
    repeats: int = 3,
    only: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """Measure every method at ``shape = (tokens, hidden, vocab)``; ratios are against the first
    (the unfused eager form), measured in the same run. Arguments checked by ``selected``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = selected(shape, repeats, only, device)
    x, w, t = _inputs(shape, dtype, device)
    rows: List[Dict[str, Any]] = []
    reference: Optional[Tensor] = None
    for name, method in chosen.items():
        loss = _step(method, x, w, t)
        reference = loss if reference is None else reference
        took = timing.repeated(functools.partial(_step, method, x, w, t), repeats, cuda=x.is_cuda)
        rows.append(
            {
                "method": name,
                "working_MiB": working_memory(method, x, w, t) / 2**20,
                "ms": took.ms,
                "time": took.to_dict(),
                "loss": float(loss),
                "loss_error": float((loss.float() - reference.float()).abs()),
            }
        )
    base = rows[0]
    for row in rows:
        row["memory_ratio"] = row["working_MiB"] / base["working_MiB"] if base["working_MiB"] > 0 else float("nan")
        row["time_ratio"] = row["ms"] / base["ms"]
    return {
        "shape": {"tokens": shape[0], "hidden": shape[1], "vocab": shape[2]},
        "dtype": str(dtype).replace("torch.", ""),
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "rows": rows,
    }


def markdown(result: Dict[str, Any]) -> str:
    s = result["shape"]
    lines = [
        f"Shape (tokens, hidden, vocab) = ({s['tokens']}, {s['hidden']}, {s['vocab']}), {result['dtype']}, "
        f"{result['device']}, torch {result['torch']}; forward + backward, mean loss.",
        "",
        timing.FOOTNOTE,
        "",
        "| method | working memory (MiB) | vs unfused | time (ms) | vs unfused | loss difference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = _t(result["rows"][0])
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['working_MiB']:.1f} | {r['memory_ratio']:.3f} | {timing.cell(_t(r), 0)} | "
            f"{timing.ratio_cell(_t(r), base, 2)} | {r['loss_error']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def _t(row: Dict[str, Any]) -> timing.Timing:
    return timing.Timing(row["time"]["ms"], row["time"]["iqr_ms"], row["time"]["runs"])


def unreliable(result: Dict[str, Any]) -> List[str]:
    """The methods whose time has a spread above the threshold."""
    return [f"{r['method']} ({_t(r).spread:.0%})" for r in result["rows"] if not _t(r).reliable]
