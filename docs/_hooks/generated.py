"""MkDocs hook: tables generated from the losses' declarations (``LossSpec``), so the pages
cannot fall behind the code. A page asks for one with a marker comment:

    <!-- generated: losses -->
"""

import exportable_loss  # noqa: F401  (declares every loss)
from exportable_loss._registry import specs


def losses_table() -> str:
    rows = [
        '| name (CLI) | module | functional | reductions | `backend="triton"` runs |',
        "|---|---|---|---|---|",
    ]
    for spec in specs().values():
        kernel = f"`triton_kernels/{spec.kernel}.py`" if spec.kernel else "the PyTorch code (no kernel)"
        reductions = ", ".join(f"`{r}`" for r in spec.reductions)
        rows.append(
            f"| `{spec.name}` | `{spec.module.__name__}` | `{spec.function.__name__}` | {reductions} | {kernel} |"
        )
    return "\n".join(rows)


def step_losses_table() -> str:
    from exportable_loss import catalog
    from exportable_loss.export.step import step_losses

    rows = ["| loss | backends |", "|---|---|"]
    for name in step_losses():
        rows.append(f"| `{name}` | {', '.join(f'`{b}`' for b in catalog.get(name).backends)} |")
    return "\n".join(rows)


def position_weight_losses() -> str:
    """The losses whose ``sample_weight`` may hold one weight per position (``LossSpec.positions``)."""
    return ", ".join(f"`{spec.function.__name__}`" for spec in specs().values() if spec.positions is not None)


TABLES = {
    "<!-- generated: losses -->": losses_table,
    "<!-- generated: position-weight losses -->": position_weight_losses,
    "<!-- generated: step-losses -->": step_losses_table,
}


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    for marker, table in TABLES.items():
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return markdown
