"""``exportable-loss gpu-suite``: what a GPU lent for a few minutes should run, in under eight
minutes, on a machine with no network and only torch, triton, numpy and pytest installed.

Parts, in order, each in its own process with its own share of the time budget (a part that
runs over is stopped and recorded as such; the next one still runs), and the results written
after every part, so a stopped suite still leaves what it measured:

1. ``environment``: device, driver, CUDA, torch and triton versions;
2. ``tests``: ``tests/test_triton.py`` on the GPU (the kernels, not the interpreter);
3. ``launches``: CUDA kernels per call (forward, backward) of cross entropy and MSE against
   ``torch.nn``, from the profiler: the interpreter's counts, checked on the device;
4. ``cross_entropy``: forward+backward time, peak extra memory and achieved bandwidth (against
   the bytes the kernels declare) at (16384, 32768) and (8192, 128256), float32 and bfloat16;
5. ``elementwise``: the element-wise losses at 2**26 elements;
6. ``linear_cross_entropy``: ``FusedLinearCrossEntropyLoss`` at (8192, 4096, 128256) bfloat16;

each benchmark against ``torch.nn`` eager and ``torch.compile``, and Liger-Kernel and Cut
Cross-Entropy where they import (a line says when they do not). ``--dry-run`` starts every
part and skips it as if there were no CUDA, in seconds. Writes ``<out>/<device>.json`` and
``.md``.
"""

import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

# (part, share of the budget): the shares add up to 1
PARTS = [
    ("environment", 0.03),
    ("tests", 0.30),
    ("launches", 0.05),
    ("cross_entropy", 0.30),
    ("elementwise", 0.12),
    ("linear_cross_entropy", 0.20),
]
REPEATS = 10
TESTS = os.path.join(os.path.dirname(__file__), "..", "..", "tests")


class _Skip(Exception):
    pass


