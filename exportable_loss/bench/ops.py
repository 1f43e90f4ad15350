"""``exportable-loss bench --ops``: the ATen operators one forward+backward runs, ours against
``torch.nn`` (the baselines of ``exportable_loss.bench.cases``), in eager mode on the CPU.

Each operator is one dispatch on a CPU and one kernel launch on a GPU: on small batches their
count, not the arithmetic, sets the time. They are counted with a ``TorchDispatchMode`` (every
call that reaches the kernels, backward included); views (``view``, ``expand``, ``unsqueeze``,
...) are counted apart, since they move no data.
"""

import collections
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from exportable_loss.bench.cases import Case, cases, step

BATCH = 64  # the counts do not depend on it (a squeeze more or less at batch 1)


def _moves_no_data(func: Any) -> bool:
    """A view (its output aliases an input without writing it: ``view``, ``expand``,
    ``detach``, ...)."""
    returns = func._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Dict[str, int] = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if _moves_no_data(func):
            self.views += 1
        else:
            self.ops[str(func.overloadpacket).replace("aten.", "")] += 1
        return func(*args, **(kwargs or {}))


def count(run: Callable[[], None]) -> Dict[str, Any]:
    """The ATen operators ``run`` dispatches (after one warm-up call): ``{"compute": n,
    "views": m, "ops": {name: count}}``, the data-moving ones by name."""
    run()
    with _Counter() as counter:
        run()
    return {"compute": sum(counter.ops.values()), "views": counter.views, "ops": dict(counter.ops)}


def measure(chosen: Optional[Sequence[Case]] = None, batch: int = BATCH) -> List[Dict[str, Any]]:
    """One row per case: the operators of ours and of the baseline, by name and in total."""
    rows = []
    for case in cases(classes=(1000,)) if chosen is None else chosen:
        args = case.inputs(batch)
        rows.append(
            {
                "loss": case.loss,
                "config": case.config,
                "reduction": case.reduction,
                "ours": count(step(case.ours(), args)),
                "torch.nn": count(step(case.baseline(), args)),
            }
        )
    return rows


def markdown(rows: List[Dict[str, Any]], header: str) -> str:
    lines = [
        header,
        "",
        "ATen operators per forward+backward in eager mode (data-moving ones; views such as `view`, "
        "`expand`, `detach` in brackets); the baseline for sample weights is `torch.nn`'s "
        '`reduction="none"` loss weighted and reduced by hand.',
        "",
        "| loss | configuration | reduction | ours | torch.nn | ours - torch.nn |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        o, b = r["ours"], r["torch.nn"]
        lines.append(
            f"| {r['loss']} | {r['config']} | {r['reduction']} | {o['compute']} ({o['views']}) | "
            f"{b['compute']} ({b['views']}) | {o['compute'] - b['compute']:+d} |"
        )
    return "\n".join(lines) + "\n"


def run(out_dir: str, losses: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Count and write ``ops.json`` and ``ops.md`` in ``out_dir``."""
    import json
    import os

    from exportable_loss._io import check_writable, write_text

    chosen = cases(losses, classes=(1000,))
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"ops.{k}") for k in ("json", "md")}
    for path in paths.values():
        check_writable(path)
    rows = measure(chosen)
    write_text(paths["json"], json.dumps({"torch": torch.__version__, "batch": BATCH, "rows": rows}, indent=1))
    header = f"Counted by `exportable-loss bench --ops` (torch {torch.__version__}, batch {BATCH}, C = 1000)."
    write_text(paths["md"], markdown(rows, header))
    return paths
