"""Dynamic dimensions of an export, named: ``{dim: label}`` per input, where inputs that share a
label share that size (``"batch"`` on dim 0 by default). One description serves every format:
``torch.export.Dim`` objects for torch.export and the dynamo ONNX exporter, ``dynamic_axes``
for the TorchScript ONNX exporter, and the other sizes the reloaded artifact is verified at."""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

# One {dim: label} (or None: static) per input, by position or by input name.
DynamicShapes = Union[Sequence[Optional[Mapping[int, str]]], Mapping[str, Optional[Mapping[int, str]]]]
Dims = List[Dict[int, str]]


def resolve(
    names: Sequence[str],
    args: Sequence[Tensor],
    dynamic_shapes: Optional[DynamicShapes],
    batch_inputs: Optional[Sequence[bool]],
) -> Dims:
    """One ``{dim: label}`` per input, checked: default ``{0: "batch"}`` for every batched input
    (``batch_inputs``, default every input with a dimension). ``ValueError`` naming the problem."""
    if dynamic_shapes is not None and batch_inputs is not None:
        raise ValueError("give dynamic_shapes or batch_inputs, not both (dynamic_shapes names the batch dimension too)")
    if dynamic_shapes is None:
        batched = list(batch_inputs) if batch_inputs is not None else [a.dim() > 0 for a in args]
        if len(batched) != len(args) or any(b and a.dim() == 0 for a, b in zip(args, batched)):
            raise ValueError("batch_inputs must give one flag per example input, False for 0-dim inputs")
        return [{0: "batch"} if b else {} for b in batched]
    if isinstance(dynamic_shapes, Mapping):
        unknown = sorted(set(dynamic_shapes) - set(names))
        if unknown:
            raise ValueError(f"dynamic_shapes names unknown inputs {unknown}; the inputs are {', '.join(names)}")
        given = [dynamic_shapes.get(n) for n in names]
    else:
        given = list(dynamic_shapes)
        if len(given) != len(args):
            raise ValueError(f"dynamic_shapes must have one entry per input ({len(args)}); got {len(given)}")
    dims: Dims = [dict(d or {}) for d in given]
    sizes: Dict[str, int] = {}
    for name, a, d in zip(names, args, dims):
        for dim, label in d.items():
            if not isinstance(dim, int) or not -a.dim() <= dim < a.dim():
                raise ValueError(f"dynamic dimension {dim!r} of {name} is out of range: {name} has {a.dim()} dims")
            if not isinstance(label, str) or not label.isidentifier():
                raise ValueError(f"a dynamic dimension's label must be an identifier such as 'batch'; got {label!r}")
            size = a.shape[dim]
            if size < 2:
                raise ValueError(
                    f"dynamic dimension {label} ({name} dim {dim}) has example size {size}; the tracers "
                    "specialise sizes 0 and 1, give an example of size 2 or more"
                )
            if sizes.setdefault(label, size) != size:
                raise ValueError(f"dynamic dimension {label} has example sizes {sizes[label]} and {size} ({name})")
    return [{dim % a.dim(): label for dim, label in d.items()} for a, d in zip(args, dims)]


def sizes(args: Sequence[Tensor], dims: Dims) -> Dict[str, int]:
    """The size of each label in ``args``."""
    return {label: a.shape[dim] for a, d in zip(args, dims) for dim, label in d.items()}


def torch_dims(dims: Dims) -> Tuple[Optional[Dict[int, object]], ...]:
    """``dynamic_shapes`` for ``torch.export``/the dynamo exporter: one ``Dim`` per label."""
    labels = {label: torch.export.Dim(label, min=2) for d in dims for label in d.values()}
    return tuple({dim: labels[label] for dim, label in d.items()} or None for d in dims)


def dynamic_axes(names: Sequence[str], dims: Dims) -> Dict[str, Dict[int, str]]:
    """``dynamic_axes`` for the TorchScript ONNX exporter."""
    return {n: dict(d) for n, d in zip(names, dims) if d}


def grown(args: Sequence[Tensor], dims: Dims, extra: int = 3) -> Tuple[Tensor, ...]:
    """The inputs with every dynamic dimension ``extra`` larger (slices repeated in order), the
    others unchanged: inputs of other sizes to verify an artifact on."""
    out = []
    for a, d in zip(args, dims):
        for dim in d:
            size = a.shape[dim]
            reps = -(-(size + extra) // size)
            a = torch.cat([a] * reps, dim=dim).narrow(dim, 0, size + extra)
        out.append(a)
    return tuple(out)


def labelled_shape(shape: Sequence[int], dynamic: Mapping[int, str]) -> List[object]:
    """``shape`` with the label in place of each dynamic dimension."""
    return [dynamic.get(i, s) for i, s in enumerate(shape)]


def output_dims(example: Tensor, verified: Tensor, label_sizes: Mapping[str, Tuple[int, int]]) -> Dict[int, str]:
    """The dynamic dimensions of an output: those whose size changed between the example and the
    verification inputs, labelled by the input label of the same two sizes (else ``"dynamic"``)."""
    out = {}
    for i, (a, b) in enumerate(zip(example.shape, verified.shape)):
        if a != b:
            match = [label for label, pair in label_sizes.items() if pair == (a, b)]
            out[i] = match[0] if len(match) == 1 else "dynamic"
    return out
