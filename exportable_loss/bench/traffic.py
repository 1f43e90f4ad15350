"""What the Triton backend launches and moves, counted on the CPU, and the GPU times that
projects to (labelled as projections until a GPU measures them).

* launches per call (forward, backward) of every loss with a kernel and every reduction, next
  to the matching ``torch.nn`` loss, counted under Triton's interpreter
  (``triton_kernels.counting.Counter``): Triton launches plus the ATen
  operators that launch a kernel on a GPU;
* the passes over the big tensor each kernel option makes (the kernels' ``TRAFFIC``
  declarations, which ``tests/test_traffic.py`` holds the kernels to, byte for byte);
* the time those bytes take at 90% of the published bandwidths of A100, H100 SXM and H200, next
  to Liger-Kernel's and torch's published measurements.

``TRITON_INTERPRET=1 python -m exportable_loss.bench.traffic --out docs/bench`` writes
``traffic.json`` and ``launches.md``, ``passes.md``, ``projection.md`` (the docs embed them).
"""

import argparse
import itertools
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

import exportable_loss.triton_kernels as tk
from exportable_loss import catalog
from exportable_loss.triton_kernels import aot

# Published peak memory bandwidths, TB/s, and the fraction of it a streaming kernel reaches.
BANDWIDTH_TBS = {"A100": 2.0, "H100 SXM": 3.35, "H200": 4.8}
EFFICIENCY = 0.9
# Published measurements to compare with: Liger-Kernel's cross entropy benchmark on an A100
# (16384 x 32768 float32, forward+backward), Liger against torch.
ANCHORS = [
    {"what": "Liger-Kernel cross entropy", "gpu": "A100", "ms": 5.40, "peak_mb": 2048},
    {"what": "torch cross entropy", "gpu": "A100", "ms": 15.49, "peak_mb": 10240},
]
SHAPES = [("cross_entropy", (16384, 32768), torch.float32), ("cross_entropy", (8192, 128256), torch.bfloat16)]
POINTWISE_SHAPE = ("mse", (1 << 26,), torch.float32)


# ---------------------------------------------------------------- launches per call


def _count(module: nn.Module, args: Tuple[torch.Tensor, ...]) -> Tuple[int, int, int]:
    """(forward launches, backward launches, host synchronisations) of one call of ``module``
    on ``args``, the first of which gets a gradient."""
    from exportable_loss.triton_kernels.counting import Counter

    inputs = [a.detach().clone().requires_grad_(i == 0) for i, a in enumerate(args)]
    with Counter() as forward:
        out = module(*inputs)
    grad = torch.ones_like(out)  # made outside the count: the caller's gradient
    with Counter() as backward:
        out.backward(grad)
    return len(forward.launches), len(backward.launches), len(forward.syncs) + len(backward.syncs)


def _nn_counterpart(ours: type, reduction: str, options: Dict[str, Any]) -> Optional[nn.Module]:
    cls = getattr(nn, ours.__name__, None)
    if cls is None or reduction not in ("none", "mean", "sum", "batchmean"):
        return None
    try:
        return cls(reduction=reduction, **options)
    except (TypeError, ValueError):
        return None


def launches(batch: int = 8) -> List[Dict[str, Any]]:
    """Launches per call of every loss with a kernel, every reduction, against torch.nn: with
    the catalogue's example options, and without options where it has some."""
    rows = []
    for entry in catalog.LOSSES.values():
        if entry.spec.kernel is None:
            continue
        variants = [dict(entry.kwargs)] + ([{}] if entry.kwargs else [])
        for options, reduction in itertools.product(variants, entry.reductions):
            args = entry.example(batch)
            ours = entry.cls(reduction=reduction, backend="triton", **options)
            fwd, bwd, syncs = _count(ours, args)
            label = ", ".join(options) or "—"
            row: Dict[str, Any] = dict(
                loss=entry.name, options=label, reduction=reduction, fwd=fwd, bwd=bwd, syncs=syncs
            )
            theirs = _nn_counterpart(entry.cls, reduction, options)
            if theirs is not None:
                row["nn_fwd"], row["nn_bwd"], _ = _count(theirs, args)
            rows.append(row)
    return rows


# ---------------------------------------------------------------- passes and projected time


def _planned_bytes(call: Callable[[], None]) -> Tuple[int, List[Tuple[str, int]]]:
    """(bytes, [(kernel, passes)]) of the launches ``call`` makes, from the declarations."""
    from exportable_loss.triton_kernels import counting

    launches = [launch for launch, *_ in counting.planned(call)]
    return sum(sum(counting.expected(x).values()) for x in launches), [(x.name, counting.passes(x)) for x in launches]


