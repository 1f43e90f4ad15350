"""``exportable-loss bench --sweep``: the time of every loss against ``torch.nn`` as the batch
grows, eager and under ``torch.compile(fullgraph=True, dynamic=True)``, in each configuration of
``exportable_loss.bench.cases``; forward+backward, on the current device (the CPU).

Each (case, mode, size) is timed ours against the baseline in adjacent blocks
(``timing.paired``); the result is the median ratio of adjacent blocks with its spread (IQR /
median), checked against
the targets: eager at most ``EAGER_SMALL`` below ``LARGE`` samples and ``EAGER_LARGE`` from there,
compiled (against compiled ``torch.nn``) at most ``COMPILED``. It writes ``sweep.json``,
``sweep.md`` (a table per mode, every row with its verdict) and, with matplotlib, ``sweep.png``.
"""

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from exportable_loss._io import Progress, atomic_path, check_writable, write_text
from exportable_loss.bench import timing
from exportable_loss.bench.cases import Case, cases, step

SIZES = (1, 8, 64, 512, 4096)  # samples (batch N)
MODES = ("eager", "compiled")
EAGER_SMALL, EAGER_LARGE, LARGE = 1.15, 1.05, 512
COMPILED = 1.05


def target(mode: str, n: int) -> float:
    """The ratio ours / torch.nn a figure must not exceed."""
    if mode == "compiled":
        return COMPILED
    return EAGER_LARGE if n >= LARGE else EAGER_SMALL


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    return torch.compile(fn, fullgraph=True, dynamic=True)


def measure(
    chosen: Sequence[Case],
    sizes: Sequence[int] = SIZES,
    modes: Sequence[str] = MODES,
    budget: float = 1.0,
    progress: Optional[Progress] = None,
) -> List[Dict[str, Any]]:
    """One row per (case, mode, size): both timings, their ratio and the verdict. ``budget``
    seconds of timing per figure (both candidates)."""
    rows: List[Dict[str, Any]] = []
    for case in chosen:
        for mode in modes:
            torch._dynamo.reset()  # each case compiles afresh: no cache limit shared across cases
            ours: Callable[..., Any] = case.ours()
            base: Callable[..., Any] = case.baseline()
            if mode == "compiled":
                ours, base = _compiled(ours), _compiled(base)
                failure = _compile_failure(ours, base, case.inputs(sizes[0]))
                if failure is not None:
                    rows += [_failed_row(case, mode, n, failure) for n in sizes]
                    if progress is not None:
                        for n in sizes:
                            progress.step(f"{case.label} {mode} N={n}")
                    continue
            for n in sizes:
                args = case.inputs(n)
                rows.append(_row(case, mode, n, timing.paired(step(ours, args), step(base, args), budget)))
                if progress is not None:
                    progress.step(f"{case.label} {mode} N={n}")
    return rows


def _compile_failure(ours: Callable[..., Any], base: Callable[..., Any], args: Tuple[Any, ...]) -> Optional[str]:
    """Which side does not compile with ``fullgraph=True`` (torch.nn's Gaussian NLL checks its
    variances' values), as ``"side: error"``; None where both do."""
    for side, fn in (("torch.nn", base), ("ours", ours)):
        try:
            step(fn, args)()
        except Exception as e:  # torch.compile's errors share no base class across versions
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return f"{side}: {type(e).__name__}: {first}"
    return None


def _figure(case: Case, mode: str, n: int) -> Dict[str, Any]:
    """What a row says of the figure it holds: the case, the mode and the size."""
    return {
        "loss": case.loss,
        "config": case.config,
        "classes": case.classes,
        "reduction": case.reduction,
        "mode": mode,
        "n": n,
        "elements": case.elements(n),
    }


def _failed_row(case: Case, mode: str, n: int, failure: str) -> Dict[str, Any]:
    """A figure that could not be taken: not comparable where torch.nn failed, a miss where ours did."""
    ours_failed = failure.startswith("ours")
    return {
        **_figure(case, mode, n),
        "failed": failure,
        "ratio": None,
        "target": target(mode, n),
        "meets": False if ours_failed else None,
    }


def _row(case: Case, mode: str, n: int, times: timing.Paired) -> Dict[str, Any]:
    ratio = times.ratio
    return {
        **_figure(case, mode, n),
        "ours": times.a.to_dict(),
        "torch.nn": times.b.to_dict(),
        "ratio": ratio,
        "spread": times.ratio_spread,  # IQR / median of the ratios of adjacent blocks
        "reliable": times.reliable,
        "target": target(mode, n),
        "meets": ratio <= target(mode, n),
    }


def _label(r: Dict[str, Any]) -> str:
    classes = f" (C={r['classes']})" if r["classes"] else ""
    return f"{r['loss']}{classes}"


def _groups(rows: List[Dict[str, Any]], mode: str) -> Dict[Tuple[str, str], List[Dict[str, Any]]]:
    """The rows of ``mode`` by (loss, configuration), in measurement order."""
    out: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        if r["mode"] == mode:
            out.setdefault((_label(r), r["config"]), []).append(r)
    return out


def _cell(r: Dict[str, Any]) -> str:
    if r["ratio"] is None:
        return "n/a" if r["meets"] is None else "fails ✗"
    mark = "" if r["meets"] else " ✗"
    return f"{r['ratio']:.2f} ±{100 * r['spread']:.0f}%{mark}{'' if r['reliable'] else ' †'}"


