"""The fused losses as ``torch.library`` custom ops: Triton kernels where Triton can run, a
PyTorch reference computation elsewhere, fake (meta) kernels for torch.compile and
torch.export, and autograd formulas that are custom ops too.

The ops are opaque to the tracers (a ``triton_op`` is not: fake tensors reach the Triton
interpreter on CPU), callable from TorchScript as ``torch.ops.exportable_loss.<name>``. ONNX
export never sees them: while an exporter traces, ``functional`` takes its primitive path.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from exportable_loss import triton_kernels as tk
from exportable_loss._targets import counted_targets

# ---------------------------------------------------------------- cross entropy over rows


def _ce_rows_reference(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """What the kernel computes, in PyTorch: (N, C, D) logits -> float32 (N*D,) loss, lse, mass."""
    x = logits.float()
    num_classes = x.shape[1]
    w = torch.ones(num_classes, dtype=torch.float32, device=x.device) if weight is None else weight.float()
    w3 = w.view(1, -1, 1)
    if target.is_floating_point():
        q = target.float() * (1.0 - label_smoothing) + label_smoothing / num_classes
        x = x if softcap <= 0 else softcap * torch.tanh(x / softcap)
        lse = torch.logsumexp(x, 1)
        mass = (q * w3).sum(1)
        loss = lse * mass - (q * w3 * x).sum(1) + z_loss * lse * lse
        return loss.reshape(-1), lse.reshape(-1), mass.reshape(-1)
    ignored = target == ignore_index
    in_range = (target >= 0) & (target < num_classes)
    safe = torch.where(in_range, target, torch.zeros_like(target))
    x = torch.where(ignored.unsqueeze(1), torch.zeros_like(x), x)  # no NaN gradient from ignored rows
    x = x if softcap <= 0 else softcap * torch.tanh(x / softcap)
    lse = torch.logsumexp(x, 1)
    mass = w.sum().expand_as(lse)
    x_t = x.gather(1, safe.unsqueeze(1)).squeeze(1)
    w_t = w[safe]
    smooth = lse * mass - (w3 * x).sum(1)
    loss = (
        (1.0 - label_smoothing) * w_t * (lse - x_t) + label_smoothing / num_classes * smooth + z_loss * lse * lse * w_t
    )
    loss = torch.where(in_range, loss, torch.full_like(loss, float("nan")))
    loss = torch.where(ignored, torch.zeros_like(loss), loss)
    return loss.reshape(-1), lse.reshape(-1), mass.reshape(-1)


@torch.library.custom_op("exportable_loss::cross_entropy_rows", mutates_args=())
def cross_entropy_rows(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    inplace_backward: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-row cross entropy of (N, C, D) logits: float32 (N*D,) loss, log-sum-exp, target mass."""
    if tk.can_run(logits):
        return tk.kernels("cross_entropy").cross_entropy_forward(
            logits, target, weight, ignore_index, label_smoothing, z_loss, softcap
        )
    return _ce_rows_reference(logits, target, weight, ignore_index, label_smoothing, z_loss, softcap)


@cross_entropy_rows.register_fake
def _(logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, inplace_backward):
    rows = logits.new_empty((logits.shape[0] * logits.shape[2],), dtype=torch.float32)
    return rows, torch.empty_like(rows), torch.empty_like(rows)


