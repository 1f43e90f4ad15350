"""The compatibility matrix: every loss x reduction x backend x path, each verified against
eager PyTorch with sample weights at a batch size other than the example's. The CLI's
``exportable-loss matrix`` prints what ``run`` returns."""

import os
import tempfile
import traceback
from typing import List, Optional, Sequence, Tuple

import torch

from exportable_loss import catalog
from exportable_loss._io import Progress
from exportable_loss.export import export

PATHS = ("script", "compile", "export", "onnx-dynamo", "onnx-torchscript")
# the file and export() format of each path but compile
ARTIFACTS = {
    "script": ("m.pt", "torchscript"),
    "export": ("m.pt2", "pt2"),
    "onnx-dynamo": ("m.onnx", "onnx"),
    "onnx-torchscript": ("m.onnx", "onnx"),
}
BACKENDS = ("torch", "triton")


def verify_path(entry: catalog.LossEntry, reduction: str, backend: str, path: str, folder: str) -> float:
    """Max abs error of one loss on one path against eager, with sample weights, at batch 9."""
    module = entry.make(reduction, backend)
    example = entry.example(6, True)
    batched = entry.batch_inputs(example)
    if path != "compile":
        file, format = ARTIFACTS[path]
        report = export(
            module, example, os.path.join(folder, file), format, dynamo=path == "onnx-dynamo", batch_inputs=batched
        )
        return report.max_abs_error if report.passed else float("inf")
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend="aot_eager")
    worst = 0.0
    for i, n in enumerate((6, 9, 11)):
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            got, want = compiled(*entry.example(n, True)), module(*entry.example(n, True))
        if not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
            return float("inf")
        worst = max(worst, (got - want).abs().max().item() if got.numel() else 0.0)
    return worst


Cell = Tuple[str, str, str, str]


def cells(
    losses: Sequence[str], reductions: Optional[Sequence[str]], backends: Sequence[str], paths: Sequence[str]
) -> List[Cell]:
    """The cells ``(loss, reduction, backend, path)`` to verify: each loss's own reductions
    (those of ``reductions``, default all) and the backends with code of their own (a kernel's).
    ``ValueError`` when a name is unknown or nothing is left to run."""
    entries = [catalog.get(name) for name in losses]
    for name, choices, known in (
        ("path", paths, PATHS),
        ("backend", backends, BACKENDS),
        ("reduction", reductions or [], catalog.REDUCTIONS),
    ):
        unknown = [c for c in choices if c not in known]
        if unknown:
            raise ValueError(f"unknown {name} {unknown[0]!r}; the {name}s are {', '.join(known)}")
    found = [
        (e.name, r, b, p)
        for e in entries
        for r in e.reductions
        if reductions is None or r in reductions
        for b in backends
        if b in e.backends
        for p in paths
    ]
    if not found:
        offered = ", ".join(f"{e.name}: {'/'.join(e.reductions)} on {'/'.join(e.backends)}" for e in entries)
        raise ValueError(f"nothing to run: no selected loss has the reductions and backends asked for ({offered})")
    return found


def run_cells(selected: Sequence[Cell], verbose: bool = False) -> List[List[str]]:
    """One row ``[loss, reduction, backend, path, "pass" | "FAIL", detail]`` per cell."""
    rows: List[List[str]] = []
    progress = Progress(len(selected), "matrix")
    with tempfile.TemporaryDirectory() as folder:
        for name, reduction, backend, path in selected:
            try:
                err = verify_path(catalog.get(name), reduction, backend, path, folder)
                status = "pass" if err != float("inf") else "FAIL"
                detail = f"{err:.1e}" if status == "pass" else "mismatch"
            except Exception as e:  # a cell that fails to export is a FAIL row, not an abort
                status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
                if verbose:
                    traceback.print_exc()
            rows.append([name, reduction, backend, path, status, detail])
            progress.step(f"{name} {reduction} {backend} {path}")
    return rows


def run(
    losses: Sequence[str],
    reductions: Optional[Sequence[str]],
    backends: Sequence[str],
    paths: Sequence[str],
    verbose: bool = False,
) -> List[List[str]]:
    """The rows of :func:`run_cells` for the :func:`cells` of this selection."""
    return run_cells(cells(losses, reductions, backends, paths), verbose)


def markdown(rows: List[List[str]]) -> str:
    lines = [
        "| loss | reduction | backend | path | result | max abs error |",
        "|---|---|---|---|---|---:|",
        *(f"| {' | '.join(r)} |" for r in rows),
    ]
    return "\n".join(lines)


def page(table: str) -> str:
    """The docs page around the table."""
    return (
        f"Generated by `exportable-loss matrix` (torch {torch.__version__}); every cell verifies the path "
        "against eager PyTorch with sample weights at a batch size other than the example's. "
        "A loss without kernels of its own lists the torch backend only: every backend runs the same "
        "code.\n\n" + table + "\n"
    )