def markdown(rows: List[Dict[str, Any]], header: str) -> str:
    sizes = sorted({r["n"] for r in rows})
    lines = [
        header,
        "",
        "Ratio of forward+backward times, ours / torch.nn: the median over adjacent blocks of runs "
        "(a few milliseconds each, ours then torch.nn, alternating), ± the spread of those ratios "
        "(interquartile range / median). Targets: eager at most "
        f"{EAGER_SMALL} below N = {LARGE} and {EAGER_LARGE} from N = {LARGE}; compiled at most {COMPILED}. "
        "✗ marks a figure above its target, † one with a spread above "
        f"{timing.UNRELIABLE:.0%} (the machine was busy: read it as unreliable either way).",
    ]
    for mode in MODES:
        groups = _groups(rows, mode)
        if not groups:
            continue
        title = "eager" if mode == "eager" else "torch.compile(fullgraph=True, dynamic=True), both sides"
        lines += ["", f"### {title}", ""]
        lines += ["| loss | configuration | " + " | ".join(f"N={n}" for n in sizes) + " | meets target |"]
        lines += ["|---|---|" + "---:|" * len(sizes) + "---|"]
        failures: List[str] = []
        for (label, config), group in groups.items():
            by_size = {r["n"]: r for r in group}
            cells = [_cell(by_size[n]) if n in by_size else "" for n in sizes]
            failed = next((r["failed"] for r in group if r.get("failed")), None)
            missed = [r for r in group if r["meets"] is False]
            if failed is not None:
                failures.append(f"- {label}, {config}: {failed}")
                verdict = "not comparable" if not missed else "**no** (ours does not compile)"
            else:
                verdict = "yes" if not missed else "**no** (N=" + ", ".join(str(r["n"]) for r in missed) + ")"
            lines.append(f"| {label} | {config} | " + " | ".join(cells) + f" | {verdict} |")
        comparable = [g for g in groups.values() if any(r["meets"] is not None for r in g)]
        met = sum(1 for g in comparable if all(r["meets"] for r in g))
        lines += ["", f"{met} of {len(comparable)} rows meet their target at every size."]
        if failures:
            lines += ["", "Figures not taken (one side does not compile with `fullgraph=True`):", ""] + failures
    return "\n".join(lines) + "\n"


def plot(rows: List[Dict[str, Any]], path: str) -> bool:
    """Ratio against size, one panel per loss (eager solid, compiled dashed, a colour per
    configuration, the targets in grey); False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = list(dict.fromkeys(_label(r) for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    columns = min(4, len(labels))
    lines_of_panels = -(-len(labels) // columns)
    fig, axes = plt.subplots(lines_of_panels, columns, figsize=(4.2 * columns, 3.2 * lines_of_panels), squeeze=False)
    colours = {c: f"C{i}" for i, c in enumerate(configs)}
    for ax, label in zip(axes.flat, labels):
        for mode, style in (("eager", "-"), ("compiled", "--")):
            for config in configs:
                pts = sorted((r["n"], r["ratio"], r["spread"]) for r in rows if _label(r) == label and
                             r["mode"] == mode and r["config"] == config and r["ratio"] is not None)  # fmt: skip
                if pts:
                    ns, ratios, spreads = zip(*pts)
                    errors = [q * s for q, s in zip(ratios, spreads)]
                    ax.errorbar(ns, ratios, yerr=errors, fmt=style, marker="o", markersize=3, capsize=2,
                                color=colours[config], label=f"{config}, {mode}")  # fmt: skip
        # the ratios, not the error bars of a busy machine, set the scale
        highest = max((r["ratio"] for r in rows if _label(r) == label and r["ratio"] is not None), default=1.0)
        ax.set_ylim(0.0, min(4.0, max(1.5, 1.2 * highest)))
        sizes = sorted({r["n"] for r in rows})
        ax.step(sizes, [target("eager", n) for n in sizes], where="pre", color="grey", linewidth=0.8)
        ax.axhline(1.0, color="black", linewidth=0.5)
        ax.set_xscale("log", base=2)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("batch N")
        ax.set_ylabel("ours / torch.nn")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    legend: Dict[str, Any] = {}  # every configuration and mode drawn, from whichever panel has it
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(4, len(legend)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"


def run(
    out_dir: str,
    losses: Optional[Sequence[str]] = None,
    sizes: Sequence[int] = SIZES,
    modes: Sequence[str] = MODES,
    classes: Sequence[int] = (1000, 32000),
    budget: float = 1.0,
) -> Dict[str, str]:
    """Measure and write ``sweep.json``, ``sweep.md`` and (with matplotlib) ``sweep.png`` in
    ``out_dir``; returns the paths written. Records the machine's load average (1 minute) at
    the start and the end: figures taken under load are not worth much."""
    from exportable_loss.bench.suite import machine

    chosen = cases(losses, classes)
    if any(n < 1 for n in sizes):
        raise ValueError(f"every size must be at least 1; got {list(sizes)}")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; the modes are {', '.join(MODES)}")
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"sweep.{k}") for k in ("json", "md", "png")}
    for path in paths.values():
        check_writable(path)
    started, load = time.time(), _load()
    rows = measure(chosen, sizes, modes, budget, Progress(len(chosen) * len(modes) * len(sizes), "sweep"))
    info = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load": f"{load} -> {_load()}",
        "minutes": round((time.time() - started) / 60, 1),
        "budget": budget,
        "threshold": timing.UNRELIABLE,
    }
    write_text(paths["json"], json.dumps({**info, "rows": rows}, indent=1))
    header = (
        f"Measured by `exportable-loss bench --sweep` on {info['machine']}, {info['date']}, in "
        f"{info['minutes']} minutes; load average (1 minute) at the start and the end: {info['load']}."
    )
    write_text(paths["md"], markdown(rows, header))
    written = {k: paths[k] for k in ("json", "md")}
    if plot(rows, paths["png"]):
        written["png"] = paths["png"]
    return written
