"""Bad arguments raise ValueError naming the argument, what was expected and what was given,
from metadata alone (checked on meta tensors, which have no data to synchronise on)."""

import pytest
import torch
from cases import CASES, make_inputs

import exportable_loss as el
from exportable_loss import functional as LF


@pytest.mark.parametrize("cls", [el.CrossEntropyLoss, el.NLLLoss, el.MSELoss, el.FocalLoss, el.KLDivLoss])
def test_unknown_reduction_and_backend_at_construction(cls):
    with pytest.raises(ValueError, match=r"reduction must be one of 'none', 'per_sample', 'mean', 'sum'.*'avg'"):
        cls(reduction="avg")
    with pytest.raises(ValueError, match=r"backend must be one of 'torch', 'triton', 'auto'; got 'cuda'"):
        cls(backend="cuda")


def test_batchmean_only_for_kl():
    el.KLDivLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="reduction must be one of"):
        el.MSELoss(reduction="batchmean")
    with pytest.raises(ValueError, match="reduction must be one of"):
        LF.mse_loss(torch.zeros(2), torch.zeros(2), reduction="batchmean")


@pytest.mark.parametrize("bad", [dict(label_smoothing=1.5), dict(z_loss=-1.0), dict(logit_softcap=0.0)])
def test_cross_entropy_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        el.CrossEntropyLoss(**bad)


def test_other_options():
    with pytest.raises(ValueError, match="beta must be non-negative; got -1"):
        el.SmoothL1Loss(beta=-1.0)
    with pytest.raises(ValueError, match="delta must be positive; got 0"):
        el.HuberLoss(delta=0.0)
    with pytest.raises(ValueError, match="gamma"):
        el.FocalLoss(gamma=-2.0)


def _meta(case, n=6):
    return tuple(a.detach().to("meta") for a in make_inputs(case, n))


@pytest.mark.parametrize("name", list(CASES))
def test_checks_read_no_data(name):
    """Every check and the whole loss run on meta tensors: nothing reads a value."""
    case = CASES[name]
    data = _meta(case)
    s = torch.ones(6, device="meta")
    for reduction in case.reductions:
        assert case.make(reduction).to("meta")(*data, s).device.type == "meta"
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(6,\).*got \(5,\)"):
        case.make("mean").to("meta")(*data, torch.ones(5, device="meta"))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(6,\).*got \(6, 1\)"):
        case.make("mean").to("meta")(*data, torch.ones(6, 1, device="meta"))
    with pytest.raises(
        ValueError, match="normalizer is used only by reduction='mean' or 'batchmean'; got reduction='sum'"
    ):
        case.make("sum").to("meta")(*data, None, torch.tensor(3.0, device="meta"))
    with pytest.raises(ValueError, match=r"normalizer must be a 0-dim tensor; got \(1,\)"):
        case.make("mean").to("meta")(*data, None, torch.ones(1, device="meta"))
    # a data tensor one sample short: its name and both shapes in the message
    with pytest.raises(ValueError, match=r"shape.*\(5,"):
        case.make("mean").to("meta")(*data[:-1], data[-1][:-1])


@pytest.mark.parametrize("name", ["mse", "l1", "smooth_l1", "huber", "kl", "bce_logits", "focal"])
def test_mismatched_shapes_raise_instead_of_broadcasting(name):
    case = CASES[name]
    x, t = _meta(case)[:2]
    with pytest.raises(
        ValueError, match=r"input and target must have the same shape; got input \(6, .*\) and target \(1, "
    ):
        case.make("mean").to("meta")(x, t[:1])


def test_class_target_checks():
    x = torch.zeros(6, 5, 3, device="meta")
    with pytest.raises(
        ValueError,
        match=r"class-index target must have shape \(6, 3\) for input \(6, 5, 3\) \(classes at dim 1\); "
        r"got target \(6, 5\); for logits with the classes last \(3 classes\), pass class_dim=-1",
    ):  # (B, T, V) logits with the default class_dim: the message says what to do
        el.CrossEntropyLoss()(x, torch.zeros(6, 5, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"class-index target must have shape \(6, 5\) .*\(classes at dim 2\)"):
        el.CrossEntropyLoss(class_dim=-1)(x, torch.zeros(6, 3, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"class_dim must be 1 \(logits \(N, C, ...\)\) or -1 .*; got 2"):
        el.CrossEntropyLoss(class_dim=2)
    with pytest.raises(ValueError, match=r"class_dim must be 1 .*; got 0"):
        el.functional.cross_entropy(x, torch.zeros(6, 3, dtype=torch.long, device="meta"), class_dim=0)
    with pytest.raises(ValueError, match=r"class-probability target must have the input's shape \(6, 5, 3\); got"):
        el.CrossEntropyLoss()(x, torch.zeros(6, 3, device="meta"))
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\), one weight per class .*got \(4,\)"):
        el.CrossEntropyLoss(weight=torch.ones(4, device="meta"))(x, torch.zeros(6, 3, dtype=torch.long, device="meta"))
    with pytest.raises(
        ValueError, match="target must hold integer class indices or float probabilities; got dtype torch.bool"
    ):
        el.CrossEntropyLoss()(x, torch.zeros(6, 3, dtype=torch.bool, device="meta"))
    with pytest.raises(ValueError, match="target must hold integer class indices; got dtype torch.float32"):
        el.NLLLoss()(x, torch.zeros(6, 5, 3, device="meta"))
    with pytest.raises(ValueError, match="input must be a floating-point tensor; got dtype torch.int64"):
        el.CrossEntropyLoss()(torch.zeros(6, 5, dtype=torch.long), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="0-dim"):
        el.CrossEntropyLoss()(torch.tensor(1.0), torch.tensor(0))


def test_devices_must_agree():
    with pytest.raises(ValueError, match=r"target must be on the input's device cpu; got meta"):
        el.MSELoss()(torch.zeros(6, 2), torch.zeros(6, 2, device="meta"))
    with pytest.raises(ValueError, match=r"sample_weight must be on the input's device cpu; got meta"):
        el.MSELoss()(torch.zeros(6, 2), torch.zeros(6, 2), torch.ones(6, device="meta"))


def test_sample_weight_must_be_floating():
    with pytest.raises(ValueError, match="sample_weight must be a floating-point tensor; got dtype torch.int64"):
        el.MSELoss()(torch.zeros(6, 2), torch.zeros(6, 2), torch.ones(6, dtype=torch.long))


def test_validate_checks_weights_for_non_finite_values():
    loss = el.CrossEntropyLoss(validate=True)
    with pytest.raises(ValueError, match="sample_weight must be finite"):
        loss(torch.zeros(6, 5), torch.zeros(6, dtype=torch.long), torch.tensor([1.0, float("inf"), 1, 1, 1, 1]))


def test_compiled_and_exported_losses_keep_the_shape_checks():
    """Under torch.compile the eager check is traced (the error carries its message); a
    torch.export program carries the shape constraint as a guard."""
    torch._dynamo.reset()
    compiled = torch.compile(el.MSELoss(), fullgraph=True, dynamic=True, backend="aot_eager")
    compiled(torch.randn(6, 3), torch.randn(6, 3))
    with pytest.raises(Exception, match="input and target must have the same shape"):
        compiled(torch.randn(7, 3), torch.randn(7, 2))
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(
        el.MSELoss(), (torch.randn(6, 3), torch.randn(6, 3)), dynamic_shapes=({0: batch}, {0: batch})
    )
    with pytest.raises(Exception, match="Guard failed|size"):
        program.module()(torch.randn(7, 3), torch.randn(8, 3))
