"""Ahead-of-time compilation of every kernel specialisation the ops can launch, for GPUs that
are not here: registers per thread, spilled (local) bytes, shared memory, and the width of the
big tensors' global loads and stores.

The specialisations come from the launchers themselves: the ops' launch functions run on meta
tensors (no memory; the launchers pick blocks and warps as for a GPU) for every option, dtype
and a row length per block size, and their launches are bound by Triton's own JIT binder, so
integer arguments equal to 1 become constants and pointers and integers divisible by 16 carry
the divisibility hint, as in a real launch (without them the PTX shows only scalar loads).
Registers, local and shared memory are read from the cubin with the bundled ``cuobjdump``
(the bundled ``ptxas -v`` refuses the PTX version Triton emits); the load widths from the PTX,
each ``ld.global``/``st.global`` attributed to the source line (``.loc``) and from there to the
pointer it reads.
"""

import contextlib
import dataclasses
import io
import itertools
import os
import re
import subprocess
import tempfile
import time
import warnings
from functools import lru_cache
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

import exportable_loss.triton_kernels as tk

ARCHS = (80, 90, 100)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Layouts beyond contiguous rows whose length is a multiple of 16: an odd row length (a
# vocabulary such as 50257) and (N, C, D) logits with a spatial dimension; compiled with every
# option off and every option on.
CE_LAYOUTS = {"rows": None, "odd rows": (8192 + 1, 1), "spatial": (21, 64)}
REDUCTIONS = (("none", False, False), ("mean", False, False), ("mean", True, False), ("sum", False, False),
              ("mean", False, True))  # fmt: skip


# ---------------------------------------------------------------- the launcher calls, on meta tensors


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


def cross_entropy_calls(
    n: int,
    c: int,
    d: int,
    dtype: torch.dtype,
    probabilities: bool = False,
    weight: bool = False,
    softcap: bool = False,
    reduction: str = "mean",
    sample_weight: bool = False,
    normalizer: bool = False,
) -> Tuple[Callable[[], None], Callable[[], None]]:
    """The cross-entropy launchers' forward and backward calls on meta (N, C, D) logits."""
    kernels = tk.kernels("cross_entropy")
    x = _meta(n, c, d, dtype=dtype)
    t = _meta(n, c, d, dtype=dtype) if probabilities else _meta(n, d, dtype=torch.int64)
    w = _meta(c, dtype=dtype) if weight else None
    s = _meta(n) if sample_weight else None
    norm = _meta(dtype=torch.float64) if normalizer else None
    options = dict(ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=1.0 if softcap else 0.0)
    saved: dict = {}

    def forward() -> None:
        if reduction == "none":
            saved["out"] = kernels.cross_entropy_forward(x, t, w, **options)
        else:
            saved["out"] = kernels.cross_entropy_reduced_forward(x, t, w, s, norm, **options, mean=reduction == "mean")

    def backward() -> None:
        _, lse, mass, *den = saved["out"]
        grad = _meta() if den else _meta(n * d)
        kernels.cross_entropy_backward(
            grad, x, t, w, lse, mass, **options, sample_weight=s, denominator=den[0] if den else None
        )

    return forward, backward


def pointwise_calls(
    kind: str,
    numel: int,
    dtype: torch.dtype,
    reduction: str = "mean",
    sample_weight: bool = False,
    weights: bool = False,
    normalizer: bool = False,
) -> Tuple[Callable[[], None], Callable[[], None]]:
    """The element-wise launchers' forward and backward calls on a meta (N, numel / N) input."""
    kernels = tk.kernels("pointwise")
    shape = (64, numel // 64) if numel % 64 == 0 else (numel,)
    x = _meta(*shape, dtype=dtype)
    w = _meta(*shape, dtype=dtype) if weights else None
    s = _meta(shape[0]) if sample_weight else None
    norm = _meta(dtype=torch.float64) if normalizer else None
    saved: dict = {}

    def forward() -> None:
        if reduction == "none":
            saved["den"] = None
            kernels.pointwise_forward(x, x, None, w, w, kind, 0.5, 2.0)
        else:
            _, saved["den"] = kernels.pointwise_reduced_forward(x, x, s, w, w, norm, kind, 0.5, 2.0, reduction)

    def backward() -> None:
        den = saved["den"]
        grad = _meta(dtype=dtype) if den is not None else _meta(*shape, dtype=dtype)
        kernels.pointwise_backward(grad, x, x, s if den is not None else None, w, w, kind, 0.5, 2.0, den)

    return forward, backward


# ---------------------------------------------------------------- the specialisations


@dataclasses.dataclass
class Specialisation:
    kernel: str
    options: str  # the constexprs and the layout, in words
    dtype: str
    launch: Any  # counting.Launch
    fn: Any  # the JIT function
    args: tuple
    kwargs: dict

    @property
    def block(self) -> int:
        return int(self.launch.args.get("BLOCK", 0))

    @property
    def warps(self) -> int:
        return int(self.kwargs.get("num_warps", 4))


def _describe(launch, layout: str) -> str:
    flags = [k for k, v in launch.args.items() if k.isupper() and k != "BLOCK" and v is True]
    values = [f"{k}={v}" for k, v in launch.args.items() if k.isupper() and k != "BLOCK" and not isinstance(v, bool)]
    return " ".join([layout] + values + flags)


def _ce_variants(representative: bool):
    dtypes = DTYPES[:2] if representative else DTYPES
    flag_sets = list(itertools.product((False, True), repeat=3))
    for dtype, (layout, shape) in itertools.product(dtypes, CE_LAYOUTS.items()):
        if shape is None:
            blocks = tk.kernels("cross_entropy").BLOCKS_CUDA
            sizes = [(blocks[-1], 1)] if representative else [(b, 1) for b in blocks]
        else:
            sizes = [shape]
        flags = [(False,) * 3, (True,) * 3] if representative or shape is not None else flag_sets
        reductions = REDUCTIONS[:3] if representative else REDUCTIONS
        for (c, d), (prob, weight, softcap), (reduction, sw, norm) in itertools.product(sizes, flags, reductions):
            calls = cross_entropy_calls(8, c, d, dtype, prob, weight, softcap, reduction, sw, norm)
            yield layout, dtype, calls


def _pointwise_variants(representative: bool):
    dtypes = DTYPES[:2] if representative else DTYPES
    kinds = ("mse", "bce_logits", "focal") if representative else tk.POINTWISE_KINDS
    for dtype, kind, (reduction, sw, norm) in itertools.product(dtypes, kinds, REDUCTIONS):
        weightings = (False, True) if kind == "bce_logits" else (False,)
        for weights, (layout, numel) in itertools.product(weightings, (("aligned", 1 << 20), ("odd length", 999_999))):
            if layout == "odd length" and (representative or reduction != "mean" or sw or norm):
                continue
            yield layout, dtype, pointwise_calls(kind, numel, dtype, reduction, sw, weights, norm)


@lru_cache(maxsize=2)
def specialisations(representative: bool = False) -> Tuple[Specialisation, ...]:
    """Every distinct specialisation the ops launch on a GPU (a representative subset: the
    largest block, every option off and on, fp32 and bf16, a few element-wise kinds)."""
    from exportable_loss.triton_kernels import counting

    seen: Dict[tuple, Specialisation] = {}
    variants = itertools.chain(_ce_variants(representative), _pointwise_variants(representative))
    for layout, dtype, (forward, backward) in variants:
        planned = counting.planned(forward)
        planned += counting.planned(backward)
        for launch, fn, args, kwargs in planned:
            key = _key(fn, args, kwargs)
            if key not in seen:
                name = str(dtype).replace("torch.", "")
                seen[key] = Specialisation(launch.name, _describe(launch, layout), name, launch, fn, args, kwargs)
    return tuple(seen.values())


_binders: dict = {}


def _binder(fn, arch: int):
    if (fn, arch) not in _binders:
        _binders[fn, arch] = _make_binder(fn, arch)
    return _binders[fn, arch]


def _make_binder(fn, arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    return target, backend, create_function_from_signature(fn.signature, fn.params, backend)


def _key(fn, args, kwargs) -> tuple:
    _, _, binder = _binder(fn, 90)
    _, specialization, options = binder(*args, **kwargs)
    return (fn.fn.__name__, repr(specialization), repr(sorted(options.items())))


# ---------------------------------------------------------------- compiling and reading the results


@dataclasses.dataclass
class Report:
    kernel: str
    options: str
    dtype: str
    block: int
    warps: int
    arch: int
    registers: int = -1
    local_bytes: int = -1  # local memory per thread (spills and any local array): the bar is 0
    spill_stores: int = -1  # bytes, from ptxas -v (-1: no log, a cached compile)
    spill_loads: int = -1
    shared_bytes: int = -1
    # per big tensor (argument): bytes per global load/store instruction of its block accesses
    # (0: none in the compiled code, e.g. an input whose value the loss's derivative ignores)
    access: Dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[str] = None

    @property
    def vectorised(self) -> bool:
        """Every block access of a big tensor moves at least 8 bytes per instruction (v2/v4)."""
        return all(width >= 8 for width in self.access.values() if width)

    @property
    def ok(self) -> bool:
        return self.error is None and self.local_bytes == 0 and self.spill_stores <= 0 and self.spill_loads <= 0


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _resources(cubin: bytes) -> Dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(f.name)
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out)}


_INSTRUCTION = re.compile(r"\b(ld|st)\.global(?:\.\w+)*?(?:\.v(\d))?\.(?:b|u|s|f)(\d+)\b")


def _accesses(ptx: str, big: Sequence[str]) -> Dict[str, int]:
    """Bytes per instruction of the block-wide global accesses of each big tensor: every
    ``ld.global``/``st.global`` is attributed through the ``.loc`` before it (outside inline
    assembly) to the source line and from there to the pointer the line loads from or stores
    to. A line with a single scalar instruction reads one element (a row's target logit), not a
    block, and is left out."""
    files = {m.group(1): m.group(2) for m in re.finditer(r'\.file\s+(\d+)\s+"([^"]+)"', ptx)}
    per_line: Dict[Tuple[str, int], List[Tuple[int, int]]] = {}
    loc: Optional[Tuple[str, int]] = None
    inline_asm = False  # a load is inline assembly whose own .loc lines point elsewhere
    for line in ptx.splitlines():
        if "begin inline asm" in line or "end inline asm" in line:
            inline_asm = "begin" in line
            continue
        m = re.match(r"\s*\.loc\s+(\d+)\s+(\d+)", line)
        if m:
            if not inline_asm:
                loc = (m.group(1), int(m.group(2)))
            continue
        ins = _INSTRUCTION.search(line)
        if ins and loc is not None:
            lanes = int(ins.group(2) or 1)
            per_line.setdefault(loc, []).append((lanes, lanes * int(ins.group(3)) // 8))
    out: Dict[str, int] = {}
    for (file_id, number), instructions in per_line.items():
        path = files.get(file_id)
        if path is None or not os.path.exists(path):
            continue
        with open(path) as f:
            source = f.read().splitlines()
        text = source[number - 1] if number <= len(source) else ""
        m = re.search(r"tl\.(?:load|store)\(\s*(\w+)", text)
        if m is None or m.group(1) not in big:
            continue
        if len(instructions) == 1 and instructions[0][0] == 1:
            continue  # one element per program
        width = min(size for _, size in instructions)
        out[m.group(1)] = min(width, out.get(m.group(1), width))
    return out


def compile_one(spec: Specialisation, arch: int) -> Report:
    """Compile ``spec`` for ``sm_<arch>`` and read its resources and access widths."""
    import triton
    from triton.compiler import ASTSource

    from exportable_loss.triton_kernels import counting

    report = Report(spec.kernel, spec.options, spec.dtype, spec.block, spec.warps, arch)
    start = time.perf_counter()
    try:
        target, backend, binder = _binder(spec.fn, arch)
        bound, specialization, options = binder(*spec.args, **spec.kwargs)
        options, signature, constexprs, attrs = spec.fn._pack_args(backend, options, bound, specialization, options)
        log = io.StringIO()
        knobs = triton.knobs.nvidia
        previous = getattr(knobs, "dump_ptxas_log", None)
        knobs.dump_ptxas_log = True  # Triton runs ptxas -v and prints its log: the spill counts
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(log):
                warnings.simplefilter("ignore")
                compiled = triton.compile(
                    ASTSource(spec.fn, signature, constexprs, attrs), target=target, options=options.__dict__
                )
        finally:
            knobs.dump_ptxas_log = previous
        spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log.getvalue())
        if spills:
            report.spill_stores = sum(int(stores) for stores, _ in spills)
            report.spill_loads = sum(int(loads) for _, loads in spills)
        resources = _resources(compiled.asm["cubin"])
        report.registers = resources.get("REG", -1)
        report.local_bytes = resources.get("LOCAL", 0) + resources.get("STACK", 0)
        report.shared_bytes = compiled.metadata.shared
        big = [arg for arg, _, extent in counting.terms(spec.launch) if extent == "elements"]
        found = _accesses(compiled.asm["ptx"], big)
        report.access = {arg: found.get(arg, 0) for arg in big}
    except Exception as e:  # a compile failure is a result to report, not a crash
        report.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    report.seconds = time.perf_counter() - start
    return report


def supported_archs(archs: Sequence[int] = ARCHS) -> List[int]:
    """The architectures this Triton compiles for (sm_100 needs a recent one)."""
    out = []
    for arch in archs:
        try:
            _binder(tk.kernels("reduction").finish_reduction_kernel, arch)
            out.append(arch)
        except Exception:
            pass
    return out


@contextlib.contextmanager
def private_cache() -> Iterator[str]:
    """Compile into a fresh Triton cache: a cached PTX compiled from another checkout of these
    files would carry that checkout's line numbers, and the access widths are read through them."""
    previous = os.environ.get("TRITON_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="exportable-loss-aot-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        try:
            yield cache
        finally:
            if previous is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = previous


def _compile_index(args: Tuple[int, int, bool]) -> Report:
    index, arch, representative = args
    return compile_one(specialisations(representative)[index], arch)


def run(
    archs: Sequence[int] = ARCHS,
    representative: bool = False,
    jobs: int = 1,
    progress: Optional[Callable[[Report, int, int], None]] = None,
    kernels: Optional[Sequence[str]] = None,
) -> List[Report]:
    """Compile every specialisation (or the representative subset) for each of ``archs``."""
    specs = specialisations(representative)
    work = [
        (i, arch, representative)
        for arch in archs
        for i, spec in enumerate(specs)
        if kernels is None or any(k in spec.kernel for k in kernels)
    ]
    reports: List[Report] = []
    with private_cache():
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(jobs) as pool:
                for report in pool.map(_compile_index, work):
                    reports.append(report)
                    if progress:
                        progress(report, len(reports), len(work))
        else:
            for item in work:
                reports.append(_compile_index(item))
                if progress:
                    progress(reports[-1], len(reports), len(work))
    return reports


def _width(report: Report) -> str:
    if not report.access:
        return "—"
    return ", ".join(
        f"{arg.removesuffix('_ptr')} {f'{w} B' if w else 'not read'}" for arg, w in sorted(report.access.items())
    )


def table(reports: Sequence[Report]) -> str:
    """The reports as a Markdown table."""
    lines = [
        "| kernel | specialisation | dtype | block | warps | sm | registers | local bytes | spill stores/loads "
        "| shared bytes "
        "| big-tensor access (bytes per instruction) | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        result = r.error if r.error else "ok" if r.ok else "SPILLS"
        if r.error is None and not r.vectorised:
            result += " (scalar)"
        lines.append(
            f"| `{r.kernel}` | {r.options} | {r.dtype} | {r.block} | {r.warps} | {r.arch} | {r.registers} "
            f"| {r.local_bytes} | {r.spill_stores}/{r.spill_loads} | {r.shared_bytes} | {_width(r)} | {result} |"
        )
    return "\n".join(lines) + "\n"
