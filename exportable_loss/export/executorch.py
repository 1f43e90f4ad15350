"""Training steps for ExecuTorch's on-device training runtime (``executorch.extension.training``).

The ``.pte`` program's method ``forward`` takes ``(input, target[, sample_weight])`` and returns
the loss and the per-sample losses; the runtime's ``forward_backward`` also computes the gradient
of every trainable parameter (``named_gradients()``), and ``get_sgd_optimizer`` updates the
parameters the program holds (``named_parameters()``), all on the device.

How: ``torch.export`` of model + loss with the batch dimension dynamic up to ``max_batch``; every
custom op of this library (``backend="triton"``) replaced by its own PyTorch implementation
(custom ops do not lower to ExecuTorch); ``torch.export.experimental._export_forward_backward``
(private, marked unstable by PyTorch) for the joint forward-backward program in core ATen
operators; then ``executorch.exir.to_edge(...).to_executorch()``. ExecuTorch plans memory for the
largest batch it was told of: the runtime refuses larger ones, so ``max_batch`` is part of the
program (its constant method ``max_batch``) and ``ExecuTorchStep`` checks it.
"""

import contextlib
import copy
import dataclasses
import importlib.util
import json
import os
import re
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import torch
from torch import Tensor, nn

from exportable_loss._io import atomic_path, stderr_without
from exportable_loss.export.api import ExportError
from exportable_loss.export.step import _conv_backward, joint_program, per_sample_twin, step_format

TOLERANCE = 1e-5  # max abs error of loss, per-sample losses, gradients and parameters after SGD
SGD_STEPS = 20
_PREFIX = "model."  # the wrapper's name for the model: runtime names are model.<parameter>

Batch = Tuple[Tensor, ...]


# ExecuTorch's metadata asks for many packages a training step never imports (torchao,
# coremltools, scikit-learn, ...): it is installed without them, and the extra adds those it uses
INSTALL_HINT = "pip install --no-deps executorch==1.5.1 && pip install 'exportable-loss[executorch]'"


def available() -> bool:
    """Whether ExecuTorch is installed."""
    return importlib.util.find_spec("executorch") is not None


def _require() -> None:
    if not available():
        raise ImportError(f"executorch is not installed; ExecuTorch training steps need it: {INSTALL_HINT}")


# ------------------------------------------------------------------ export


def _own_implementation(op: torch._ops.OpOverload) -> Callable:
    """The Python function behind one of this library's ``torch.library`` custom ops: the op's
    PyTorch reference wherever the Triton kernels cannot run (a CPU tensor without the
    interpreter, as here)."""
    # CustomOpDef keeps the decorated function as _init_fn; torch.library has no public accessor
    opdef = torch._library.custom_ops._maybe_get_opdef(op._schema.name)
    if opdef is None:
        raise ExportError(f"the training step uses the custom op {op}, which ExecuTorch cannot run")
    return opdef._init_fn


def _inline_custom_ops(program: torch.export.ExportedProgram) -> None:
    """Call each of this library's custom ops' own implementation in place of the op: the next
    retrace (``_export_forward_backward``) traces it into ATen operators.

    Done on the forward program, so that autograd differentiates the ops' PyTorch formulation:
    the backward ops' own implementations cannot be traced (the element-wise one differentiates
    its reference with ``torch.func.vjp``, which ``torch.export`` rejects and whose gradient
    ``run_decompositions`` silently traces as zeros)."""
    found = False
    for node in program.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            if node.target.namespace == "exportable_loss":
                node.target = _own_implementation(node.target)
                found = True
    if found:
        program.graph_module.recompile()