@torch.library.custom_op("exportable_loss::cross_entropy_rows_backward", mutates_args=())
def cross_entropy_rows_backward(
    grad_loss: Tensor,
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """Gradient of sum(grad_loss * loss) with respect to the (N, C, D) logits."""
    if tk.can_run(logits):
        return tk.kernels("cross_entropy").cross_entropy_backward(
            grad_loss, logits, target, weight, lse, mass, ignore_index, label_smoothing, z_loss, softcap
        )
    # autograd is off inside an op's kernel; torch.func differentiates the reference regardless
    _, vjp = torch.func.vjp(
        lambda x: _ce_rows_reference(x, target, weight, ignore_index, label_smoothing, z_loss, softcap)[0], logits
    )
    grad = vjp(grad_loss.float())[0]
    # as the kernel: a row with zero upstream gradient gets exactly 0, whatever its logits
    zero_rows = (grad_loss == 0).reshape(logits.shape[0], 1, logits.shape[2])
    return torch.where(zero_rows, torch.zeros_like(grad), grad).to(logits.dtype)


@cross_entropy_rows_backward.register_fake
def _(grad_loss, logits, target, weight, lse, mass, ignore_index, label_smoothing, z_loss, softcap):
    return torch.empty_like(logits)


def _ce_setup(ctx, inputs, output):
    logits, target, weight, ctx.ignore_index, ctx.label_smoothing, ctx.z_loss, ctx.softcap, ctx.inplace = inputs
    _, lse, mass = output
    ctx.save_for_backward(logits, target, weight, lse, mass)


def _ce_backward(ctx, grad_loss, grad_lse, grad_mass):
    logits, target, weight, lse, mass = ctx.saved_tensors
    args = (ctx.ignore_index, ctx.label_smoothing, ctx.z_loss, ctx.softcap)
    if ctx.inplace and tk.can_run(logits):
        # opt-in: the gradient overwrites the caller's logits (they must not be needed again)
        grad = tk.kernels("cross_entropy").cross_entropy_backward(
            grad_loss, logits, target, weight, lse, mass, *args, inplace=True
        )
    else:
        grad = torch.ops.exportable_loss.cross_entropy_rows_backward(
            grad_loss, logits, target, weight, lse, mass, *args
        )
    return grad, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::cross_entropy_rows", _ce_backward, setup_context=_ce_setup)

# ---------------------------------------------------------------- element-wise losses


def _pointwise_reference(
    x: Tensor, y: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor], kind: str, p1: float, p2: float
) -> Tensor:
    """What the kernel computes per element, in PyTorch (float32)."""
    x, y = x.float(), y.float()
    if kind == "mse":
        return (x - y) ** 2
    if kind == "l1":
        return (x - y).abs()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(x, y, reduction="none", beta=p1)
    if kind == "huber":
        return F.huber_loss(x, y, reduction="none", delta=p1)
    if kind == "bce_logits":
        w = None if weight is None else weight.float()
        pw = None if pos_weight is None else pos_weight.float()
        return F.binary_cross_entropy_with_logits(x, y, w, reduction="none", pos_weight=pw)
    if kind == "kl":
        return F.kl_div(x, y, reduction="none")
    if kind == "kl_log_target":
        return F.kl_div(x, y, reduction="none", log_target=True)
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** p2
    return (p1 * y + (1 - p1) * (1 - y)) * loss if p1 >= 0 else loss


def _weighted_sum(loss: Tensor, sample_weight: Optional[Tensor]) -> Tensor:
    if sample_weight is not None:
        s = sample_weight.float().reshape([-1] + [1] * (loss.dim() - 1))
        loss = torch.where(s != 0, loss * s, torch.zeros_like(loss))
    return loss.sum()


@torch.library.custom_op("exportable_loss::pointwise_loss", mutates_args=())
def pointwise_loss(
    input: Tensor,
    target: Tensor,
    sample_weight: Optional[Tensor],
    weight: Optional[Tensor],
    pos_weight: Optional[Tensor],
    kind: str,
    p1: float,
    p2: float,
    reduce: bool,
) -> Tensor:
    """Element-wise loss ``kind``: ``sum(s * l)`` (0-dim float32) if ``reduce``, else ``l``.

    All tensors contiguous, ``weight``/``pos_weight`` expanded to ``input``'s shape.
    """
    if tk.can_run(input):
        return tk.kernels("pointwise").pointwise_forward(
            input, target, sample_weight, weight, pos_weight, kind, p1, p2, reduce
        )
    loss = _pointwise_reference(input, target, weight, pos_weight, kind, p1, p2)
    return _weighted_sum(loss, sample_weight) if reduce else loss.to(input.dtype)


@pointwise_loss.register_fake
def _(input, target, sample_weight, weight, pos_weight, kind, p1, p2, reduce):
    return input.new_empty((), dtype=torch.float32) if reduce else torch.empty_like(input)


