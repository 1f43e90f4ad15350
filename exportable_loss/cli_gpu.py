"""The GPU-readiness subcommands of ``exportable-loss``, registered by ``register``:

    exportable-loss kernels [--arch 80 90 100] [--representative] [--only NAME ...] [--jobs N] [--json]
    exportable-loss gpu-suite [--out DIR] [--dry-run] [--budget SECONDS]

``kernels`` compiles every Triton kernel specialisation ahead of time for GPUs that need not be
here (``triton_kernels/aot.py``) and exits 1 on a compile failure or a spill; ``gpu-suite``
runs the tests and benchmarks a lent GPU should run (``bench/gpu_suite.py``).
"""

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable


def _cmd_kernels(args: argparse.Namespace) -> int:
    import exportable_loss.triton_kernels as tk

    if not tk.triton_importable():
        raise ValueError("exportable-loss kernels needs Triton: pip install triton")
    from exportable_loss.triton_kernels import aot

    names = sorted({s.kernel for s in aot.specialisations(args.representative)})
    if args.only and not any(k in name for k in args.only for name in names):
        raise ValueError(f"--only {' '.join(args.only)} matches no kernel; the kernels: {', '.join(names)}")
    archs = aot.supported_archs(args.arch)
    for arch in sorted(set(args.arch) - set(archs)):
        print(f"sm_{arch}: not supported by this Triton, skipped", file=sys.stderr)
    start = time.perf_counter()

    def progress(report, done: int, total: int) -> None:
        if not args.json:
            sys.stderr.write(f"\r{done}/{total} compiled, {time.perf_counter() - start:.0f}s")
            if done == total:
                sys.stderr.write("\n")

    reports = aot.run(archs, representative=args.representative, jobs=args.jobs, progress=progress, kernels=args.only)
    failed = [r for r in reports if r.error]
    spills = [r for r in reports if r.error is None and not r.ok]
    scalar = [r for r in reports if r.error is None and not r.vectorised]
    summary = (
        f"{len(reports)} compiles ({len(reports) // max(len(archs), 1)} specialisations x sm_"
        + "/".join(map(str, archs))
        + f"): {len(failed)} failed, {len(spills)} spill, {len(scalar)} with scalar big-tensor accesses"
        f", max {max((r.registers for r in reports), default=0)} registers, {time.perf_counter() - start:.0f}s"
    )
    if args.json:
        print(json.dumps({"summary": summary, "reports": [dataclasses.asdict(r) for r in reports]}, indent=1))
    else:
        print(aot.table(reports), end="")
        print(summary, file=sys.stderr)
    return 1 if failed or spills else 0


def _cmd_gpu_suite(args: argparse.Namespace) -> int:
    from exportable_loss.bench import gpu_suite

    result = gpu_suite.run(args.out, dry_run=args.dry_run, budget=args.budget)
    for part in result["parts"]:
        print(f"{part['name']:<28} {part['status']:<8} {part['seconds']:7.1f}s  {part.get('note', '')}")
    print(f"wrote {result['paths']['json']}, {result['paths']['md']}", file=sys.stderr)
    return 0 if all(p["status"] in ("ok", "skipped") for p in result["parts"]) else 1


def register(command: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    """Add ``kernels`` and ``gpu-suite`` through the main parser's ``command(name, help,
    description)``, which gives every subcommand the common options."""
    p = command(
        "kernels",
        "compile every Triton kernel specialisation for sm_80/90/100: registers, spills, vector loads",
        "Compile every kernel specialisation the ops can launch, ahead of time and with no GPU, for each "
        "architecture this Triton supports, and report registers per thread, local and spilled bytes, shared "
        "memory and the width of the big tensors' global loads and stores. Exit 1 on a compile failure or a spill.",
    )
    p.add_argument("--arch", type=int, nargs="+", default=[80, 90, 100], help="compute capabilities")
    p.add_argument("--representative", action="store_true", help="a representative subset (about 130 per arch)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only the kernels whose name contains one of these")
    p.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=_cmd_kernels)

    p = command(
        "gpu-suite",
        "on a CUDA machine: the Triton tests and the benchmarks, in under 8 minutes",
        "Run the Triton tests on the GPU and benchmark the losses against torch.nn, torch.compile, Liger-Kernel "
        "and Cut Cross-Entropy (where they import), each part within its share of the time budget; write JSON "
        "and Markdown naming the device, driver, torch and triton after every part. Needs only torch, triton, "
        "numpy and pytest.",
    )
    p.add_argument("--out", default="docs/bench/gpu", help="output folder (JSON and Markdown)")
    p.add_argument("--dry-run", action="store_true", help="start every part and skip it as if there were no CUDA")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole suite (each part its share)")
    p.set_defaults(func=_cmd_gpu_suite)
