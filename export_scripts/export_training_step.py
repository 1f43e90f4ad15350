"""Export the training step of a small transformer block under a weighted cross-entropy loss:
one ONNX graph giving the loss, the per-sample losses and every parameter's gradient; then
check onnxruntime's gradients against torch.autograd at another batch size.

    python export_scripts/export_training_step.py [--out step.onnx]
"""

import argparse

import torch

from exportable_loss import CrossEntropyLoss
from exportable_loss.export import run_onnx
from exportable_loss.export.demo_models import demo, example_input
from exportable_loss.export.step import export_training_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="step.onnx")
    out = parser.parse_args().out
    model = demo("transformer")
    loss = CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0]), label_smoothing=0.1)
    names = export_training_step(model, loss, example_input("transformer", 6), out)
    print(f"wrote {out}\n  inputs:  {', '.join(names['inputs'])}\n  outputs: {', '.join(names['outputs'])}")

    x, target, sample_weight = example_input("transformer", 11, seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_ort, per_sample_ort, *grads_ort = run_onnx(out, [p.detach() for p in params] + [x, target, sample_weight])
    loss_pt = loss(model(x), target, sample_weight)
    grads_pt = torch.autograd.grad(loss_pt, params)
    err = max((a - b).abs().max().item() for a, b in zip(grads_ort, grads_pt))
    print(
        f"batch 11: loss onnxruntime {loss_ort.item():.6f} vs PyTorch {loss_pt.item():.6f}; "
        f"per-sample losses {tuple(per_sample_ort.shape)}"
    )
    print(f"max gradient difference over {len(params)} parameters: {err:.2e}")


if __name__ == "__main__":
    main()
