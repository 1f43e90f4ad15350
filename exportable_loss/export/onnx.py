"""ONNX export with dynamic dimensions, a strict check of the file, and onnxruntime.

onnx, onnxscript and onnxruntime are the ``onnx`` extra (``gpu``: onnxruntime-gpu instead of
onnxruntime): the losses need only torch, and each function here imports what it needs when
called, with an error naming the extra when it is missing.
"""

import contextlib
import importlib
import io
import logging
import os
import warnings
from types import ModuleType
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from exportable_loss._io import atomic_path
from exportable_loss.export import dims as _dims

# Both exporters translate our losses to standard operators; 18 is the first opset where the
# reductions take their axes as an input, which both exporters and onnxruntime 1.17+ support.
DEFAULT_OPSET = 18
STANDARD_DOMAINS = ("", "ai.onnx")
INSTALL_HINT = "pip install 'exportable-loss[onnx]' (or 'exportable-loss[gpu]' for onnxruntime-gpu)"


def require(module: str) -> ModuleType:
    """Import ``module`` (onnx, onnxscript, onnxruntime); ``ImportError`` naming the extra if it
    is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is not installed; ONNX export and onnxruntime need it: {INSTALL_HINT}") from e


def _input_names(count: int) -> List[str]:
    return (
        ["input", "target", "sample_weight", "normalizer"][:count]
        if count <= 4
        else [f"input_{i}" for i in range(count)]
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters print progress, deprecation warnings and notes on optional packages
    # (torchvision) that are not the caller's concern.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    module: nn.Module,
    args: Sequence[Tensor],
    path: str,
    dynamo: bool = True,
    opset: int = DEFAULT_OPSET,
    input_names: Optional[Sequence[str]] = None,
    batch_inputs: Optional[Sequence[bool]] = None,
    dynamic_shapes: Optional[_dims.DynamicShapes] = None,
) -> str:
    """Export ``module(*args)`` to ONNX at ``path`` (written atomically) with dynamic dimensions.

    Args:
        module: the module to export, e.g. a loss.
        args: example inputs; 0-dim tensors (a normalizer) are never batched.
        path: the ``.onnx`` file to write.
        dynamo: the ``dynamo=True`` exporter (default) or the TorchScript one.
        opset: ONNX opset version.
        input_names: graph input names; default ``input, target, sample_weight, normalizer``.
        batch_inputs: which inputs share the dynamic batch dimension (dim 0); default every
            input with at least one dimension.
        dynamic_shapes: instead of ``batch_inputs``, every dynamic dimension: one
            ``{dim: label}`` per input (by position, or a dict by input name); inputs that share
            a label share that size, e.g. ``{"input": {0: "batch", 2: "T"}, "target": {0:
            "batch", 1: "T"}}``.

    Returns:
        ``path``.

    Examples:
        >>> from exportable_loss import MSELoss
        >>> path = export_onnx(MSELoss(reduction="per_sample"), (torch.randn(6, 3), torch.randn(6, 3)), "mse.onnx")
        >>> x, y = torch.ones(9, 3), torch.zeros(9, 3)   # another batch size
        >>> run_onnx(path, (x, y))[0]
        tensor([1., 1., 1., 1., 1., 1., 1., 1., 1.])
        >>> check_onnx_model(path, [MSELoss(reduction="per_sample")(x, y)])   # raises if not strict-clean
    """
    args = tuple(args)
    names = list(input_names) if input_names is not None else _input_names(len(args))
    dims = _dims.resolve(names, args, dynamic_shapes, batch_inputs)
    require("onnx")
    if dynamo:
        require("onnxscript")
    with atomic_path(path) as tmp, _quiet():
        if dynamo:
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                input_names=names,
                output_names=["loss"],
                dynamic_shapes=_dims.torch_dims(dims),
                opset_version=opset,
                verbose=False,
            )
            if program is None:  # typing: only the TorchScript exporter returns None
                raise RuntimeError("the dynamo ONNX exporter returned no program")
            program.save(tmp)
        else:
            torch.onnx.export(
                module,
                args,
                tmp,
                dynamo=False,
                input_names=names,
                output_names=["loss"],
                dynamic_axes=_dims.dynamic_axes(names, dims),
                opset_version=opset,
            )
        broadcast = [n for i, (n, d) in enumerate(zip(names, dims)) if _broadcasts(module, args, i, d)]
        tie_dynamic_dimensions(tmp, names, [a.dim() for a in args], dims, broadcast)
    return path


def _broadcasts(module: nn.Module, args: Sequence[Tensor], i: int, dims: Mapping[int, str]) -> bool:
    """Whether ``module`` accepts argument ``i`` with its dynamic dimensions of size 1
    (broadcast over the others', as Gaussian NLL does its variance); asked of the module."""
    if not dims:
        return False
    probe = list(args)
    for dim in dims:
        probe[i] = probe[i].narrow(dim, 0, 1)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module(*probe)
    except (ValueError, RuntimeError, IndexError):
        return False
    return True


def tie_dynamic_dimensions(
    path: str,
    names: Sequence[str],
    ranks: Sequence[int],
    dims: Sequence[Mapping[int, str]],
    broadcast_names: Sequence[str] = (),
) -> None:
    """Make the ONNX file at ``path`` fail on inputs whose sizes of one dynamic dimension differ.

    Both exporters give the inputs that share a label (``"batch"``) one symbolic size, and the
    traced graph takes them to agree: a target or ``sample_weight`` of batch 1 would broadcast,
    one of another batch size be gathered from, and a number come out. Here every input after
    the first one with a label is reshaped to that first one's size of it before anything reads
    it, so a mismatch is an onnxruntime error, as it is a ``ValueError`` in eager mode; the
    inputs in ``broadcast_names`` (size 1 is legal) are expanded instead. (``Shape`` with
    ``start``/``end`` and ``Reshape`` with ``allowzero``: onnxruntime's optimizer keeps them,
    while it folds a ``Reshape`` whose shape is gathered from ``Shape`` outputs.)
    """
    import onnx
    from onnx import helper

    model = onnx.load(path)
    graph = model.graph
    present = {i.name for i in graph.input}
    opset = next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), DEFAULT_OPSET)
    first: Dict[str, Tuple[str, int]] = {}  # label -> (input, dim) that defines its size
    nodes: List[onnx.NodeProto] = []
    renamed: Dict[str, str] = {}
    for name, rank, d in zip(names, ranks, dims):
        if name not in present:
            continue
        tied = {dim: first[label] for dim, label in d.items() if label in first}
        for dim, label in d.items():
            first.setdefault(label, (name, dim))
        if not tied:
            continue
        if opset < 15:
            raise ValueError(f"opset {opset} is too old to check dynamic sizes in the graph; use 15 or later")
        parts = []
        for j in range(rank):
            source, at = tied.get(j, (name, j))
            part = f"{name}__size{j}"
            nodes.append(helper.make_node("Shape", [source], [part], start=at, end=at + 1))
            parts.append(part)
        shape, out = f"{name}__tied_shape", f"{name}__tied"
        nodes.append(helper.make_node("Concat", parts, [shape], axis=0))
        if name in broadcast_names:
            nodes.append(helper.make_node("Expand", [name, shape], [out]))
        else:
            nodes.append(helper.make_node("Reshape", [name, shape], [out], allowzero=1))
        renamed[name] = out
    if not renamed:
        return
    for node in graph.node:
        for i, value in enumerate(node.input):
            if value in renamed:
                node.input[i] = renamed[value]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    onnx.save(model, path)


