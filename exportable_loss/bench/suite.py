"""``exportable-loss bench``: time (and, on CUDA, peak memory) of the losses against their
baselines, measured in one run on the current device, written as JSON, a Markdown table that
the docs embed and, with matplotlib (the ``bench`` extra), a PNG plot.

On the CPU it measures the torch backend's forward+backward against the matching ``torch.nn``
loss (target: at most 5% slower at (4096, 1000) cross entropy and 1M-element MSE), the cost of
weighted and per-sample reductions, a size sweep against ``torch.nn`` and ``torch.compile``,
onnxruntime against eager for the exported losses (one ``InferenceSession`` reused for
every call, as an application does), and, with ExecuTorch installed, a training step in
ExecuTorch's training runtime against eager PyTorch at two batch sizes. On CUDA it adds the
Triton backend, peak memory and bandwidth (``exportable_loss.bench.cuda``). Every time comes with its spread
(``exportable_loss.bench.timing``); unreliable figures are marked and reported.
"""

import functools
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

import exportable_loss as el
from exportable_loss._io import Progress, atomic_path, check_writable, write_text
from exportable_loss.bench import timing
from exportable_loss.bench.timing import Timing

Rows = List[Dict[str, Any]]  # JSON rows
STEP_BATCHES = (8, 64)  # the training step's batch sizes (ExecuTorch against eager)
PLOT_HINT = "pip install 'exportable-loss[bench]'"


def _fwd_bwd(loss: Callable[..., Tensor], x: Tensor, *rest: Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        out = loss(x, *rest)
        out.backward(torch.ones_like(out))

    return step


def _ce_inputs(n: int, c: int = 1000) -> Tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=g, requires_grad=True), torch.randint(0, c, (n,), generator=g)