@torch.library.custom_op("exportable_loss::pointwise_loss_backward", mutates_args=())
def pointwise_loss_backward(
    grad: Tensor,
    input: Tensor,
    target: Tensor,
    sample_weight: Optional[Tensor],
    weight: Optional[Tensor],
    pos_weight: Optional[Tensor],
    kind: str,
    p1: float,
    p2: float,
) -> Tensor:
    """Gradient with respect to ``input``; ``grad`` 0-dim for a reduced loss, else per element."""
    grad = grad if grad.dim() == 0 else grad.contiguous()
    if tk.can_run(input):
        return tk.kernels("pointwise").pointwise_backward(
            grad, input, target, sample_weight, weight, pos_weight, kind, p1, p2
        )

    def reference(x: Tensor) -> Tensor:
        loss = _pointwise_reference(x, target, weight, pos_weight, kind, p1, p2)
        return _weighted_sum(loss, sample_weight) if grad.dim() == 0 else loss

    _, vjp = torch.func.vjp(reference, input)
    return vjp(grad.float())[0].to(input.dtype)


@pointwise_loss_backward.register_fake
def _(grad, input, target, sample_weight, weight, pos_weight, kind, p1, p2):
    return torch.empty_like(input)


def _pointwise_setup(ctx, inputs, output):
    input, target, sample_weight, weight, pos_weight, ctx.kind, ctx.p1, ctx.p2, ctx.reduce = inputs
    ctx.save_for_backward(input, target, sample_weight, weight, pos_weight)


def _pointwise_backward(ctx, grad):
    input, target, sample_weight, weight, pos_weight = ctx.saved_tensors
    gx = torch.ops.exportable_loss.pointwise_loss_backward(
        grad, input, target, sample_weight if ctx.reduce else None, weight, pos_weight, ctx.kind, ctx.p1, ctx.p2
    )
    return gx, None, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::pointwise_loss", _pointwise_backward, setup_context=_pointwise_setup)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "backend='triton' does not support double backward (a gradient of the loss's gradient); "
        "use backend='torch' for it"
    )


for _op in ("exportable_loss::cross_entropy_rows_backward", "exportable_loss::pointwise_loss_backward"):
    torch.library.register_autograd(_op, _no_double_backward, setup_context=lambda ctx, inputs, output: None)

# ---------------------------------------------------------------- linear layer + cross entropy, chunked


