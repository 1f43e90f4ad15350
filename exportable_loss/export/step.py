"""Training-step export: one ONNX graph whose outputs are the loss, the per-sample losses and the
gradient of the loss with respect to every trainable parameter (and, optionally, the parameters
after an SGD or AdamW update), so stock onnxruntime computes (or takes) a training step; or, with
``format="executorch"``, a program for ExecuTorch's training runtime
(``exportable_loss.export.executorch``).

How: ``torch.export`` of model + loss, ``torch.export.experimental._export_forward_backward``
(private, marked unstable by PyTorch) for the joint forward-backward graph, a wrapper module that
calls it with plain tensor inputs and outputs, and the ``dynamo=True`` ONNX exporter. The
backward of a convolution (``aten.convolution_backward``, which has no ONNX translation) is
decomposed into convolutions first; an operator that still has none is named in the error.
"""

import copy
import os
import re
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from exportable_loss import catalog
from exportable_loss._io import atomic_path, check_writable
from exportable_loss.export.api import ExportError
from exportable_loss.export.onnx import DEFAULT_OPSET, _quiet, require

if TYPE_CHECKING:
    from exportable_loss.export.executorch import StepReport

OPTIMIZERS = (None, "sgd", "adamw")
SUFFIXES = {"onnx": ".onnx", "executorch": ".pte"}  # the training step's formats and their files
# Backward operators with no ONNX translation; the step refuses them by name.
_NO_ONNX = {
    "aten._scaled_dot_product_flash_attention_for_cpu_backward",
    "aten._scaled_dot_product_efficient_attention_backward",
    "aten._scaled_dot_product_flash_attention_backward",
    "aten._scaled_dot_product_cudnn_attention_backward",
    "aten.native_batch_norm_backward",
    "aten._native_batch_norm_legit_functional",
}


def step_losses() -> List[str]:
    """The losses a training step takes: those of ``(input, target)``, the model's output and
    its target."""
    return [name for name, entry in catalog.LOSSES.items() if entry.inputs == ["input", "target"]]


def step_format(path: str, format: Optional[str] = None) -> str:
    """The format of the training step file ``path`` (``format``, or the one its extension
    names), after checking that the extension matches and that ``path`` can be written;
    ``ExportError`` naming ``path`` otherwise. Cheap: call it before any work."""
    try:
        check_writable(path)
    except ValueError as e:
        raise ExportError(str(e)) from None
    suffix = os.path.splitext(path)[1].lower()
    expected = ", ".join(f"{s} for {f}" for f, s in SUFFIXES.items())
    if format is None:
        found = [f for f, s in SUFFIXES.items() if s == suffix]
        if not found:
            raise ExportError(f"cannot tell the training step's format from {path!r}; expected {expected}")
        return found[0]
    if format not in SUFFIXES:
        raise ExportError(f"a training step's format is one of {', '.join(SUFFIXES)}; got {format!r}")
    if suffix != SUFFIXES[format]:
        raise ExportError(f"{path!r} does not have the extension of format {format}; expected {expected}")
    return format


def per_sample_twin(loss: nn.Module) -> nn.Module:
    """A copy of ``loss`` with ``reduction="per_sample"``: the step's per-sample losses."""
    twin: Any = copy.deepcopy(loss)  # Any: a loss's reduction is a constant set here
    twin.reduction = "per_sample"
    return twin