def _mse_inputs(numel: int) -> Tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    side = int(numel**0.5)
    shape = (side, numel // side)
    return torch.randn(*shape, generator=g, requires_grad=True), torch.randn(*shape, generator=g)


def _pair(a: Timing, b: Timing) -> Dict[str, object]:
    """Two figures and their ratio; the ratio is reliable when both are."""
    return {"ratio": a.ms / b.ms, "reliable": a.reliable and b.reliable}


def cpu_suite(quick: bool) -> Dict[str, Rows]:
    """The CPU measurements (see the module's docstring)."""
    seconds, rounds = (1.0, 2) if quick else (4.0, 3)  # time budget per figure
    ce_sizes = [512, 1024, 2048, 4096]
    mse_sizes = [1 << 16, 1 << 18, 1 << 20] if quick else [1 << 16, 1 << 18, 1 << 20, 1 << 22]
    from exportable_loss.export import executorch

    step_sizes = STEP_BATCHES if executorch.available() else ()
    progress = Progress(6 + 6 + 3 * (len(ce_sizes) + len(mse_sizes)) + 2 + len(step_sizes), "bench")
    out: Dict[str, Rows] = {"overhead": [], "extras": [], "sweep": [], "onnxruntime": []}

    headline: List[Tuple[str, Tuple[Tensor, Tensor], type, type]] = [
        ("cross_entropy (4096, 1000)", _ce_inputs(4096), el.CrossEntropyLoss, nn.CrossEntropyLoss),
        ("mse (1M)", _mse_inputs(1 << 20), el.MSELoss, nn.MSELoss),
    ]
    for name, (x, t), ours_cls, nn_cls in headline:
        for reduction in ("none", "mean", "sum"):
            fns = {
                "ours": _fwd_bwd(ours_cls(reduction=reduction), x, t),
                "baseline": _fwd_bwd(nn_cls(reduction=reduction), x, t),
            }
            times = timing.interleaved(fns, rounds, seconds)
            row = {"loss": name, "reduction": reduction, **{k: v.to_dict() for k, v in times.items()}}
            out["overhead"].append({**row, **_pair(times["ours"], times["baseline"])})
            progress.step(f"overhead {name} {reduction}")
        s = torch.rand(x.shape[0])
        variants: Dict[str, Callable[[], None]] = {
            "mean": _fwd_bwd(ours_cls(), x, t),
            "mean + sample_weight": _fwd_bwd(ours_cls(), x, t, s),
            "per_sample": _fwd_bwd(ours_cls(reduction="per_sample"), x, t),
            "per_sample + sample_weight": _fwd_bwd(ours_cls(reduction="per_sample"), x, t, s),
        }
        times = timing.interleaved(variants, rounds, seconds)
        for variant in list(variants)[1:]:
            row = {"loss": name, "variant": variant, "time": times[variant].to_dict(), "base": times["mean"].to_dict()}
            out["extras"].append({**row, **_pair(times[variant], times["mean"])})
            progress.step(f"extras {name} {variant}")

    sweeps: List[Tuple[str, List[int], Callable[[int], Tuple[Tensor, Tensor]], type, type]] = [
        ("cross_entropy", ce_sizes, _ce_inputs, el.CrossEntropyLoss, nn.CrossEntropyLoss),
        ("mse", mse_sizes, _mse_inputs, el.MSELoss, nn.MSELoss),
    ]
    for loss_name, sizes, make_inputs, ours_cls, nn_cls in sweeps:
        for size in sizes:
            x, t = make_inputs(size)
            candidates = {
                "torch.nn eager": nn_cls(),
                "torch backend": ours_cls(),
                "torch backend + compile": torch.compile(ours_cls(), fullgraph=True, dynamic=False),
            }
            for impl, loss in candidates.items():
                took = timing.measure(_fwd_bwd(loss, x, t), seconds / 2)
                out["sweep"].append({"loss": loss_name, "size": size, "impl": impl, "time": took.to_dict()})
                progress.step(f"sweep {loss_name} {size} {impl}")

    from exportable_loss.export import export_onnx, inference_session

    with tempfile.TemporaryDirectory() as folder:
        for name, (x, t), ours_cls, _ in headline:
            loss = ours_cls()
            path = export_onnx(loss, (x.detach()[:8], t[:8]), os.path.join(folder, "l.onnx"))
            session = inference_session(path)  # created once, as an application does
            feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), (x.detach(), t))}
            calls: Dict[str, Callable[[], object]] = {
                "eager": functools.partial(_no_grad, loss, x.detach(), t),
                "onnxruntime": functools.partial(session.run, None, feeds),
            }
            times = timing.interleaved(calls, rounds, seconds)
            row = {"loss": name, **{k: v.to_dict() for k, v in times.items()}}
            out["onnxruntime"].append({**row, **_pair(times["onnxruntime"], times["eager"])})
            progress.step(f"onnxruntime {name}")
    if step_sizes:
        out["executorch"] = _executorch_steps(step_sizes, rounds, seconds, progress)
    return out


def _executorch_steps(sizes: Tuple[int, ...], rounds: int, seconds: float, progress: Progress) -> Rows:
    """Time per training step of the demo MLP under cross entropy with SGD (momentum 0.9), at
    each batch size: ExecuTorch's training runtime (``forward_backward`` and its optimizer's
    step) against eager PyTorch (forward, backward, ``torch.optim.SGD``)."""
    from importlib.metadata import version

    from exportable_loss.export.demo_models import demo, example_input
    from exportable_loss.export.executorch import ExecuTorchStep, export_executorch_step

    model, loss = demo("mlp"), el.CrossEntropyLoss()
    rows: Rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "step.pte")
        export_executorch_step(model, loss, example_input("mlp", 6), path, max_batch=max(sizes))
        step = ExecuTorchStep(path)
        step.forward_backward(*example_input("mlp", 2))  # the runtime names its parameters on the first call
        sgd = step.sgd(lr=1e-3, momentum=0.9)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for n in sizes:
            inputs = example_input("mlp", n)
            calls: Dict[str, Callable[[], object]] = {
                "eager": functools.partial(_eager_step, model, loss, optimizer, *inputs),
                "executorch": functools.partial(_runtime_step, step, sgd, *inputs),
            }
            times = timing.interleaved(calls, rounds, seconds)
            row = {"loss": "mlp + cross_entropy, SGD step", "size": n, "version": version("executorch")}
            row.update({k: v.to_dict() for k, v in times.items()})
            rows.append({**row, **_pair(times["executorch"], times["eager"])})
            progress.step(f"executorch step at batch {n}")
    return rows