class _Writer:
    """Appends one JSON record per line to a part's file: what a stopped part leaves behind."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, **record: object) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _cuda(dry_run: bool) -> None:
    import torch

    if dry_run or not torch.cuda.is_available():
        raise _Skip("no CUDA device" + (" (dry run)" if dry_run else ""))


# ---------------------------------------------------------------- the parts


def _environment(write: _Writer, dry_run: bool, limit: float) -> None:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    write(kind="env", torch=torch.__version__, triton=triton_version, python=platform.python_version())
    _cuda(dry_run)
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        driver = "unknown (no nvidia-smi)"
    write(
        kind="env", device=props.name, memory_gb=round(props.total_memory / 2**30, 1), sm=f"{props.major}{props.minor}",
        driver=driver, cuda=torch.version.cuda,
    )  # fmt: skip


def _tests(write: _Writer, dry_run: bool, limit: float) -> None:
    _cuda(dry_run)
    if not os.path.isdir(TESTS):
        raise _Skip(f"no tests folder at {os.path.abspath(TESTS)}")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_triton.py", "-k", "not onnx"]
    try:
        done = subprocess.run(
            command, cwd=os.path.dirname(os.path.abspath(TESTS)), capture_output=True, text=True, timeout=limit - 5
        )
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        write(kind="tests", returncode=None, summary="stopped at the time limit", tail=output[-3000:])
        return
    summary = next((line for line in reversed(done.stdout.splitlines()) if " passed" in line or " failed" in line), "")
    write(kind="tests", returncode=done.returncode, summary=summary, tail=done.stdout[-3000:])


def _kernels_per_call(step: Callable[[], object]) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def _launches(write: _Writer, dry_run: bool, limit: float) -> None:
    _cuda(dry_run)
    import torch
    from torch import nn

    import exportable_loss as el

    x = torch.randn(4096, 32000, device="cuda", requires_grad=True)
    t = torch.randint(0, 32000, (4096,), device="cuda")
    y = torch.randn(1 << 20, device="cuda")
    z = torch.randn(1 << 20, device="cuda", requires_grad=True)
    cases = [
        ("cross_entropy", "ours", el.CrossEntropyLoss(backend="triton"), x, t),
        ("cross_entropy", "torch.nn", nn.CrossEntropyLoss(), x, t),
        ("mse", "ours", el.MSELoss(backend="triton"), z, y),
        ("mse", "torch.nn", nn.MSELoss(), z, y),
    ]
    for loss, impl, module, a, b in cases:
        grad = torch.ones_like(module(a, b))

        def forward(m: Any = module, a: Any = a, b: Any = b) -> Any:
            return m(a, b)

        def forward_backward(m: Any = module, a: Any = a, b: Any = b, g: Any = grad) -> None:
            m(a, b).backward(g)

        fwd = _kernels_per_call(forward)
        bwd = _kernels_per_call(forward_backward) - fwd
        write(kind="launches", loss=loss, impl=impl, reduction="mean", fwd=fwd, bwd=bwd)


def _measure(step: Callable[[], None], repeats: int = REPEATS) -> Dict[str, float]:
    """Median forward+backward time (CUDA events) and peak memory above what was allocated."""
    import statistics

    import torch

    step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return {"ms": statistics.median(times), "spread_ms": max(times) - min(times),
            "peak_extra_mb": (torch.cuda.max_memory_allocated() - base) / 2**20}  # fmt: skip


def _step(loss: Callable, x, *rest) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        loss(x, *rest).backward()

    return step


def _model_bytes(forward: Callable[[], None], backward: Callable[[], None]) -> int:
    from exportable_loss.triton_kernels import counting

    planned = counting.planned(forward) + counting.planned(backward)
    return sum(sum(counting.expected(launch).values()) for launch, *_ in planned)


def _run_candidates(write: _Writer, bench: Dict[str, Any], candidates: Dict[str, Optional[Callable]], args,
                    model_bytes: Optional[int] = None) -> None:  # fmt: skip
    import torch

    for impl, make in candidates.items():
        if make is None:
            write(kind="row", **bench, impl=impl, note="not installed")
            continue
        try:
            result = _measure(_step(make(), *args))
        except Exception as e:  # one failing candidate does not stop the others
            write(kind="row", **bench, impl=impl, note=f"failed: {type(e).__name__}: {str(e)[:200]}")
            torch.cuda.empty_cache()
            continue
        if impl == "ours (triton)" and model_bytes:
            result["gbps"] = model_bytes / (result["ms"] * 1e-3) / 1e9
        write(kind="row", **bench, impl=impl, **result)
        torch.cuda.empty_cache()


def _optional(module: str, name: str) -> Optional[type]:
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except Exception:
        return None


def _cross_entropy(write: _Writer, dry_run: bool, limit: float) -> None:
    _cuda(dry_run)
    import torch
    from torch import nn

    import exportable_loss as el
    from exportable_loss.triton_kernels import aot

    liger = _optional("liger_kernel.transformers", "LigerCrossEntropyLoss")
    for (n, c), dtype in [((16384, 32768), torch.float32), ((16384, 32768), torch.bfloat16),
                          ((8192, 128256), torch.float32), ((8192, 128256), torch.bfloat16)]:  # fmt: skip
        x = torch.randn(n, c, device="cuda", dtype=dtype, requires_grad=True)
        t = torch.randint(0, c, (n,), device="cuda")
        bench = dict(bench="cross_entropy mean", shape=[n, c], dtype=str(dtype).replace("torch.", ""))
        candidates: Dict[str, Optional[Callable[[], Any]]] = {
            "ours (triton)": lambda: el.CrossEntropyLoss(backend="triton"),
            "torch.nn eager": nn.CrossEntropyLoss,
            "torch.nn + torch.compile": lambda: torch.compile(nn.CrossEntropyLoss()),
            "liger-kernel": liger,
        }
        _run_candidates(write, bench, candidates, (x, t), _model_bytes(*aot.cross_entropy_calls(n, c, 1, dtype)))
        del x


def _elementwise(write: _Writer, dry_run: bool, limit: float) -> None:
    _cuda(dry_run)
    import torch
    from torch import nn

    from exportable_loss import catalog
    from exportable_loss.triton_kernels import aot

    numel = 1 << 26
    # every kind without weights moves the same bytes: input and target in, the gradient out
    model = _model_bytes(*aot.pointwise_calls("mse", numel, torch.float32))
    for entry in catalog.LOSSES.values():
        if entry.spec.kernel != "pointwise":
            continue
        x = torch.randn(1024, numel // 1024, device="cuda", requires_grad=True)
        y = torch.rand(1024, numel // 1024, device="cuda")
        theirs = getattr(nn, entry.cls.__name__, None)
        candidates = {
            "ours (triton)": lambda e=entry: e.cls(backend="triton"),
            "torch.nn eager": theirs,
            "torch.nn + torch.compile": (lambda c=theirs: torch.compile(c())) if theirs else None,
        }
        bench = dict(bench=f"{entry.name} mean", shape=[numel], dtype="float32")
        _run_candidates(write, bench, candidates, (x, y), model)
        del x, y


def _linear_cross_entropy(write: _Writer, dry_run: bool, limit: float) -> None:
    _cuda(dry_run)
    import torch
    import torch.nn.functional as F

    import exportable_loss as el

    tokens, hidden, vocab = 8192, 4096, 128256
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(vocab, hidden, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_(True)
    t = torch.randint(0, vocab, (tokens,), device="cuda")

    def unfused(a, weight, target):
        return F.cross_entropy(F.linear(a, weight).float(), target)

    liger = _optional("liger_kernel.transformers", "LigerFusedLinearCrossEntropyLoss")
    cce = _optional("cut_cross_entropy", "linear_cross_entropy")
    candidates = {
        "ours (triton)": lambda: el.FusedLinearCrossEntropyLoss(backend="triton"),
        "torch eager (linear + cross_entropy)": lambda: unfused,
        "torch.compile (linear + cross_entropy)": lambda: torch.compile(unfused),
        "liger-kernel": (lambda: lambda a, weight, target: liger()(weight, a, target)) if liger else None,
        "cut-cross-entropy": (lambda: cce) if cce else None,
    }
    bench = dict(bench="linear_cross_entropy mean", shape=[tokens, hidden, vocab], dtype="bfloat16")
    _run_candidates(write, bench, candidates, (x, w, t))


FUNCTIONS = {
    "environment": _environment,
    "tests": _tests,
    "launches": _launches,
    "cross_entropy": _cross_entropy,
    "elementwise": _elementwise,
    "linear_cross_entropy": _linear_cross_entropy,
}


def _part(function: Callable, path: str, dry_run: bool, limit: float) -> None:
    """A part's process: runs it, recording a skip or a failure as its last line."""
    write = _Writer(path)
    try:
        function(write, dry_run, limit)
        write(kind="status", status="ok")
    except _Skip as e:
        write(kind="status", status="skipped", note=str(e))
    except Exception as e:
        write(kind="status", status="failed", note=f"{type(e).__name__}: {str(e)[:300]}")