class _ModelWithLoss(nn.Module):
    """model + loss -> (loss, per-sample losses): the forward every training step exports."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = copy.deepcopy(loss)
        self.per_sample = per_sample_twin(loss)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        out = self.model(input)
        return self.loss(out, target, sample_weight), self.per_sample(out, target, sample_weight).detach()


def joint_program(
    model: nn.Module,
    loss: nn.Module,
    args: Tuple[Tensor, ...],
    max_batch: Optional[int] = None,
    before_backward: Optional[Callable[[torch.export.ExportedProgram], None]] = None,
) -> torch.export.ExportedProgram:
    """The joint forward-backward program of ``model`` under ``loss`` on ``args`` (batch
    dimension dynamic from 2 to ``max_batch``): ``torch.export``, then ``before_backward`` on
    the forward program, then ``_export_forward_backward`` (core ATen operators)."""
    from torch.export.experimental import _export_forward_backward

    if len(args) not in (2, 3) or not all(isinstance(a, Tensor) and a.dim() > 0 for a in args):
        raise ExportError("example_inputs must be (input, target[, sample_weight]) tensors with a batch dimension")
    if args[0].shape[0] < 2:
        raise ExportError("example_inputs must have a batch of at least 2 (a batch of 1 is specialised by the tracers)")
    wrapped = _ModelWithLoss(model, loss)
    try:
        wrapped(*args)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ExportError(f"the model and loss reject the example inputs: {e}") from e
    batch = torch.export.Dim("batch", min=2, max=max_batch)
    # SDPA's math formulation (matmul, softmax): the fused CPU/GPU kernels' backward operators
    # have no ONNX translation and no ExecuTorch kernel
    with warnings.catch_warnings(), sdpa_kernel(SDPBackend.MATH):
        warnings.simplefilter("ignore")
        program = torch.export.export(wrapped, args, dynamic_shapes=tuple({0: batch} for _ in args))
        if before_backward is not None:
            before_backward(program)
        return _export_forward_backward(program)


def _conv_backward(
    grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask
):
    """aten.convolution_backward as convolutions (Conv/ConvTranspose in ONNX); groups=1, not transposed."""
    if transposed or groups != 1 or input.dim() not in (3, 4):
        raise ExportError(
            "aten.convolution_backward has no ONNX translation for transposed, grouped or 3-d convolutions "
            f"(transposed={transposed}, groups={groups}, input rank {input.dim()})"
        )
    spatial = input.dim() - 2
    kernel = weight.shape[2:]
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        extra = [
            input.shape[2 + i]
            - ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
            for i in range(spatial)
        ]
        grad_input = torch.ops.aten.convolution.default(
            grad_output, weight, None, stride, padding, dilation, True, extra, 1
        )
    if output_mask[1]:
        # the classic swap: batch becomes the channel dimension, stride and dilation trade places
        gw = torch.ops.aten.convolution.default(
            input.transpose(0, 1), grad_output.transpose(0, 1), None, dilation, padding, stride, False, [0] * spatial, 1
        ).transpose(0, 1)
        for i in range(spatial):
            gw = gw.narrow(2 + i, 0, kernel[i])
        grad_weight = gw
    if output_mask[2]:
        grad_bias = grad_output.sum([0] + list(range(2, grad_output.dim())))
    return grad_input, grad_weight, grad_bias


class _TrainingStep(nn.Module):
    """Calls the joint graph: inputs (trainable params if inputs, optimizer state, user inputs)."""

    def __init__(
        self,
        joint: nn.Module,
        names: List[str],
        trainable: List[str],
        values: Dict[str, Tensor],
        params_as_inputs: bool,
        optimizer: Optional[str],
        hyper: Dict[str, float],
    ) -> None:
        super().__init__()
        self.joint = joint
        self.names = names  # every parameter and buffer input of the joint graph, in order
        self.trainable = trainable
        self.params_as_inputs = params_as_inputs
        self.optimizer = optimizer
        self.hyper = hyper
        for i, name in enumerate(names):
            if not (params_as_inputs and name in trainable):
                self.register_buffer(f"const_{i}", values[name].detach().clone())

    def forward(self, *args: Tensor) -> Tuple[Tensor, ...]:
        rest = list(args)
        params = {}
        if self.params_as_inputs:
            for name in self.trainable:
                params[name] = rest.pop(0)
        flat = []
        for i, name in enumerate(self.names):
            flat.append(params[name] if name in params else getattr(self, f"const_{i}"))
        n_state = 2 * len(self.trainable) + 1 if self.optimizer == "adamw" else 0
        state, user = rest[:n_state], rest[n_state:]
        loss, per_sample, *grads = self.joint(*flat, *user)
        if self.optimizer is None:
            return (loss, per_sample, *grads)
        # hyper-parameters as tensors of the parameters' dtype: a Python float would be written
        # as a float32 constant, and a float64 graph would then round 0.999 to float32
        dtype = grads[0].dtype
        lr, wd, b1, b2, eps = (
            torch.tensor(self.hyper[k], dtype=dtype) for k in ("lr", "weight_decay", "beta1", "beta2", "eps")
        )
        if self.optimizer == "sgd":
            new = [params[n] - lr * (g + wd * params[n]) for n, g in zip(self.trainable, grads)]
            return (loss, per_sample, *grads, *new)
        k = len(self.trainable)
        ms, vs, step = state[:k], state[k : 2 * k], state[2 * k] + 1
        bc1 = 1 - torch.pow(b1, step)
        bc2_sqrt = torch.sqrt(1 - torch.pow(b2, step))
        new_p, new_m, new_v = [], [], []
        for name, g, m, v in zip(self.trainable, grads, ms, vs):
            p = params[name] * (1 - lr * wd)  # decoupled weight decay, as torch.optim.AdamW
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            new_p.append(p - (lr / bc1) * m / (torch.sqrt(v) / bc2_sqrt + eps))
            new_m.append(m)
            new_v.append(v)
        return (loss, per_sample, *grads, *new_p, *new_m, *new_v, step)


def _check_model(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise ExportError(
                f"batch norm {name or type(m).__name__} is in training mode: its ONNX export would use running "
                "statistics and give another loss; call .eval() on it to export with running statistics, "
                "or replace it (e.g. GroupNorm/LayerNorm)"
            )


def export_training_step(
    model: nn.Module,
    loss: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str,
    params_as_inputs: bool = True,
    optimizer: Optional[str] = None,
    lr: float = 0.01,
    weight_decay: Optional[float] = None,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    opset: int = DEFAULT_OPSET,
    format: Optional[str] = None,
    max_batch: int = 64,
    momentum: Optional[float] = None,
) -> Union[Dict[str, List[str]], "StepReport"]:
    """Export the training step of ``model`` under ``loss`` to one ONNX graph, or to a program
    for ExecuTorch's training runtime (``format="executorch"``).

    Args:
        model: maps the first example input to the loss's input.
        loss: a loss module of this library (for ONNX its torch backend is exported; for
            ExecuTorch its backend's PyTorch formulation).
        example_inputs: ``(input, target)`` or ``(input, target, sample_weight)``, batch >= 2.
        path: the ``.onnx`` or ``.pte`` file (written atomically).
        params_as_inputs: trainable parameters are graph inputs (a runtime can update them);
            else initializers. Frozen parameters (``requires_grad=False``) and buffers are
            always initializers.
        optimizer: None (gradients only), ``"sgd"`` or ``"adamw"`` (as ``torch.optim.SGD`` and
            ``torch.optim.AdamW``): the updated parameters (and AdamW's moments and step) are
            outputs too; needs ``params_as_inputs``.
        lr: learning rate (a constant of the graph, as the other hyper-parameters).
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay (default 0; for ExecuTorch,
            the SGD check's, default 0.01).
        betas: AdamW's moment coefficients.
        eps: AdamW's denominator term.
        opset: ONNX opset.
        format: ``"onnx"`` or ``"executorch"``; default the one ``path``'s extension names.
        max_batch: ExecuTorch: the largest batch the program accepts (the runtime refuses
            larger ones).
        momentum: ExecuTorch: the SGD check's momentum (default 0.9); ONNX's SGD has none.

    Returns:
        For ExecuTorch, the [StepReport][exportable_loss.export.executorch.StepReport] of
        [export_executorch_step][exportable_loss.export.executorch.export_executorch_step]
        (``lr``, ``momentum`` and ``weight_decay`` set its SGD check; ``optimizer`` may be None
        or ``"sgd"``, the runtime's optimizer). For ONNX,
        ``{"inputs": [...], "outputs": [...]}``: the graph's input and output names in order.
        Inputs: ``param.<name>`` (if inputs), for AdamW ``exp_avg.<name>``, ``exp_avg_sq.<name>``
        and ``step``, then ``input``, ``target`` (and ``sample_weight``). Outputs: ``loss``,
        ``per_sample_loss``, ``grad.<name>`` per trainable parameter, then ``new.<name>``
        (and ``new_exp_avg.<name>``, ``new_exp_avg_sq.<name>``, ``new_step``).

    Examples:
        >>> from exportable_loss import CrossEntropyLoss
        >>> model = torch.nn.Linear(8, 4)
        >>> x, target = torch.randn(6, 8), torch.randint(0, 4, (6,))
        >>> names = export_training_step(model, CrossEntropyLoss(), (x, target), "step.onnx", optimizer="sgd")
        >>> print(*names["outputs"])
        loss per_sample_loss grad.weight grad.bias new.weight new.bias
    """
    if optimizer not in OPTIMIZERS:
        raise ExportError(f"optimizer must be one of None, 'sgd', 'adamw'; got {optimizer!r}")
    if step_format(path, format) == "executorch":
        from exportable_loss.export.executorch import export_executorch_step

        if optimizer == "adamw":
            raise ExportError("ExecuTorch's training runtime updates with SGD (get_sgd_optimizer); AdamW is ONNX's")
        return export_executorch_step(
            model,
            loss,
            example_inputs,
            path,
            max_batch=max_batch,
            lr=lr,
            momentum=0.9 if momentum is None else momentum,
            weight_decay=0.01 if weight_decay is None else weight_decay,
        )
    if momentum is not None:
        raise ExportError("momentum is for ExecuTorch's SGD; the ONNX graph's SGD update has none")
    weight_decay = 0.0 if weight_decay is None else weight_decay
    if optimizer is not None and not params_as_inputs:
        raise ExportError("an optimizer step needs params_as_inputs=True (the updated parameters are fed back)")
    args = tuple(example_inputs)
    require("onnx")
    require("onnxscript")
    _check_model(model)
    exported: Any = copy.deepcopy(loss)  # Any: its backend is set below
    exported.backend = "torch"  # the joint graph differentiates the PyTorch formulation
    joint = joint_program(model, exported, args)
    batch = torch.export.Dim("batch", min=2)
    ops = {str(n.target).rsplit(".", 1)[0] for n in joint.graph_module.graph.nodes if n.op == "call_function"}
    unsupported = sorted(ops & _NO_ONNX)
    if unsupported:
        raise ExportError(
            f"the training step uses operators with no ONNX translation: {', '.join(unsupported)} "
            "(no decomposition into ONNX operators is known)"
        )
    spec = joint.graph_signature
    names = [s.target for s in spec.input_specs if s.kind.name in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR")]
    grads = [s.target for s in spec.output_specs if s.kind.name == "GRADIENT_TO_PARAMETER"]
    values = {**dict(joint.named_parameters()), **dict(joint.named_buffers()), **joint.constants}
    hyper = dict(lr=lr, weight_decay=weight_decay, beta1=betas[0], beta2=betas[1], eps=eps)
    step = _TrainingStep(joint.graph_module, names, grads, values, params_as_inputs, optimizer, hyper)

    trainable = {n: values[n].detach() for n in grads}
    step_args: List[Tensor] = list(trainable.values()) if params_as_inputs else []
    grads_short = [n.removeprefix("model.") for n in grads]  # names as in model.named_parameters()
    input_names = [f"param.{n}" for n in grads_short] if params_as_inputs else []
    if optimizer == "adamw":
        dtype = next(iter(trainable.values())).dtype
        # distinct tensors: torch.export would merge aliased example inputs into one graph input
        step_args += [torch.zeros_like(p) for _ in range(2) for p in trainable.values()]
        step_args.append(torch.tensor(0.0, dtype=dtype))
        input_names += [f"exp_avg.{n}" for n in grads_short] + [f"exp_avg_sq.{n}" for n in grads_short] + ["step"]
    n_fixed = len(step_args)
    step_args += list(args)
    input_names += ["input", "target", "sample_weight"][: len(args)]
    output_names = ["loss", "per_sample_loss"] + [f"grad.{n}" for n in grads_short]
    if optimizer is not None:
        output_names += [f"new.{n}" for n in grads_short]
    if optimizer == "adamw":
        output_names += [f"new_exp_avg.{n}" for n in grads_short] + [f"new_exp_avg_sq.{n}" for n in grads_short]
        output_names += ["new_step"]

    dynamic = tuple([None] * n_fixed + [{0: batch} for _ in args])
    with atomic_path(path) as tmp:
        try:
            with _quiet():
                retraced = torch.export.export(step, tuple(step_args), dynamic_shapes={"args": dynamic})
                retraced = retraced.run_decompositions({torch.ops.aten.convolution_backward.default: _conv_backward})
                onnx_program = torch.onnx.export(
                    retraced,
                    dynamo=True,
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset,
                    verbose=False,
                    # onnxscript 0.7.2's optimizer removed AdamW's "+ eps" (1e-8) as if it were 0:
                    # a training graph must keep every constant of the update and of the user's model
                    optimize=False,
                )
                if onnx_program is None:  # typing: only the TorchScript exporter returns None
                    raise RuntimeError("the dynamo ONNX exporter returned no program")
                onnx_program.save(tmp)
        except torch.onnx.errors.OnnxExporterError as e:
            missing = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", str(e))
            if missing:
                raise ExportError(f"the training step uses {missing.group(1)}, which has no ONNX translation") from e
            raise
    return {"inputs": input_names, "outputs": output_names}