def _eager_step(model: nn.Module, loss: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, *rest: Tensor) -> None:
    optimizer.zero_grad()
    loss(model(x), *rest).backward()
    optimizer.step()


def _runtime_step(step: Any, sgd: Any, *inputs: Tensor) -> None:
    step.forward_backward(*inputs)
    sgd.step(step.named_gradients())


def _no_grad(loss: nn.Module, *args: Tensor) -> Tensor:
    with torch.no_grad():
        return loss(*args)


def _t(figure: Dict[str, Any]) -> Timing:
    """A timing back from its JSON dict."""
    return Timing(figure["ms"], figure["iqr_ms"], figure["runs"])


def plot(results: Dict[str, Rows], path: str) -> bool:
    """The size sweep as a PNG; False (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    losses = sorted({str(r["loss"]) for r in results["sweep"]})
    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 3.8), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        rows = [r for r in results["sweep"] if r["loss"] == loss]
        for impl in sorted({str(r["impl"]) for r in rows}):
            pts = sorted(((r["size"], _t(r["time"])) for r in rows if r["impl"] == impl), key=lambda p: p[0])
            ms = [p[1].ms for p in pts]
            iqr = [p[1].iqr_ms / 2 for p in pts]
            ax.errorbar([p[0] for p in pts], ms, yerr=iqr, marker="o", capsize=3, label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (x 1000 classes)" if loss == "cross_entropy" else "elements")
        ax.set_ylabel("forward+backward, ms (bars: IQR)")
        ax.set_title(loss)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def markdown(results: Dict[str, Rows], header: str) -> str:
    cell, ratio = timing.cell, timing.ratio_cell
    lines = [header, "", timing.FOOTNOTE, "", "### Overhead against torch.nn (forward+backward, eager)", ""]
    lines += ["| loss | reduction | ours (ms) | torch.nn (ms) | ratio |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['loss']} | {r['reduction']} | {cell(_t(r['ours']))} | {cell(_t(r['baseline']))} "
        f"| {ratio(_t(r['ours']), _t(r['baseline']))} |"
        for r in results["overhead"]
    ]
    lines += ["", "### Cost of weighted and per-sample reductions against our unweighted mean", ""]
    lines += ["| loss | variant | ms | unweighted mean (ms) | ratio |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['loss']} | {r['variant']} | {cell(_t(r['time']))} | {cell(_t(r['base']))} "
        f"| {ratio(_t(r['time']), _t(r['base']), 2)} |"
        for r in results["extras"]
    ]
    lines += ["", "### Size sweep (forward+backward)", ""]
    lines += ["| loss | size | implementation | ms |", "|---|---:|---|---:|"]
    lines += [f"| {r['loss']} | {r['size']} | {r['impl']} | {cell(_t(r['time']))} |" for r in results["sweep"]]
    lines += ["", "### onnxruntime against eager (forward; dynamo exporter; one session reused)", ""]
    lines += ["| loss | eager (ms) | onnxruntime (ms) | ratio |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r['loss']} | {cell(_t(r['eager']))} | {cell(_t(r['onnxruntime']))} "
        f"| {ratio(_t(r['onnxruntime']), _t(r['eager']), 2)} |"
        for r in results["onnxruntime"]
    ]
    lines += ["", "### A training step: ExecuTorch's training runtime against eager PyTorch", ""]
    if results.get("executorch"):
        lines += [
            "The demo MLP under cross entropy: forward, backward and an SGD update (momentum 0.9) per step; "
            f"ExecuTorch {results['executorch'][0]['version']}'s portable kernels.",
            "",
            "| batch | eager (ms) | ExecuTorch (ms) | ratio |",
            "|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['size']} | {cell(_t(r['eager']))} | {cell(_t(r['executorch']))} "
            f"| {ratio(_t(r['executorch']), _t(r['eager']))} |"
            for r in results["executorch"]
        ]
    else:
        lines += ["Not measured: ExecuTorch is not installed (see the exporting page)."]
    if results.get("cuda"):
        lines += ["", "### CUDA: Triton backend", "", "| loss | shape | dtype | impl | ms | extra MB | GB/s |"]
        lines += ["|---|---|---|---|---:|---:|---:|"]
        lines += [
            f"| {r['loss']} | {r['shape']} | {r['dtype']} | {r['impl']} | {cell(_t(r['time']))} | "
            f"{r['extra_mb']:.0f} | {format(r['gbps'], '.0f') if 'gbps' in r else ''} |"
            for r in results["cuda"]
        ]
    return "\n".join(lines) + "\n"


def unreliable(results: Dict[str, Rows]) -> List[str]:
    """A label for every figure whose spread is above the threshold."""
    found = []
    for section, rows in results.items():
        for r in rows:
            for key, value in r.items():
                if isinstance(value, dict) and not value.get("reliable", True):
                    what = " ".join(str(r[k]) for k in ("loss", "reduction", "variant", "size", "impl") if k in r)
                    found.append(f"{section}: {what} {key} ({_t(value).spread:.0%})")
    return found


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    plural = "" if threads == 1 else "s"
    cores = f"{platform.machine()}, {os.cpu_count()} cores, {device}"
    return f"{cores}; torch {torch.__version__}, {threads} thread{plural}"


def run(out_dir: str, quick: bool = False, peak_gbps: Optional[float] = None) -> Dict[str, str]:
    """Run the suite and write ``bench.json``, ``bench.md`` and (with matplotlib) ``bench.png``
    in ``out_dir``; warns on stderr about unreliable figures."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"the output folder {out_dir} is a file")
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"bench.{k}") for k in ("json", "md", "png")}
    for path in paths.values():
        check_writable(path)
    results: Dict[str, Rows] = dict(cpu_suite(quick))
    if torch.cuda.is_available():
        from exportable_loss.bench import cuda as _bench_cuda

        peak = _bench_cuda._peak(torch.cuda.get_device_name(), peak_gbps)
        results["cuda"] = _bench_cuda.run(quick, 0.5 if quick else 2.0, peak)
    return write(results, paths, quick)


def write(results: Dict[str, Rows], paths: Dict[str, str], quick: bool) -> Dict[str, str]:
    """Write the results: JSON, Markdown and the plot when matplotlib is installed."""
    about = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "quick": quick, "threshold": timing.UNRELIABLE}
    write_text(paths["json"], json.dumps({**about, **results}, indent=1))
    mode = " --quick" if quick else ""
    header = f"Measured by `exportable-loss bench{mode}` on {about['machine']}, {about['date']}."
    if quick:
        header += " Quick mode: shorter timings and fewer sizes than the full run, on a shared machine."
    write_text(paths["md"], markdown(results, header))
    written = {k: paths[k] for k in ("json", "md")}
    if plot(results, paths["png"]):
        written["png"] = paths["png"]
    else:
        print(f"bench: matplotlib is not installed, so no plot; {PLOT_HINT} adds bench.png", file=sys.stderr)
    flagged = unreliable(results)
    if flagged:
        print(
            f"warning: {len(flagged)} figures have a spread above {timing.UNRELIABLE:.0%} of their median "
            f"(marked † in {paths['md']}); the machine was busy, rerun for trustworthy numbers:\n  "
            + "\n  ".join(flagged),
            file=sys.stderr,
        )
    return written
