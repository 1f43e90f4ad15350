"""The compatibility matrix: every loss x reduction x backend x path, each verified against
eager PyTorch with sample weights at a batch size other than the example's. The CLI's
``exportable-loss matrix`` prints what :func:`run` returns."""

import os
import sys
import tempfile
import time
import traceback
from typing import List, Optional, Sequence

import torch

from exportable_loss import catalog
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


def _progress(done: int, total: int, label: str, start: float) -> None:
    if not sys.stderr.isatty() and done not in (total,) and done % 10:
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {time.time() - start:5.0f}s {label[:40]:<40}"
    )
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


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


def matrix_rows(
    losses: Sequence[str],
    reductions: Optional[Sequence[str]],
    backends: Sequence[str],
    paths: Sequence[str],
    verbose: bool,
) -> List[List[str]]:
    cells = [
        (name, r, b, p)
        for name in losses
        for r in catalog.get(name).reductions
        if reductions is None or r in reductions
        for b in backends
        if b in catalog.get(name).backends
        for p in paths
    ]
    rows: List[List[str]] = []
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        for i, (name, reduction, backend, path) in enumerate(cells):
            _progress(i, len(cells), f"{name} {reduction} {backend} {path}", start)
            try:
                err = verify_path(catalog.get(name), reduction, backend, path, folder)
                status = "pass" if err != float("inf") else "FAIL"
                detail = f"{err:.1e}" if status == "pass" else "mismatch"
            except Exception as e:  # a cell that fails to export is a FAIL row, not an abort
                status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
                if verbose:
                    traceback.print_exc()
            rows.append([name, reduction, backend, path, status, detail])
        _progress(len(cells), len(cells), "done", start)
    return rows


def run(
    losses: Sequence[str],
    reductions: Optional[Sequence[str]],
    backends: Sequence[str],
    paths: Sequence[str],
    verbose: bool = False,
) -> List[List[str]]:
    """One row ``[loss, reduction, backend, path, "pass" | "FAIL", detail]`` per cell; a loss
    lists only the backends that run code of their own (a kernel's)."""
    cells = [
        (name, r, b, p)
        for name in losses
        for r in catalog.get(name).reductions
        if reductions is None or r in reductions
        for b in backends
        if b in catalog.get(name).backends
        for p in paths
    ]
    rows: List[List[str]] = []
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        for i, (name, reduction, backend, path) in enumerate(cells):
            _progress(i, len(cells), f"{name} {reduction} {backend} {path}", start)
            try:
                err = verify_path(catalog.get(name), reduction, backend, path, folder)
                status = "pass" if err != float("inf") else "FAIL"
                detail = f"{err:.1e}" if status == "pass" else "mismatch"
            except Exception as e:  # a cell that fails to export is a FAIL row, not an abort
                status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
                if verbose:
                    traceback.print_exc()
            rows.append([name, reduction, backend, path, status, detail])
        _progress(len(cells), len(cells), "done", start)
    return rows


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
