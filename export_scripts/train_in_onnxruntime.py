"""Train an MLP for 20 steps in onnxruntime alone (the AdamW update is inside the exported
graph) and follow the same 20 steps in PyTorch: the parameters agree.

    python export_scripts/train_in_onnxruntime.py [--optimizer adamw|sgd]
"""

import argparse
import os
import tempfile

import torch

from exportable_loss import CrossEntropyLoss
from exportable_loss.export import run_onnx
from exportable_loss.export.demo_models import demo, example_input
from exportable_loss.export.step import export_training_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    optimizer = parser.parse_args().optimizer
    # float64: AdamW divides by sqrt(v) + eps, which turns float32 rounding of near-zero
    # gradients into visible differences
    dtype = torch.float64
    model, loss = demo("mlp").to(dtype), CrossEntropyLoss().to(dtype)
    hyper = dict(lr=0.05, weight_decay=0.01)
    path = os.path.join(tempfile.mkdtemp(), "train.onnx")
    x, t, s = example_input("mlp", 6)
    export_training_step(model, loss, (x.to(dtype), t, s.to(dtype)), path, optimizer=optimizer, **hyper)

    params = [p.detach().clone() for p in model.parameters()]
    k = len(params)
    state = [torch.zeros_like(p) for p in params] * 2 + [torch.tensor(0.0, dtype=dtype)] if optimizer == "adamw" else []
    torch_opt = (torch.optim.AdamW if optimizer == "adamw" else torch.optim.SGD)(model.parameters(), **hyper)
    for step in range(20):
        x, t, s = example_input("mlp", 8 + step % 4, seed=step)
        x, s = x.to(dtype), s.to(dtype)
        outs = run_onnx(path, params + state + [x, t, s])  # one training step in onnxruntime
        params, state = outs[2 + k : 2 + 2 * k], outs[2 + 2 * k :]
        torch_opt.zero_grad()
        loss(model(x), t, s).backward()
        torch_opt.step()
        diff = max((a - b.detach()).abs().max().item() for a, b in zip(params, model.parameters()))
        print(f"step {step + 1:2d}: loss {outs[0].item():.6f}, max parameter difference to PyTorch {diff:.1e}")


if __name__ == "__main__":
    main()
