"""``exportable-loss bench``: time (and, on CUDA, peak memory) of the losses against their
baselines, measured in one run on the current device, written as JSON, PNG plots and a Markdown
table that the docs embed.

On the CPU it measures the torch backend's forward+backward overhead against the matching
``torch.nn`` loss (target: at most 5% at (4096, 1000) cross entropy and 1M-element MSE), the
cost of weighted and per-sample reductions, a size sweep against ``torch.nn`` and
``torch.compile``, and onnxruntime against eager for the exported losses. On CUDA it adds the
Triton backend, peak memory and bandwidth (``exportable_loss.bench.cuda``).
"""

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

import exportable_loss as el


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.time()

    def step(self, label: str) -> None:
        self.done += 1
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {time.time() - self.start:5.0f}s {label[:44]:<44}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _fwd_bwd(loss: Callable, x: torch.Tensor, *rest: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        out = loss(x, *rest)
        out.backward(torch.ones_like(out))

    return step


def _pair(ours: nn.Module, theirs: nn.Module, x, rest, repeats: int, rounds: int) -> Dict[str, float]:
    # interleaved rounds: drift on a shared machine hits both alike; the best round counts
    a, b = [], []
    for _ in range(rounds):
        b.append(_median_time(_fwd_bwd(theirs, x, *rest), repeats))
        a.append(_median_time(_fwd_bwd(ours, x, *rest), repeats))
    return {"ours_ms": min(a) * 1e3, "baseline_ms": min(b) * 1e3, "ratio": min(a) / min(b)}


def _ce_inputs(n: int, c: int = 1000):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=g, requires_grad=True), torch.randint(0, c, (n,), generator=g)


def _mse_inputs(numel: int):
    g = torch.Generator().manual_seed(0)
    side = int(numel**0.5)
    return torch.randn(side, numel // side, generator=g, requires_grad=True), torch.randn(
        side, numel // side, generator=g
    )


def cpu_suite(quick: bool) -> Dict[str, List[Dict[str, object]]]:
    repeats, rounds = (10, 2) if quick else (30, 3)
    ce_sizes = [512, 1024, 2048, 4096]
    mse_sizes = [1 << 16, 1 << 18, 1 << 20] if quick else [1 << 16, 1 << 18, 1 << 20, 1 << 22]
    work = 6 + 6 + len(ce_sizes) * 3 + len(mse_sizes) * 3 + 2
    progress = Progress(work)
    out: Dict[str, List[Dict[str, object]]] = {"overhead": [], "extras": [], "sweep": [], "onnxruntime": []}

    for name, (x, t), ours_cls, nn_cls in [
        ("cross_entropy (4096, 1000)", _ce_inputs(4096), el.CrossEntropyLoss, nn.CrossEntropyLoss),
        ("mse (1M)", _mse_inputs(1 << 20), el.MSELoss, nn.MSELoss),
    ]:
        for reduction in ("none", "mean", "sum"):
            r = _pair(ours_cls(reduction=reduction), nn_cls(reduction=reduction), x, (t,), repeats, rounds)
            out["overhead"].append({"loss": name, "reduction": reduction, **r})
            progress.step(f"overhead {name} {reduction}")
        base = _median_time(_fwd_bwd(ours_cls(), x, t), repeats)
        s = torch.rand(x.shape[0])
        for variant, loss, rest in [
            ("mean + sample_weight", ours_cls(), (t, s)),
            ("per_sample", ours_cls(reduction="per_sample"), (t,)),
            ("per_sample + sample_weight", ours_cls(reduction="per_sample"), (t, s)),
        ]:
            ms = _median_time(_fwd_bwd(loss, x, *rest), repeats)
            out["extras"].append({"loss": name, "variant": variant, "ms": ms * 1e3, "vs_unweighted_mean": ms / base})
            progress.step(f"extras {name} {variant}")

    for loss_name, sizes, make_inputs, ours_cls, nn_cls in [
        ("cross_entropy", ce_sizes, _ce_inputs, el.CrossEntropyLoss, nn.CrossEntropyLoss),
        ("mse", mse_sizes, _mse_inputs, el.MSELoss, nn.MSELoss),
    ]:
        for size in sizes:
            x, t = make_inputs(size)
            candidates = {
                "torch.nn eager": nn_cls(),
                "torch backend": ours_cls(),
                "torch backend + compile": torch.compile(ours_cls(), fullgraph=True, dynamic=False),
            }
            for impl, loss in candidates.items():
                ms = _median_time(_fwd_bwd(loss, x, t), repeats) * 1e3
                out["sweep"].append({"loss": loss_name, "size": size, "impl": impl, "ms": ms})
                progress.step(f"sweep {loss_name} {size} {impl}")

    from exportable_loss.export import export_onnx, run_onnx

    with tempfile.TemporaryDirectory() as folder:
        for name, loss, (x, t) in [
            ("cross_entropy (4096, 1000)", el.CrossEntropyLoss(), _ce_inputs(4096)),
            ("mse (1M)", el.MSELoss(), _mse_inputs(1 << 20)),
        ]:
            path = export_onnx(loss, (x.detach()[:8], t[:8]), os.path.join(folder, "l.onnx"))
            inputs = (x.detach(), t)
            eager = _median_time(lambda loss=loss, inputs=inputs: loss(*inputs), repeats)
            ort = _median_time(lambda path=path, inputs=inputs: run_onnx(path, inputs), repeats)
            out["onnxruntime"].append(
                {"loss": name, "eager_ms": eager * 1e3, "onnxruntime_ms": ort * 1e3, "ratio": ort / eager}
            )
            progress.step(f"onnxruntime {name}")
    return out