def _empty_permuted(
    size: Sequence[int],
    physical_layout: Sequence[int],
    dtype: Optional[torch.dtype] = None,
    layout: Optional[torch.layout] = None,
    device: Optional[torch.device] = None,
    pin_memory: Optional[bool] = None,
) -> Tensor:
    """``aten.empty_permuted`` (what ``empty_like`` becomes) from operators ExecuTorch has: no
    edge operator exists for it, and ``aten.empty`` of a dynamic size is specialised to the
    example's size by the lowering. Zeros cost one fill of a buffer about to be overwritten."""
    inverse = [list(physical_layout).index(i) for i in range(len(physical_layout))]
    return torch.zeros([size[i] for i in physical_layout], dtype=dtype, device=device).permute(inverse)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # torch.export, the joint graph and the lowering warn about private APIs and deprecations
    # that are not the caller's concern
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _lower(model: nn.Module, loss: nn.Module, args: Batch, max_batch: int) -> Tuple[bytes, List[str]]:
    """The ``.pte`` bytes of the training step and the trainable parameters' runtime names."""
    from executorch.exir import to_edge

    # the fused ops' reference is what runs on a CPU: without the Triton interpreter, whatever
    # the caller's environment says
    with _quiet(), mock.patch.dict(os.environ, {"TRITON_INTERPRET": "0"}):
        joint = joint_program(model, loss, args, max_batch, before_backward=_inline_custom_ops)
        used = {n.target for n in joint.graph.nodes}
        table = {op: impl for op, impl in _DECOMPOSITIONS.items() if op in used}
        if table:
            joint = joint.run_decompositions(table)
        grads = [s.target for s in joint.graph_signature.output_specs if s.kind.name == "GRADIENT_TO_PARAMETER"]
        if not grads:
            raise ExportError("the model has no trainable parameter (every parameter has requires_grad=False)")
        try:
            pte = to_edge(joint, constant_methods={"max_batch": max_batch}).to_executorch()
        except Exception as e:  # the lowering raises bare Exceptions and assertion errors
            raise ExportError(f"ExecuTorch cannot lower this training step: {_why(e)}") from e
    return pte.buffer, grads


def _convolution_backward(grad_output: Tensor, input: Tensor, weight: Tensor, *options: Any) -> object:
    """``aten.convolution_backward``: ExecuTorch's kernel runs 2-d convolutions only (a 1-d one
    fails at run time), so a 1-d one becomes convolutions, as for ONNX."""
    transposed, groups = options[4], options[6]  # after bias_sizes, stride, padding, dilation
    if weight.dim() == 4:
        return NotImplemented  # the kernel's own
    if weight.dim() != 3 or transposed or groups != 1:
        raise ExportError(
            "ExecuTorch's convolution backward runs 2-d convolutions, and a 1-d one is rewritten as convolutions "
            f"unless grouped or transposed; got a {weight.dim() - 2}-d one (groups={groups}, transposed={transposed})"
        )
    return _conv_backward(grad_output, input, weight, *options)


# what the joint program's operators become where ExecuTorch cannot run them as they are
_DECOMPOSITIONS: Dict[torch._ops.OperatorBase, Callable] = {
    torch.ops.aten.empty_permuted.default: _empty_permuted,
    torch.ops.aten.convolution_backward.default: _convolution_backward,
}


# operators the lowering refuses, with what the user can do about them
_HINTS = {
    "aten._native_batch_norm_legit_functional": "batch norm in training mode; call .eval() on it to train with "
    "running statistics, or replace it (e.g. GroupNorm/LayerNorm)",
}


def _why(error: Exception) -> str:
    """The lowering's error in one line: the operator it refuses (and what to do) where it names one."""
    op = re.search(r"Operator (?:torch\._ops\.)?(\S+?)(?:\.default)? is not in Core ATen opset", str(error))
    if op:
        name = op.group(1)
        return f"it uses {name}, which is not in the core ATen operator set ExecuTorch runs" + (
            f" ({_HINTS[name]})" if name in _HINTS else ""
        )
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}"


# ------------------------------------------------------------------ the runtime


