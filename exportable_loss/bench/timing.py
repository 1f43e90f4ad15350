"""How the benchmarks time a call: ``torch.utils.benchmark`` on the CPU (with the process's
thread count, not its default of one), ``triton.testing.do_bench`` on CUDA (CUDA events where
Triton is missing). Every figure is the median with its spread (the interquartile range); one
whose spread exceeds ``UNRELIABLE`` of its median is flagged, since a busy machine makes
such a figure meaningless."""

import dataclasses
import statistics
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch

UNRELIABLE = 0.10  # spread (IQR / median) above which a figure is marked unreliable
MIN_RUNS = 5  # samples behind a figure at least: fewer give no meaningful spread


@dataclasses.dataclass(frozen=True)
class Timing:
    """One timed figure, in milliseconds."""

    ms: float  # median
    iqr_ms: float  # interquartile range of the runs (or blocks of runs)
    runs: Optional[int]  # samples behind it (None where do_bench does not say)

    @property
    def spread(self) -> float:
        return self.iqr_ms / self.ms if self.ms > 0 else float("inf")

    @property
    def reliable(self) -> bool:
        return self.spread <= UNRELIABLE

    def to_dict(self) -> Dict[str, object]:
        return {"ms": self.ms, "iqr_ms": self.iqr_ms, "runs": self.runs, "reliable": self.reliable}


def from_samples(seconds: Sequence[float]) -> Timing:
    """The median and IQR of per-run times in seconds."""
    if len(seconds) < 2:  # no spread to tell: unreliable
        return Timing(seconds[0] * 1e3, float("inf"), len(seconds))
    q1, _, q3 = statistics.quantiles(seconds, n=4, method="inclusive")  # as numpy.percentile
    return Timing(statistics.median(seconds) * 1e3, (q3 - q1) * 1e3, len(seconds))


def samples(fn: Callable[[], object], budget: float) -> List[float]:
    """Per-run seconds of ``fn`` on the CPU: ``torch.utils.benchmark``'s adaptive blocks of
    runs, until their spread is below half the unreliable threshold or ``budget`` seconds have
    passed (after one warm-up call, which also compiles what ``torch.compile`` wraps)."""
    from torch.utils import benchmark

    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    times = list(timer.adaptive_autorange(threshold=UNRELIABLE / 2, max_run_time=budget).times)
    while len(times) < MIN_RUNS:  # a slow call exhausts the budget in one run: no spread yet
        times.append(timer.timeit(1).times[0])
    return times


def measure(fn: Callable[[], object], budget: float = 2.0, cuda: bool = False) -> Timing:
    """Time ``fn`` for at most about ``budget`` seconds: the median and spread of its runs."""
    if cuda:
        return _measure_cuda(fn, budget)
    return from_samples(samples(fn, budget))


def repeated(fn: Callable[[], object], repeats: int, cuda: bool = False) -> Timing:
    """``repeats`` single runs of a long call (seconds each) after one warm-up call."""
    if cuda:
        return _cuda_events(fn, 0.0, repeats)
    from torch.utils import benchmark

    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return from_samples([timer.timeit(1).times[0] for _ in range(repeats)])


def interleaved(fns: Mapping[str, Callable[[], object]], rounds: int, budget: float) -> Dict[str, Timing]:
    """Time each of ``fns`` in ``rounds`` alternating rounds, pooling the runs: a drift of the
    machine's load hits every candidate alike instead of favouring the one timed first."""
    pooled: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            pooled[name] += samples(fn, budget / rounds)
    return {name: from_samples(times) for name, times in pooled.items()}


@dataclasses.dataclass(frozen=True)
class Paired:
    """``a`` against ``b`` timed in adjacent blocks: each figure's median and spread over its
    blocks, and the median ratio of adjacent blocks with its spread (IQR / median)."""

    a: Timing
    b: Timing
    ratio: float
    ratio_spread: float

    @property
    def reliable(self) -> bool:
        return self.ratio_spread <= UNRELIABLE


def paired(a: Callable[[], object], b: Callable[[], object], budget: float, block_s: float = 0.001) -> Paired:
    """Time ``a`` and ``b`` (CPU) in alternating blocks of ``block_s`` seconds (at least one run
    each) for about ``budget`` seconds (at least ``MIN_RUNS`` pairs), after one warm-up call
    each, which also compiles what ``torch.compile`` wraps. Each block of ``a`` is divided by the
    adjacent block of ``b``: a load that comes and goes between blocks hits both sides of a
    ratio alike, which a ratio of two separately taken medians does not have."""
    import time

    from torch.utils import benchmark

    timers = []
    for fn in (a, b):
        fn()
        timers.append(benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()))
    once = [t.timeit(1).times[0] for t in timers]
    numbers = [max(1, int(block_s / max(x, 1e-9))) for x in once]
    per_run: List[List[float]] = [[], []]
    ratios: List[float] = []
    end = time.perf_counter() + budget
    while len(ratios) < MIN_RUNS or time.perf_counter() < end:
        pair = [t.timeit(k).times[0] for t, k in zip(timers, numbers)]
        per_run[0].append(pair[0])
        per_run[1].append(pair[1])
        ratios.append(pair[0] / pair[1])
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    median = statistics.median(ratios)
    return Paired(from_samples(per_run[0]), from_samples(per_run[1]), median, (q3 - q1) / median)


def _measure_cuda(fn: Callable[[], object], budget: float) -> Timing:
    try:
        from triton.testing import do_bench
    except ImportError:
        return _cuda_events(fn, budget)
    q1, median, q3 = do_bench(fn, warmup=25, rep=int(budget * 1e3), quantiles=[0.25, 0.5, 0.75])
    return Timing(median, q3 - q1, None)


def _cuda_events(fn: Callable[[], object], budget: float, at_least: int = 5) -> Timing:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times: List[float] = []
    while sum(times) < budget or len(times) < at_least:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return from_samples(times)


def cell(t: Timing, digits: int = 3) -> str:
    """A Markdown cell: the median, its spread in percent, and a dagger when unreliable."""
    return f"{t.ms:.{digits}f} ±{100 * t.spread:.0f}%{' †' if not t.reliable else ''}"


def ratio_cell(a: Timing, b: Timing, digits: int = 3) -> str:
    """``a / b``, with a dagger when either figure is unreliable."""
    return f"{a.ms / b.ms:.{digits}f}{' †' if not (a.reliable and b.reliable) else ''}"


FOOTNOTE = (
    f"Each time is the median over runs, ± its spread (interquartile range) as a percentage of the median; "
    f"† marks a spread above {UNRELIABLE:.0%} of the median, or a ratio with such a figure: unreliable, the "
    "machine was busy. A ratio below 1 means faster than the baseline."
)