def _plot(results: Dict[str, List[Dict[str, object]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = sorted({r["loss"] for r in results["sweep"]})
    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 3.8))
    for ax, loss in zip(axes if len(losses) > 1 else [axes], losses):
        rows = [r for r in results["sweep"] if r["loss"] == loss]
        for impl in sorted({r["impl"] for r in rows}):
            pts = sorted((r["size"], r["ms"]) for r in rows if r["impl"] == impl)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (x 1000 classes)" if loss == "cross_entropy" else "elements")
        ax.set_ylabel("forward+backward, ms")
        ax.set_title(loss)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(results: Dict[str, List[Dict[str, object]]], header: str) -> str:
    lines = [header, "", "### Overhead against torch.nn (forward+backward, eager)", ""]
    lines += ["| loss | reduction | ours (ms) | torch.nn (ms) | ratio |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['loss']} | {r['reduction']} | {r['ours_ms']:.3f} | {r['baseline_ms']:.3f} | {r['ratio']:.3f} |"
        for r in results["overhead"]
    ]
    lines += ["", "### Cost of the extras (sample_weight, per_sample) against our unweighted mean", ""]
    lines += ["| loss | variant | ms | ratio |", "|---|---|---:|---:|"]
    lines += [
        f"| {r['loss']} | {r['variant']} | {r['ms']:.3f} | {r['vs_unweighted_mean']:.2f} |" for r in results["extras"]
    ]
    lines += ["", "### onnxruntime against eager (forward, exported with the dynamo exporter)", ""]
    lines += ["| loss | eager (ms) | onnxruntime (ms) | ratio |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r['loss']} | {r['eager_ms']:.3f} | {r['onnxruntime_ms']:.3f} | {r['ratio']:.2f} |"
        for r in results["onnxruntime"]
    ]
    if results.get("cuda"):
        lines += ["", "### CUDA: Triton backend", "", "| loss | shape | dtype | impl | ms | extra MB | GB/s |"]
        lines += ["|---|---|---|---|---:|---:|---:|"]
        lines += [
            f"| {r['loss']} | {r['shape']} | {r['dtype']} | {r['impl']} | {r['ms']:.3f} | {r['extra_mb']:.0f} "
            f"| {format(r['gbps'], '.0f') if 'gbps' in r else ''} |"
            for r in results["cuda"]
        ]
    return "\n".join(lines) + "\n"


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return f"{platform.machine()}, {os.cpu_count()} cores, {device}; torch {torch.__version__}, {threads} threads"


def run(out_dir: str, quick: bool = False, peak_gbps: Optional[float] = None) -> Dict[str, str]:
    """Run the suite and write ``bench.json``, ``bench.png`` and ``bench.md`` in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    results: Dict[str, object] = dict(cpu_suite(quick))
    if torch.cuda.is_available():
        from exportable_loss.bench import cuda as _bench_cuda

        results["cuda"] = _bench_cuda.run(
            quick, 10 if quick else 20, _bench_cuda._peak(torch.cuda.get_device_name(), peak_gbps)
        )
    results["machine"] = machine()
    results["date"] = time.strftime("%Y-%m-%d")
    paths = {k: os.path.join(out_dir, f"bench.{k}") for k in ("json", "png", "md")}
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=1)
    _plot(results, paths["png"])
    header = (
        f"Measured by `exportable-loss bench{' --quick' if quick else ''}` on {results['machine']}, {results['date']}."
    )
    with open(paths["md"], "w") as f:
        f.write(_markdown(results, header))
    return paths