def passes() -> List[Dict[str, Any]]:
    """Passes over the big tensor per launch, for every option of the cross-entropy and
    element-wise ops (from the kernels' declarations)."""
    rows = []
    for probabilities, reduction, sample_weight in itertools.product((False, True), ("none", "mean"), (False, True)):
        if sample_weight and reduction == "none":
            continue
        forward, backward = aot.cross_entropy_calls(
            64, 1024, 1, torch.float32, probabilities, True, False, reduction, sample_weight
        )
        targets = "probabilities" if probabilities else "class indices"
        weighting = " + sample_weight" if sample_weight else ""
        for direction, call in (("forward", forward), ("backward", backward)):
            _, launched = _planned_bytes(call)
            rows.append(
                dict(op="cross_entropy", options=f"{targets}, {reduction}{weighting}", direction=direction,
                     launches=launched)
            )  # fmt: skip
    for weights, reduction in itertools.product((False, True), ("none", "mean")):
        forward, backward = aot.pointwise_calls("bce_logits", 64 * 1024, torch.float32, reduction, False, weights)
        options = ("weight + pos_weight, " if weights else "") + reduction
        for direction, call in (("forward", forward), ("backward", backward)):
            _, launched = _planned_bytes(call)
            rows.append(dict(op="pointwise", options=options, direction=direction, launches=launched))
    return rows


def projection() -> List[Dict[str, Any]]:
    """Bytes of one forward+backward (``mean``) at the benchmark shapes, and the time they take
    at 90% of each GPU's published bandwidth."""
    rows = []
    cases: List[Tuple[str, Tuple[int, ...], torch.dtype, Any]] = [
        (name, shape, dtype, aot.cross_entropy_calls(shape[0], shape[1], 1, dtype)) for name, shape, dtype in SHAPES
    ]
    name, (numel,), dtype = POINTWISE_SHAPE
    cases.append((name, (numel,), dtype, aot.pointwise_calls(name, numel, dtype)))
    for name, shape, dtype, (forward, backward) in cases:
        fwd, _ = _planned_bytes(forward)
        bwd, _ = _planned_bytes(backward)
        numel = 1
        for size in shape:
            numel *= size
        big = numel * torch.empty((), dtype=dtype).element_size()
        row: Dict[str, Any] = dict(
            loss=name, shape=list(shape), dtype=str(dtype).replace("torch.", ""), fwd_bytes=fwd, bwd_bytes=bwd,
            passes=round((fwd + bwd) / big, 3), tensor_mb=big / 2**20,
        )  # fmt: skip
        for gpu, tbs in BANDWIDTH_TBS.items():
            row[f"ms {gpu}"] = (fwd + bwd) / (EFFICIENCY * tbs * 1e12) * 1e3
        rows.append(row)
    return rows


# ---------------------------------------------------------------- Markdown


def launches_markdown(rows: List[Dict[str, Any]]) -> str:
    lines = [
        "| loss | options | reduction | ours: forward | backward | torch.nn: forward | backward | host syncs (ours) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        nn_fwd, nn_bwd = r.get("nn_fwd", "—"), r.get("nn_bwd", "—")
        head = f"| `{r['loss']}` | {r['options']} | `{r['reduction']}` |"
        lines.append(f"{head} {r['fwd']} | {r['bwd']} | {nn_fwd} | {nn_bwd} | {r['syncs']} |")
    return "\n".join(lines) + "\n"


def passes_markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ["| op | options | direction | launches (passes over the big tensor) |", "|---|---|---|---|"]
    for r in rows:
        launched = ", ".join(f"`{name}` ({p})" for name, p in r["launches"])
        lines.append(f"| {r['op']} | {r['options']} | {r['direction']} | {launched} |")
    return "\n".join(lines) + "\n"


def projection_markdown(rows: List[Dict[str, Any]]) -> str:
    gpus = list(BANDWIDTH_TBS)
    head = " | ".join(f"{g}, {BANDWIDTH_TBS[g]} TB/s" for g in gpus)
    lines = [
        f"| one forward+backward, `mean` | MiB moved | passes | projected: {head} |",
        "|---|---|---|" + "---|" * len(gpus),
    ]
    for r in rows:
        shape = " x ".join(str(s) for s in r["shape"])
        moved = (r["fwd_bytes"] + r["bwd_bytes"]) / 2**20
        times = " | ".join(f"{r[f'ms {g}']:.2f} ms" for g in gpus)
        lines.append(f"| `{r['loss']}` ({shape}) {r['dtype']} | {moved:,.0f} | {r['passes']} | {times} |")
    return "\n".join(lines) + "\n"


def write(out: str) -> Dict[str, str]:
    """Count, project and write ``traffic.json`` and the three Markdown tables into ``out``."""
    if not tk.interpreter_enabled():
        raise ValueError("counting launches needs Triton's interpreter: run with TRITON_INTERPRET=1")
    data = dict(launches=launches(), passes=passes(), projection=projection(), anchors=ANCHORS)
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "traffic.json")}
    with open(paths["json"], "w") as f:
        json.dump(data, f, indent=1)
    for name, render in (
        ("launches", launches_markdown),
        ("passes", passes_markdown),
        ("projection", projection_markdown),
    ):
        paths[name] = os.path.join(out, f"{name}.md")
        with open(paths[name], "w") as f:
            f.write(render(data[name]))
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/bench")
    print("\n".join(write(parser.parse_args().out).values()))
