"""One small API over the export formats: write, reload, verify against eager at another batch
size, and report."""

import dataclasses
import inspect
import json
import os
import warnings
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import Tensor, nn

from exportable_loss._io import atomic_path, check_writable
from exportable_loss.export import dims as _dims
from exportable_loss.export.onnx import DEFAULT_OPSET, check_onnx_model, export_onnx, run_onnx

FORMATS = ("onnx", "torchscript", "pt2")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth"), "pt2": (".pt2",)}
TOLERANCES = {"onnx": (1e-4, 1e-5), "torchscript": (1e-5, 1e-6), "pt2": (1e-5, 1e-6)}


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why in one line."""


@dataclasses.dataclass
class TensorSpec:
    name: str
    shape: List[object]  # ints, the label ("batch", ...) where the dimension is dynamic
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
    dynamic: Dict[str, List[int]] = dataclasses.field(default_factory=dict)  # label -> [example, verified] size
    # the operators of this library the artifact calls (backend="triton" TorchScript and pt2);
    # empty: standard operators only, it loads without exportable_loss
    library_ops: List[str] = dataclasses.field(default_factory=list)

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
            f"  verified against eager at {self._sizes()}:\n"
            f"    max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
            f"(rtol {self.rtol:g}, atol {self.atol:g})\n"
            + (
                f"  needs `import exportable_loss` before loading: it calls {', '.join(self.library_ops)}"
                if self.library_ops
                else "  standard operators only: loads without exportable_loss"
            )
        )

    def _sizes(self) -> str:
        if not self.dynamic:
            return "the example's sizes (no dynamic dimension)"
        verified = ", ".join(f"{k} {v[1]}" for k, v in self.dynamic.items())
        example = ", ".join(f"{k} {v[0]}" for k, v in self.dynamic.items())
        return f"{verified} (example {example})"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def _forward_names(module: nn.Module) -> List[str]:
    try:
        return [p for p in inspect.signature(module.forward).parameters if p not in ("args", "kwargs")]
    except (TypeError, ValueError):
        return []


def _specs(names: Sequence[str], tensors: Sequence[Tensor], dims: _dims.Dims) -> List[TensorSpec]:
    return [
        TensorSpec(n, _dims.labelled_shape(t.shape, d), str(t.dtype).replace("torch.", ""))
        for n, t, d in zip(names, tensors, dims)
    ]


def _script_library_ops(block: Union[torch._C.Graph, torch._C.Block]) -> Set[str]:
    """The ``exportable_loss::`` operators a TorchScript graph (or block) calls, branches included."""
    found: Set[str] = set()
    for node in block.nodes():
        if node.kind().startswith("exportable_loss::"):
            found.add(node.kind())
        for inner in node.blocks():
            found |= _script_library_ops(inner)
    return found


def _program_library_ops(program: torch.export.ExportedProgram) -> Set[str]:
    """The ``exportable_loss::`` operators a ``torch.export`` program calls."""
    return {
        node.target._schema.name
        for node in program.graph.nodes
        if getattr(node.target, "namespace", None) == "exportable_loss"
    }


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


def check_destination(path: str, format: Optional[str] = None) -> str:
    """The format of the file ``path`` (``format``, or the one its extension names), after
    checking that the extension matches it and that ``path`` can be written; ``ExportError``
    naming ``path`` otherwise. Cheap: call it before any work."""
    try:
        check_writable(path)
    except ValueError as e:
        raise ExportError(str(e)) from None
    suffix = os.path.splitext(path)[1].lower()
    if format is None:
        found = [f for f, suffixes in SUFFIXES.items() if suffix in suffixes]
        if not found:
            raise ExportError(f"cannot tell the format of {path!r} from its extension; {_suffix_help()}")
        format = found[0]
    if format not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if suffix not in SUFFIXES[format]:
        raise ExportError(f"{path!r} does not have the extension of format {format}; {_suffix_help()}")
    return format


def _suffix_help() -> str:
    return "expected " + ", ".join(f"{'/'.join(s)} for {f}" for f, s in SUFFIXES.items())


def export(
    module: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str,
    format: Optional[str] = None,
    dynamo: bool = True,
    opset: int = DEFAULT_OPSET,
    verify_inputs: Optional[Sequence[Tensor]] = None,
    input_names: Optional[Sequence[str]] = None,
    batch_inputs: Optional[Sequence[bool]] = None,
    dynamic_shapes: Optional[_dims.DynamicShapes] = None,
) -> ExportReport:
    """Export ``module(*example_inputs)`` with dynamic dimensions, reload it, and verify it
    against eager PyTorch on inputs where every dynamic dimension has another size.

    Args:
        module: the module to export (a loss, or a model with its loss).
        example_inputs: tensors; the batched ones share the batch dimension 0.
        path: the file to write: ``.onnx``, ``.pt``/``.pth`` (TorchScript) or ``.pt2``. Written
            atomically (on an error no partial file is left) with the usual permissions.
        format: ``"onnx"`` (run in onnxruntime), ``"torchscript"`` (``torch.jit.script``,
            saved and reloaded) or ``"pt2"`` (``torch.export``, saved and reloaded); default the
            one ``path``'s extension names.
        dynamo: for ONNX, the ``dynamo=True`` exporter (default) or the TorchScript one.
        opset: ONNX opset.
        verify_inputs: inputs to verify on; default the examples with every dynamic dimension
            3 larger.
        input_names: graph input names (ONNX); default the names of ``module.forward``'s parameters.
        batch_inputs: which inputs have the dynamic batch dimension 0; default every input with
            a dimension (pass False for a parameter such as a classifier matrix).
        dynamic_shapes: instead of ``batch_inputs``, every dynamic dimension: one
            ``{dim: label}`` per input (by position, or a dict by input name); inputs that share
            a label share that size. A TorchScript file is dynamic in every dimension anyway.

    Returns:
        An [ExportReport][exportable_loss.export.api.ExportReport]; ``passed`` is False when the
        reloaded artifact disagrees with eager beyond the format's tolerance.

    Raises:
        ExportError: unknown format, an extension that does not match it, inputs the module
            rejects, bad dynamic dimensions, or a destination that cannot be written; all
            checked before the export starts.

    Examples:
        >>> from exportable_loss import CrossEntropyLoss
        >>> loss = CrossEntropyLoss(reduction="per_sample")
        >>> report = export(loss, (torch.randn(6, 5), torch.randint(0, 5, (6,))), "ce.onnx")
        >>> report.passed, report.outputs[0].name, report.outputs[0].shape
        (True, 'loss', ['batch'])

        A per-sequence loss with a dynamic sequence length ``T`` as well:

        >>> logits, target = torch.randn(6, 5, 16), torch.randint(0, 5, (6, 16))
        >>> dynamic = {"input": {0: "batch", 2: "T"}, "target": {0: "batch", 1: "T"}}
        >>> report = export(loss, (logits, target), "seq.onnx", dynamic_shapes=dynamic)
        >>> report.passed, report.inputs[0].shape, report.dynamic
        (True, ['batch', 5, 'T'], {'batch': [6, 9], 'T': [16, 19]})
    """
    format = check_destination(path, format)
    args = tuple(example_inputs)
    if not args or not all(isinstance(a, Tensor) for a in args):
        raise ExportError("example_inputs must be a non-empty sequence of tensors")
    names = list(input_names) if input_names is not None else _forward_names(module)[: len(args)]
    if len(names) < len(args):
        names += [f"input_{i}" for i in range(len(names), len(args))]
    try:
        dims = _dims.resolve(names, args, dynamic_shapes, batch_inputs)
    except ValueError as e:
        raise ExportError(str(e)) from None
    batch_sizes = {a.shape[0] for a, d in zip(args, dims) if d.get(0) == "batch"}
    if len(batch_sizes) > 1:
        raise ExportError(f"every batched example input must share dim 0; got sizes {sorted(batch_sizes)}")
    try:
        example_out = module(*args)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ExportError(f"the module rejects the example inputs: {e}") from e
    verify = tuple(verify_inputs) if verify_inputs is not None else _dims.grown(args, dims)

    library_ops: Set[str] = set()  # ONNX files hold standard operators only (check_onnx_model)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = module(*verify)
        if format == "onnx":
            export_onnx(module, args, tmp, dynamo=dynamo, opset=opset, input_names=names, dynamic_shapes=dims)
            got = run_onnx(tmp, verify)
            check_onnx_model(tmp, [want] if isinstance(want, Tensor) else list(want))
        elif format == "torchscript":
            scripted = torch.jit.script(module)
            library_ops = _script_library_ops(scripted.inlined_graph)
            torch.jit.save(scripted, tmp)
            got = torch.jit.load(tmp)(*verify)
        else:
            program = torch.export.export(module, args, dynamic_shapes=_dims.torch_dims(dims))
            library_ops = _program_library_ops(program)
            torch.export.save(program, tmp)
            got = torch.export.load(tmp).module()(*verify)
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
    sizes = {k: (v, _dims.sizes(verify, dims)[k]) for k, v in _dims.sizes(args, dims).items()}
    out_examples = [example_out] if isinstance(example_out, Tensor) else list(example_out)
    out_dims = [_dims.output_dims(o, w, sizes) for o, w in zip(out_examples, want_list)]
    return ExportReport(
        path=path,
        format=format,
        exporter=("dynamo" if dynamo else "torchscript") if format == "onnx" else format,
        inputs=_specs(names, args, dims),
        outputs=_specs([f"output_{i}" if i else "loss" for i in range(len(out_examples))], out_examples, out_dims),
        example_batch=sizes["batch"][0] if "batch" in sizes else 0,
        verified_batch=sizes["batch"][1] if "batch" in sizes else 0,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        rtol=rtol,
        atol=atol,
        passed=passed,
        dynamic={k: list(v) for k, v in sizes.items()},
        library_ops=sorted(library_ops),
    )
