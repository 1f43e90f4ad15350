"""PyTorch's own test inputs for its losses (torch.testing's module_db): our modules give
torch.nn's numbers and gradients on every one, unbatched and 0-dim inputs included."""

import pytest
import torch
from torch import nn

import exportable_loss as el

pytest.importorskip("expecttest")  # module_db imports it
from torch.testing._internal.common_modules import module_db  # noqa: E402

TWINS = {
    nn.CrossEntropyLoss: el.CrossEntropyLoss,
    nn.NLLLoss: el.NLLLoss,
    nn.BCEWithLogitsLoss: el.BCEWithLogitsLoss,
    nn.MSELoss: el.MSELoss,
    nn.L1Loss: el.L1Loss,
    nn.SmoothL1Loss: el.SmoothL1Loss,
    nn.HuberLoss: el.HuberLoss,
    nn.KLDivLoss: el.KLDivLoss,
}
INFOS = [info for info in module_db if info.module_cls in TWINS]


def _clone(value):
    if torch.is_tensor(value):
        return value.detach().clone().requires_grad_(value.requires_grad)
    return value


def _broadcasts(args) -> bool:
    tensors = [a for a in args if torch.is_tensor(a)]
    return (
        len(tensors) >= 2
        and tensors[0].is_floating_point()
        and tensors[1].is_floating_point()
        and (tensors[0].shape != tensors[1].shape)
    )


def _all_ignored(module, args) -> bool:
    if not isinstance(module, (nn.CrossEntropyLoss, nn.NLLLoss)) or module.reduction != "mean":
        return False
    target = args[1]
    return not target.is_floating_point() and bool((target == module.ignore_index).all())


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("info", INFOS, ids=[i.module_cls.__name__ for i in INFOS])
def test_module_db_inputs(info, dtype):
    inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True)
    assert inputs, "module_db returned no inputs"
    for sample in inputs:
        c = sample.constructor_input
        theirs = info.module_cls(*c.args, **c.kwargs)
        ours = TWINS[info.module_cls](*c.args, **c.kwargs)
        args = [_clone(a) for a in sample.forward_input.args]
        kwargs = {k: _clone(v) for k, v in sample.forward_input.kwargs.items()}
        if _broadcasts(args) and not isinstance(theirs, (nn.CrossEntropyLoss, nn.NLLLoss)):
            with pytest.raises(ValueError, match="shape"):
                ours(*args, **kwargs)
            continue
        ref = theirs(*args, **kwargs)
        if _all_ignored(theirs, args):
            # a deliberate difference from torch.nn (docs/semantics.md): its NaN mean over no counted position is our 0
            assert torch.isnan(ref)
            ref = torch.zeros_like(ref)
        ours_args = [_clone(a) for a in args]
        out = ours(*ours_args, **kwargs)
        torch.testing.assert_close(
            out, ref, equal_nan=True, msg=lambda m, d=sample.desc: f"{info.module_cls.__name__} {d}: {m}"
        )
        wrt = [a for a in args if torch.is_tensor(a) and a.requires_grad]
        ours_wrt = [a for a in ours_args if torch.is_tensor(a) and a.requires_grad]
        if wrt and ref.requires_grad:
            g = torch.randn(ref.shape, dtype=ref.dtype, generator=torch.Generator().manual_seed(0))
            ref_grads = torch.autograd.grad((ref * g).sum(), wrt, allow_unused=True)
            our_grads = torch.autograd.grad((out * g).sum(), ours_wrt, allow_unused=True)
            for got, want in zip(our_grads, ref_grads):
                if want is None:
                    assert got is None or torch.all(got == 0)
                    continue
                torch.testing.assert_close(got, want, equal_nan=True, msg=lambda m, d=sample.desc: f"{d} gradient: {m}")