def run_onnx(path: str, args: Sequence[Tensor], providers: Optional[List[str]] = None) -> List[Tensor]:
    """Run an exported file in onnxruntime (CUDA provider when present) on torch tensors.

    Args:
        path: the ``.onnx`` file.
        args: inputs in the graph's input order.
        providers: onnxruntime execution providers; default CUDA when available, then CPU.

    Returns:
        The outputs as CPU tensors. See [export_onnx][exportable_loss.export.onnx.export_onnx] for an example.
    """
    run = inference_session(path, providers)
    names = [i.name for i in run.get_inputs()]
    feeds = {name: a.detach().cpu().numpy() for name, a in zip(names, args)}
    return [torch.from_numpy(o) for o in run.run(None, feeds)]


def inference_session(path: str, providers: Optional[List[str]] = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` (CUDA provider when present, then CPU):
    create it once and call its ``run`` for every batch, as an application does."""
    ort = require("onnxruntime")
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(path, providers=providers)


def check_onnx_model(path: str, outputs: Sequence[Tensor]) -> None:
    """Strict checks of an exported file; raises ``ValueError`` naming the first problem.

    The model passes ``onnx.checker.check_model(full_check=True)``, uses only standard ONNX
    operators, and declares each output with the rank of the matching tensor in ``outputs``.

    Args:
        path: the ``.onnx`` file.
        outputs: the eager outputs the model should declare (their ranks and static dims).

    See [export_onnx][exportable_loss.export.onnx.export_onnx] for an example.
    """
    onnx = require("onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise ValueError(f"{os.path.basename(path)} uses non-standard operators: {', '.join(custom)}")
    for declared, actual in zip(model.graph.output, outputs):
        tensor_type = declared.type.tensor_type
        if not tensor_type.HasField("shape"):
            raise ValueError(f"output {declared.name!r} declares no shape")
        dims = tensor_type.shape.dim
        if len(dims) != actual.dim():
            raise ValueError(
                f"output {declared.name!r} declares rank {len(dims)} but the model returns rank {actual.dim()}"
            )
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value != actual.shape[i]:
                raise ValueError(
                    f"output {declared.name!r} declares dim {i} = {d.dim_value} but the model returns {actual.shape[i]}"
                )