def auto_chunk_rows(rows: int, hidden: int, num_classes: int) -> int:
    """Rows per chunk, a power of two: a chunk's logits about as large as the hidden states
    (``rows * hidden`` elements), but at least the power of two nearest below 2**22 elements,
    below which the matmuls get too thin to run fast."""
    ratio = max(1, -(-num_classes // max(hidden, 1)))
    by_input = max(1, -(-rows // ratio))
    by_input = 1 << (by_input - 1).bit_length()
    by_floor = 1 << (max(1, (1 << 22) // max(num_classes, 1)).bit_length() - 1)
    return max(by_input, by_floor)


def _softcapped(logits: Tensor, softcap: float) -> Tensor:
    return torch.tanh(logits / softcap).mul_(softcap) if softcap > 0 else logits


def _lce_chunk_loss(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Loss, log-sum-exp and target mass of one chunk of (r, C) float32/64 logits: the formula
    of the cross-entropy kernels, in PyTorch."""
    num_classes = logits.shape[1]
    z = _softcapped(logits, softcap)
    logp = torch.log_softmax(z, 1)
    lse = z[:, 0] - logp[:, 0]
    w = weight.to(z.dtype) if weight is not None else None
    if target.is_floating_point():
        q = target.to(z.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        wq = q * w if w is not None else q
        return -(logp * wq).sum(1) + z_loss * lse * lse, lse, wq.sum(1)
    counted, in_range, safe, target_weight = counted_targets(target, w, ignore_index, num_classes)
    w_t = target_weight if target_weight is not None else torch.ones_like(lse)
    mass = w.sum().expand_as(lse) if w is not None else torch.full_like(lse, float(num_classes))
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    smooth = -(logp @ w if w is not None else logp.sum(1))
    loss = (1.0 - label_smoothing) * w_t * nll + label_smoothing / num_classes * smooth + z_loss * lse * lse * w_t
    loss = torch.where(in_range, loss, torch.full_like(loss, float("nan")))
    return torch.where(counted, loss, torch.zeros_like(loss)), lse, mass


def _lce_chunk_grad(
    logits: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    grad_rows: Tensor,
    counts: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """Gradient of ``sum(grad_rows * loss)`` for one chunk of (r, C) float32/64 logits, computed
    in ``logits``' memory from the saved log-sum-exp and target mass; rows outside ``counts``
    (ignored, or zero upstream gradient) get exactly 0, even from NaN logits."""
    num_classes = logits.shape[1]
    g = grad_rows.to(logits.dtype)
    dcap: Optional[Tensor] = None
    if softcap > 0:
        z = torch.tanh(logits / softcap)
        dcap = 1.0 - z * z  # d(c * tanh(x / c)) / dx
        logits = z.mul_(softcap)
    # d loss / d z_j = p_j * (mass + 2 z_loss lse [w_t]) - (the weight the target puts on class j)
    p = logits.sub_(lse.unsqueeze(1)).exp_()
    w = weight.to(p.dtype) if weight is not None else None
    if target.is_floating_point():
        q = target.to(p.dtype) * (1.0 - label_smoothing) + label_smoothing / num_classes
        wq = q.mul_(w) if w is not None else q
        grad = p.mul_(((mass + 2.0 * z_loss * lse) * g).unsqueeze(1)).sub_(wq.mul_(g.unsqueeze(1)))
    else:
        _, _, safe, target_weight = counted_targets(target, w, ignore_index, num_classes)
        w_t = target_weight if target_weight is not None else torch.ones_like(lse)
        hard = (1.0 - label_smoothing) * w_t * g
        total = hard + label_smoothing / num_classes * mass * g + 2.0 * z_loss * lse * w_t * g
        grad = p.mul_(total.unsqueeze(1))
        grad.scatter_add_(1, safe.unsqueeze(1), -hard.unsqueeze(1))
        if label_smoothing > 0:
            uniform = w.unsqueeze(0) if w is not None else torch.ones_like(grad[:1])
            grad.sub_(uniform * (label_smoothing / num_classes) * g.unsqueeze(1))
    if dcap is not None:
        grad.mul_(dcap)
    return torch.where(counts.unsqueeze(1), grad, torch.zeros_like(grad))


def _lce_chunks(rows: int, hidden: int, num_classes: int, chunk_size: int):
    step = chunk_size if chunk_size > 0 else auto_chunk_rows(rows, hidden, num_classes)
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def _lce_triton(logits: Tensor) -> bool:
    return logits.dtype != torch.float64 and tk.can_run(logits)


@torch.library.custom_op("exportable_loss::linear_cross_entropy_rows", mutates_args=())
def linear_cross_entropy_rows(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
    use_triton: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-row cross entropy of ``input @ linear_weight.T + linear_bias`` for (M, H) ``input``,
    computed ``chunk_size`` rows at a time (0: automatic) so the (M, C) logits never exist.

    ``target`` is (M,) int64 class indices or (M, C) probabilities. Returns (M,) loss, log-sum-exp
    and target mass in float32 (float64 for float64 input).
    """
    rows, num_classes = input.shape[0], linear_weight.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    loss = input.new_empty((rows,), dtype=acc)
    lse, mass = torch.empty_like(loss), torch.empty_like(loss)
    for start, end in _lce_chunks(rows, input.shape[1], num_classes, chunk_size):
        logits = F.linear(input[start:end], linear_weight, linear_bias)
        if use_triton and _lce_triton(logits):
            part = tk.kernels("cross_entropy").cross_entropy_forward(
                logits.unsqueeze(2), target[start:end].unsqueeze(-1), weight,
                ignore_index, label_smoothing, z_loss, softcap,
            )  # fmt: skip
        else:
            part = _lce_chunk_loss(
                logits.to(acc), target[start:end], weight, ignore_index, label_smoothing, z_loss, softcap
            )
        loss[start:end], lse[start:end], mass[start:end] = part
    return loss, lse, mass


@linear_cross_entropy_rows.register_fake
def _(input, linear_weight, linear_bias, target, weight, ignore_index, label_smoothing, z_loss, softcap, chunk, tri):
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    loss = input.new_empty((input.shape[0],), dtype=acc)
    return loss, torch.empty_like(loss), torch.empty_like(loss)


@torch.library.custom_op("exportable_loss::linear_cross_entropy_rows_backward", mutates_args=())
def linear_cross_entropy_rows_backward(
    grad_loss: Tensor,
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Optional[Tensor],
    target: Tensor,
    weight: Optional[Tensor],
    lse: Tensor,
    mass: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
    use_triton: bool,
    weight_grad: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``sum(grad_loss * loss)`` for input, linear_weight and linear_bias (a (C,)
    zero tensor without bias), recomputing each chunk's logits. Without ``weight_grad`` (a
    frozen classifier) the classifier's and the bias's gradients are empty tensors, not computed."""
    rows, num_classes = input.shape[0], linear_weight.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    grad_input = torch.empty_like(input)
    # half-precision weights accumulate their gradient over chunks in float32
    parameters = (num_classes, linear_weight.shape[1]) if weight_grad else (0, 0)
    grad_weight = linear_weight.new_zeros(parameters, dtype=torch.promote_types(linear_weight.dtype, acc))
    grad_bias = grad_weight.new_zeros(parameters[0])
    for start, end in _lce_chunks(rows, input.shape[1], num_classes, chunk_size):
        x = input[start:end]
        logits = F.linear(x, linear_weight, linear_bias)
        g = grad_loss[start:end]
        # the rows that count: their gradient, and their hidden states in the weight's gradient
        # (a row that does not count must not bring its possibly NaN hidden state there)
        counts = g != 0
        if not target.is_floating_point():
            counts = counts & (target[start:end] != ignore_index)
        if use_triton and _lce_triton(logits):
            # the gradient overwrites this chunk's logits: no second chunk-sized buffer
            grad = tk.kernels("cross_entropy").cross_entropy_backward(
                g, logits.unsqueeze(2), target[start:end].unsqueeze(-1), weight, lse[start:end], mass[start:end],
                ignore_index, label_smoothing, z_loss, softcap, inplace=True,
            ).squeeze(2)  # fmt: skip
        else:
            grad = _lce_chunk_grad(
                logits.to(acc), target[start:end], weight, lse[start:end], mass[start:end], g, counts,
                ignore_index, label_smoothing, z_loss, softcap,
            ).to(input.dtype)  # fmt: skip
        torch.mm(grad, linear_weight, out=grad_input[start:end])
        if not weight_grad:
            continue
        x = torch.where(counts.unsqueeze(1), x, torch.zeros_like(x))
        grad_weight.addmm_(grad.t().to(grad_weight.dtype), x.to(grad_weight.dtype))
        grad_bias.add_(grad.sum(0, dtype=grad_bias.dtype))
    return grad_input, grad_weight.to(linear_weight.dtype), grad_bias.to(linear_weight.dtype)


@linear_cross_entropy_rows_backward.register_fake
def _(grad_loss, input, linear_weight, linear_bias, target, weight, lse, mass, *options):
    weight_grad = options[-1]
    parameters = (linear_weight.shape[0], linear_weight.shape[1]) if weight_grad else (0, 0)
    grad_weight = linear_weight.new_empty(parameters)
    return torch.empty_like(input), grad_weight, grad_weight.new_empty(parameters[0])


def _lce_setup(ctx, inputs, output):
    input, linear_weight, linear_bias, target, weight, *ctx.options = inputs
    _, lse, mass = output
    ctx.has_bias = linear_bias is not None
    ctx.save_for_backward(input, linear_weight, linear_bias, target, weight, lse, mass)


def _lce_backward(ctx, grad_loss, grad_lse, grad_mass):
    input, linear_weight, linear_bias, target, weight, lse, mass = ctx.saved_tensors
    weight_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    grad_input, grad_weight, grad_bias = torch.ops.exportable_loss.linear_cross_entropy_rows_backward(
        grad_loss, input, linear_weight, linear_bias, target, weight, lse, mass, *ctx.options, weight_grad
    )
    if not weight_grad:
        return grad_input, None, None, None, None, None, None, None, None, None, None
    return grad_input, grad_weight, grad_bias if ctx.has_bias else None, None, None, None, None, None, None, None, None


torch.library.register_autograd("exportable_loss::linear_cross_entropy_rows", _lce_backward, setup_context=_lce_setup)


def _lce_no_double_backward(ctx, *grads):
    raise RuntimeError(
        "FusedLinearCrossEntropyLoss does not support double backward (a gradient of the loss's "
        "gradient); compute the logits with F.linear and use CrossEntropyLoss for it"
    )


torch.library.register_autograd(
    "exportable_loss::linear_cross_entropy_rows_backward",
    _lce_no_double_backward,
    setup_context=lambda ctx, inputs, output: None,
)
