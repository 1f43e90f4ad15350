"""One small API over the export formats: write, reload, verify against eager at another batch
size, and report."""

import dataclasses
import inspect
import json
import os
import tempfile
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from exportable_loss.export.onnx import DEFAULT_OPSET, check_onnx_model, export_onnx, run_onnx

FORMATS = ("onnx", "torchscript", "pt2")
TOLERANCES = {"onnx": (1e-4, 1e-5), "torchscript": (1e-5, 1e-6), "pt2": (1e-5, 1e-6)}


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why in one line."""


@dataclasses.dataclass
class TensorSpec:
    name: str
    shape: List[object]  # ints, "batch" where the dimension is dynamic
    dtype: str


@dataclasses.dataclass
class ExportReport:
    path: str
    format: str
    exporter: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    example_batch: int
    verified_batch: int
    max_abs_error: float
    max_rel_error: float
    rtol: float
    atol: float
    passed: bool

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        def specs(items: List[TensorSpec]) -> str:
            return ", ".join(f"{s.name}{list(s.shape)}:{s.dtype}" for s in items)

        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict} {self.format} ({self.exporter}) {self.path}\n"
            f"  inputs:  {specs(self.inputs)}\n"
            f"  outputs: {specs(self.outputs)}\n"
            f"  verified against eager at batch {self.verified_batch} (example batch {self.example_batch}): "
            f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
            f"(rtol {self.rtol:g}, atol {self.atol:g})"
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def _other_batch(args: Sequence[Tensor], batched: Sequence[bool], extra: int = 3) -> Tuple[Tensor, ...]:
    """The example inputs at batch N + extra: rows repeated, unbatched inputs unchanged."""
    out = []
    for a, b in zip(args, batched):
        if not b:
            out.append(a)
            continue
        reps = -(-(a.shape[0] + extra) // max(a.shape[0], 1))
        out.append(torch.cat([a] * reps)[: a.shape[0] + extra])
    return tuple(out)


def _forward_names(module: nn.Module) -> List[str]:
    try:
        return [p for p in inspect.signature(module.forward).parameters if p not in ("args", "kwargs")]
    except (TypeError, ValueError):
        return []


def _specs(names: Sequence[str], tensors: Sequence[Tensor], batched: Sequence[bool]) -> List[TensorSpec]:
    return [
        TensorSpec(
            n, ["batch" if b and i == 0 else d for i, d in enumerate(t.shape)], str(t.dtype).replace("torch.", "")
        )
        for n, t, b in zip(names, tensors, batched)
    ]


def _errors(got: Sequence[Tensor], want: Sequence[Tensor]) -> Tuple[float, float, bool, bool]:
    max_abs = max_rel = 0.0
    shapes_ok = True
    for g, w in zip(got, want):
        w = w.detach().cpu()
        g = g.detach().cpu().to(w.dtype)
        if g.shape != w.shape:
            shapes_ok = False
            continue
        if g.numel():
            diff = (g.double() - w.double()).abs()
            max_abs = max(max_abs, diff.max().item())
            max_rel = max(max_rel, (diff / w.double().abs().clamp_min(1e-12)).max().item())
    return max_abs, max_rel, shapes_ok, len(got) == len(want)


def _check_destination(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ExportError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"output folder {folder} is not writable")
    return folder


def export(
    module: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str,
    format: str = "onnx",
    dynamo: bool = True,
    opset: int = DEFAULT_OPSET,
    verify_inputs: Optional[Sequence[Tensor]] = None,
    input_names: Optional[Sequence[str]] = None,
    batch_inputs: Optional[Sequence[bool]] = None,
) -> ExportReport:
    """Export ``module(*example_inputs)`` with a dynamic batch dimension, reload it, and verify
    it against eager PyTorch on inputs of another batch size.

    Args:
        module: the module to export (a loss, or a model with its loss).
        example_inputs: tensors; the batched ones share the batch dimension 0.
        path: the file to write (written atomically: on an error no partial file is left).
        format: ``"onnx"`` (run in onnxruntime), ``"torchscript"`` (``torch.jit.script``,
            saved and reloaded) or ``"pt2"`` (``torch.export``, saved and reloaded).
        dynamo: for ONNX, the ``dynamo=True`` exporter (default) or the TorchScript one.
        opset: ONNX opset.
        verify_inputs: inputs to verify on; default the examples at batch size N + 3.
        input_names: graph input names (ONNX); default the names of ``module.forward``'s parameters.
        batch_inputs: which inputs have the batch dimension; default every input with a
            dimension (pass False for a parameter such as a classifier matrix).

    Returns:
        An [ExportReport][exportable_loss.export.api.ExportReport]; ``passed`` is False when the
        reloaded artifact disagrees with eager beyond the format's tolerance.

    Raises:
        ExportError: unknown format, inputs the module rejects, or an unwritable destination.

    Examples:
        >>> from exportable_loss import CrossEntropyLoss
        >>> loss = CrossEntropyLoss(reduction="per_sample")
        >>> report = export(loss, (torch.randn(6, 5), torch.randint(0, 5, (6,))), "ce.onnx")
        >>> report.passed, report.outputs[0].name
        (True, 'loss')
    """
    if format not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    args = tuple(example_inputs)
    if not args or not all(isinstance(a, Tensor) for a in args):
        raise ExportError("example_inputs must be a non-empty sequence of tensors")
    folder = _check_destination(path)
    batched = list(batch_inputs) if batch_inputs is not None else [a.dim() > 0 for a in args]
    if len(batched) != len(args) or any(b and a.dim() == 0 for a, b in zip(args, batched)):
        raise ExportError("batch_inputs must give one flag per example input, False for 0-dim inputs")
    sizes = {a.shape[0] for a, b in zip(args, batched) if b}
    if len(sizes) > 1:
        raise ExportError(f"every batched example input must share dim 0; got sizes {sorted(sizes)}")
    try:
        example_out = module(*args)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ExportError(f"the module rejects the example inputs: {e}") from e
    if sizes and min(sizes) < 2:
        raise ExportError("the example batch must have at least 2 samples (a batch of 1 is specialised by the tracers)")
    verify = tuple(verify_inputs) if verify_inputs is not None else _other_batch(args, batched)
    names = list(input_names) if input_names is not None else _forward_names(module)[: len(args)]
    if len(names) < len(args):
        names += [f"input_{i}" for i in range(len(names), len(args))]

    suffix = os.path.splitext(path)[1] or "." + format
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=suffix, prefix=".exporting-")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = module(*verify)
            if format == "onnx":
                export_onnx(module, args, tmp, dynamo=dynamo, opset=opset, input_names=names, batch_inputs=batched)
                got = run_onnx(tmp, verify)
                check_onnx_model(tmp, [want] if isinstance(want, Tensor) else list(want))
            elif format == "torchscript":
                scripted = torch.jit.script(module)
                torch.jit.save(scripted, tmp)
                got = torch.jit.load(tmp)(*verify)
            else:
                batch = torch.export.Dim("batch", min=2)
                program = torch.export.export(
                    module, args, dynamic_shapes=tuple({0: batch} if b else None for b in batched)
                )
                torch.export.save(program, tmp)
                got = torch.export.load(tmp).module()(*verify)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    got_list = [got] if isinstance(got, Tensor) else list(got)
    want_list = [want] if isinstance(want, Tensor) else list(want)
    max_abs, max_rel, shapes_ok, count_ok = _errors(got_list, want_list)
    rtol, atol = TOLERANCES[format]
    passed = (
        shapes_ok
        and count_ok
        and all(
            torch.allclose(g.detach().cpu().to(w.dtype), w.detach().cpu(), rtol=rtol, atol=atol, equal_nan=True)
            for g, w in zip(got_list, want_list)
        )
    )
    out_examples = [example_out] if isinstance(example_out, Tensor) else list(example_out)
    out_batched = [o.dim() > 0 and o.shape[0] == args[0].shape[0] for o in out_examples]
    return ExportReport(
        path=path,
        format=format,
        exporter=("dynamo" if dynamo else "torchscript") if format == "onnx" else format,
        inputs=_specs(names, args, batched),
        outputs=_specs([f"output_{i}" if i else "loss" for i in range(len(out_examples))], out_examples, out_batched),
        example_batch=args[0].shape[0] if args[0].dim() else 0,
        verified_batch=verify[0].shape[0] if verify[0].dim() else 0,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        rtol=rtol,
        atol=atol,
        passed=passed,
    )