class ExecuTorchStep:
    """A training step loaded into ExecuTorch's training runtime, with its batch limit checked.

    Args:
        path: the ``.pte`` file [export_executorch_step][exportable_loss.export.executorch.export_executorch_step]
            wrote.

    Attributes:
        module: the runtime's ``TrainingModule`` (``forward_backward``, ``named_gradients()``,
            ``named_parameters()``).
        max_batch: the largest batch the program accepts.
    """

    def __init__(self, path: str) -> None:
        _require()
        from executorch.extension.training import _load_for_executorch_for_training

        with _quiet():
            self.module = _load_for_executorch_for_training(path)
        self.max_batch = int(self.module.model.run_method("max_batch", ())[0])
        self._first = True

    def forward_backward(self, *inputs: Tensor) -> Tuple[Tensor, Tensor]:
        """``(loss, per_sample_loss)`` of ``(input, target[, sample_weight])``; the gradients are
        then in ``named_gradients()``. ``ValueError`` for a batch above ``max_batch``."""
        n = inputs[0].shape[0] if inputs and inputs[0].dim() else 0
        if n > self.max_batch:
            raise ValueError(
                f"a batch of {n} exceeds this training step's max_batch={self.max_batch}: ExecuTorch planned its "
                "memory for at most that many samples; export again with a larger max_batch (--max-batch)"
            )
        # the runtime's first run probes the CPU and prints what it finds on fd 2
        probing = stderr_without(("[cpuinfo_utils.cpp:",)) if self._first else contextlib.nullcontext()
        self._first = False
        with _quiet(), probing:
            loss, per_sample = self.module.forward_backward("forward", tuple(inputs))
        return loss, per_sample

    def named_gradients(self) -> Dict[str, Tensor]:
        return self.module.named_gradients()

    def named_parameters(self) -> Dict[str, Tensor]:
        """The parameters the program holds (the optimizer updates them in place); available
        after the first ``forward_backward``."""
        return self.module.named_parameters()

    def sgd(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        """ExecuTorch's SGD over the program's parameters (``step(named_gradients())``)."""
        from executorch.extension.training import get_sgd_optimizer

        with _quiet():
            return get_sgd_optimizer(self.named_parameters(), lr, momentum, 0.0, weight_decay, False)


# ------------------------------------------------------------------ verification


@dataclasses.dataclass
class StepReport:
    """What [export_executorch_step][exportable_loss.export.executorch.export_executorch_step] wrote
    and how ExecuTorch's training runtime agrees with PyTorch on it."""

    path: str
    format: str
    inputs: List[str]
    outputs: List[str]
    parameters: List[str]  # the runtime's names (named_gradients / named_parameters keys)
    example_batch: int
    max_batch: int
    errors: Dict[str, float]  # max abs error of each check against PyTorch
    tolerance: float
    passed: bool

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def __str__(self) -> str:
        lines = [
            f"{'PASS' if self.passed else 'FAIL'} {self.format} training step {self.path}",
            f"  forward:  {', '.join(self.inputs)} -> {', '.join(self.outputs)} "
            f"(batch 2 to {self.max_batch}, example batch {self.example_batch})",
            f"  trained:  {', '.join(self.parameters)}",
            f"  ExecuTorch's training runtime against PyTorch, max abs error (tolerance {self.tolerance:g}):",
        ]
        lines += [f"    {what}: {err:.3g}" for what, err in self.errors.items()]
        return "\n".join(lines)


def resampled(example: Batch, seed: int = 0) -> Callable[[int, int], Batch]:
    """Batches of any size drawn (with replacement) from the example's samples: data the model
    and loss accept, for a check at other batch sizes."""

    def batch(n: int, step: int) -> Batch:
        rows = torch.randint(0, example[0].shape[0], (n,), generator=torch.Generator().manual_seed(seed + step))
        return tuple(t[rows] for t in example)

    return batch


def _max_abs(got: Tensor, want: Tensor) -> float:
    if got.shape != want.shape:
        return float("inf")
    return (got.detach().double() - want.detach().double()).abs().max().item() if got.numel() else 0.0


def verify_executorch_step(
    path: str,
    model: nn.Module,
    loss: nn.Module,
    batch: Callable[[int, int], Batch],
    sizes: Sequence[int],
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.01,
    steps: int = SGD_STEPS,
) -> Dict[str, float]:
    """Run the program in ExecuTorch's training runtime against PyTorch: the loss, per-sample
    losses and gradients at each batch size of ``sizes``, then ``steps`` updates by ExecuTorch's
    SGD (batches of varying size) against ``torch.optim.SGD``. ``model`` must hold the
    parameters the program was exported with; it is not modified.

    Returns:
        The max abs error of each check, by a readable name.
    """
    step = ExecuTorchStep(path)
    reference, ref_loss, per_sample = copy.deepcopy(model), copy.deepcopy(loss), per_sample_twin(loss)
    params = {n: p for n, p in reference.named_parameters() if p.requires_grad}
    errors: Dict[str, float] = {}
    for i, n in enumerate(sizes):
        inputs = batch(n, 1000 + i)
        got_loss, got_per_sample = step.forward_backward(*inputs)
        out = reference(inputs[0])
        want = ref_loss(out, *inputs[1:])
        want_grads = torch.autograd.grad(want, list(params.values()))
        grads = step.named_gradients()
        errors[f"loss at batch {n}"] = _max_abs(got_loss, want)
        errors[f"per-sample losses at batch {n}"] = _max_abs(got_per_sample, per_sample(out, *inputs[1:]))
        errors[f"gradients at batch {n}"] = max(
            _max_abs(grads[_PREFIX + name], g) if _PREFIX + name in grads else float("inf")
            for name, g in zip(params, want_grads)
        )
    optimizer = step.sgd(lr, momentum, weight_decay)
    torch_optimizer = torch.optim.SGD(list(params.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    low, high = 2, step.max_batch
    for i in range(steps):
        inputs = batch(low + (7 * i) % (high - low + 1), i)
        step.forward_backward(*inputs)
        with _quiet():
            optimizer.step(step.named_gradients())
        torch_optimizer.zero_grad()
        ref_loss(reference(inputs[0]), *inputs[1:]).backward()
        torch_optimizer.step()
    held = step.named_parameters()
    errors[f"parameters after {steps} SGD steps (lr {lr:g}, momentum {momentum:g}, weight decay {weight_decay:g})"] = (
        max(_max_abs(held[_PREFIX + n], p) if _PREFIX + n in held else float("inf") for n, p in params.items())
    )
    return errors


def export_executorch_step(
    model: nn.Module,
    loss: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str,
    max_batch: int = 64,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.01,
    batch: Optional[Callable[[int, int], Batch]] = None,
) -> StepReport:
    """Export the training step of ``model`` under ``loss`` for ExecuTorch's training runtime,
    and verify it there against PyTorch.

    Args:
        model: maps the first example input to the loss's input; on the CPU.
        loss: a loss module of this library; with ``backend="triton"`` its fused op is written as
            the op's PyTorch formulation (ExecuTorch cannot run custom ops).
        example_inputs: ``(input, target)`` or ``(input, target, sample_weight)``, batch >= 2.
        path: the ``.pte`` file (written atomically).
        max_batch: the largest batch the program accepts (ExecuTorch plans memory for it and
            refuses larger batches).
        lr: the learning rate of the SGD check (the optimizer runs in the runtime, not in the
            program).
        momentum: the SGD check's momentum.
        weight_decay: the SGD check's (L2) weight decay.
        batch: ``batch(n, seed)`` gives inputs of batch size ``n`` for the checks; default
            samples drawn from the example's.

    Returns:
        A [StepReport][exportable_loss.export.executorch.StepReport]: the program's inputs,
        outputs and parameters, and the max abs error of the loss, per-sample losses and
        gradients at batch sizes 2 and ``max_batch``, and of the parameters after 20 SGD steps
        (ExecuTorch's ``get_sgd_optimizer`` against ``torch.optim.SGD``); ``passed`` when every
        error is at most 1e-5.

    Raises:
        ExportError: bad inputs or ``max_batch``, a destination that is not a writable ``.pte``
            file, or a step ExecuTorch cannot lower.
        ImportError: ExecuTorch is not installed.

    Examples:
        >>> from exportable_loss import CrossEntropyLoss
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
        >>> x, target = torch.randn(6, 8), torch.randint(0, 4, (6,))
        >>> report = export_executorch_step(model, CrossEntropyLoss(), (x, target), "step.pte", max_batch=32)
        >>> report.passed, report.outputs, report.parameters[:2]
        (True, ['loss', 'per_sample_loss'], ['model.0.weight', 'model.0.bias'])
        >>> step = ExecuTorchStep("step.pte")
        >>> loss, per_sample = step.forward_backward(torch.randn(32, 8), torch.randint(0, 4, (32,)))
        >>> sgd = step.sgd(lr=0.1, momentum=0.9)
        >>> sgd.step(step.named_gradients())  # the parameters the program holds move
    """
    step_format(path, "executorch")
    _require()
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 2:
        raise ExportError(f"max_batch must be an integer of at least 2; got {max_batch!r}")
    args = tuple(example_inputs)
    if args and isinstance(args[0], Tensor) and args[0].dim() and args[0].shape[0] > max_batch:
        raise ExportError(f"the example batch ({args[0].shape[0]}) is above max_batch={max_batch}")
    tensors = [*args, *model.parameters(), *model.buffers(), *loss.buffers()]
    if any(isinstance(t, Tensor) and t.device.type != "cpu" for t in tensors):
        raise ExportError("ExecuTorch programs are exported from the CPU; move the model, loss and inputs there")
    data, grads = _lower(model, loss, args, max_batch)
    with atomic_path(path) as tmp:  # a runtime that cannot load or run it leaves no file
        with open(tmp, "wb") as f:
            f.write(data)
        sizes = sorted({2, max_batch})
        errors = verify_executorch_step(
            tmp, model, loss, batch or resampled(args), sizes, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    return StepReport(
        path=path,
        format="executorch",
        inputs=["input", "target", "sample_weight"][: len(args)],
        outputs=["loss", "per_sample_loss"],
        parameters=grads,
        example_batch=args[0].shape[0],
        max_batch=max_batch,
        errors=errors,
        tolerance=TOLERANCE,
        passed=all(e <= TOLERANCE for e in errors.values()),
    )


__all__ = ["ExecuTorchStep", "StepReport", "available", "export_executorch_step", "resampled", "verify_executorch_step"]