# ---------------------------------------------------------------- the suite


def _records(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def markdown(result: Dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# GPU suite: {env.get('device', 'no CUDA device')}",
        "",
        f"Device {env.get('device', '—')} (sm_{env.get('sm', '—')}, {env.get('memory_gb', '—')} GB), driver "
        f"{env.get('driver', '—')}, CUDA {env.get('cuda', '—')}, torch {env.get('torch', '—')}, triton "
        f"{env.get('triton', '—')}, Python {env.get('python', '—')}; {result['date']}.",
        "",
        "| part | status | seconds | limit | note |",
        "|---|---|---|---|---|",
    ]
    for p in result["parts"]:
        lines.append(f"| {p['name']} | {p['status']} | {p['seconds']:.1f} | {p['limit']:.0f} | {p.get('note', '')} |")
    tests = [r for r in result["records"] if r.get("kind") == "tests"]
    if tests:
        lines += ["", f"Tests: {tests[-1]['summary'] or 'no summary'} (exit {tests[-1]['returncode']})."]
    launches = [r for r in result["records"] if r.get("kind") == "launches"]
    if launches:
        lines += ["", "| loss | implementation | CUDA kernels forward | backward |", "|---|---|---|---|"]
        lines += [f"| {r['loss']} | {r['impl']} | {r['fwd']} | {r['bwd']} |" for r in launches]
    rows = [r for r in result["records"] if r.get("kind") == "row"]
    if rows:
        lines += [
            "",
            "| benchmark | shape | dtype | implementation | ms (fwd+bwd) | spread ms | peak extra MB "
            "| GB/s (model bytes) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if "ms" not in r:
                cells = f"{r.get('note', '')} | | | "
            else:
                gbps = f"{r['gbps']:.0f}" if "gbps" in r else ""
                cells = f"{r['ms']:.3f} | {r['spread_ms']:.3f} | {r['peak_extra_mb']:.0f} | {gbps}"
            shape = " x ".join(map(str, r["shape"]))
            lines.append(f"| {r['bench']} | {shape} | {r['dtype']} | {r['impl']} | {cells} |")
    return "\n".join(lines) + "\n"


def run(
    out: str, dry_run: bool = False, budget: float = 450.0, parts: Optional[List[Tuple[str, float, Callable]]] = None
) -> Dict[str, Any]:
    """Run every part within ``budget`` seconds in all (each its share), writing ``out``'s JSON
    and Markdown after every part. Returns the result with the written paths. ``parts``:
    (name, share, function) to run instead of the suite's (a function importable by name)."""
    if not budget > 0:
        raise ValueError(f"budget must be a positive number of seconds; got {budget}")
    parts = parts if parts is not None else [(name, share, FUNCTIONS[name]) for name, share in PARTS]
    os.makedirs(out, exist_ok=True)
    context: Any = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    if hasattr(context, "set_forkserver_preload"):
        context.set_forkserver_preload(["torch", "exportable_loss"])  # CUDA untouched: safe to fork from
    result: Dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": dry_run, "parts": [],
                                 "records": [], "environment": {}}  # fmt: skip
    paths: Dict[str, str] = {}
    scratch = os.path.join(out, ".parts")
    os.makedirs(scratch, exist_ok=True)
    for name, share, function in parts:
        limit = budget * share
        path = os.path.join(scratch, f"{name}.jsonl")
        if os.path.exists(path):
            os.unlink(path)
        start = time.perf_counter()
        process = context.Process(target=_part, args=(function, path, dry_run, limit))
        process.start()
        process.join(limit)
        if process.is_alive():
            process.terminate()
            process.join(10)
            if process.is_alive():
                process.kill()
        records = _records(path)
        status = next((r for r in reversed(records) if r.get("kind") == "status"), None)
        part = {"name": name, "limit": limit, "seconds": time.perf_counter() - start}
        if status is None:
            part.update(status="timeout" if process.exitcode is None or process.exitcode < 0 else "crashed",
                        note=f"stopped at its {limit:.0f}s limit; what it measured is kept")  # fmt: skip
        else:
            part.update(status=status["status"], note=status.get("note", ""))
        result["parts"].append(part)
        for r in records:
            if r.get("kind") == "env":
                result["environment"].update({k: v for k, v in r.items() if k != "kind"})
            elif r.get("kind") != "status":
                result["records"].append(dict(r, part=name))
        paths = _write(out, result)
    for name, _, _ in parts:
        os.unlink(os.path.join(scratch, f"{name}.jsonl"))
    os.rmdir(scratch)
    result["paths"] = paths
    return result


def _write(out: str, result: Dict[str, Any]) -> Dict[str, str]:
    stem = os.path.join(out, _slug(str(result["environment"].get("device", "no-cuda"))))
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    return {"json": stem + ".json", "md": stem + ".md"}
