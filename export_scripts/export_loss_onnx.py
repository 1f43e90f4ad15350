"""Export a class-weighted cross-entropy loss with per-sample weights to ONNX, run it in
onnxruntime at another batch size, and print the comparison with eager PyTorch.

    python export_scripts/export_loss_onnx.py [--out DIR]
"""

import argparse
import os
import tempfile

import torch

from exportable_loss import CrossEntropyLoss
from exportable_loss.export import check_onnx_model, export_onnx, run_onnx


def batch(n: int, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 2
    target = torch.randint(0, classes, (n,), generator=g)
    target[::5] = -100  # padding: ignored
    sample_weight = torch.rand(n, generator=g)
    return logits, target, sample_weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=tempfile.mkdtemp(prefix="exportable-loss-"), help="output folder")
    out = parser.parse_args().out
    weight = torch.linspace(0.5, 2.0, 10)
    print(f"{'reduction':<11} {'exporter':<12} {'eager':>12} {'onnxruntime':>12} {'max abs err':>12}")
    for reduction in ("mean", "per_sample"):
        loss = CrossEntropyLoss(weight=weight, label_smoothing=0.1, reduction=reduction)
        for dynamo in (True, False):
            path = os.path.join(out, f"ce_{reduction}_{'dynamo' if dynamo else 'torchscript'}.onnx")
            export_onnx(loss, batch(8), path, dynamo=dynamo)
            inputs = batch(37, seed=1)  # another batch size than the example's
            eager = loss(*inputs)
            (ort,) = run_onnx(path, inputs)
            check_onnx_model(path, [eager])
            err = (ort - eager).abs().max().item()
            shown = lambda t: f"{t.item():.6f}" if t.dim() == 0 else f"shape {tuple(t.shape)}"  # noqa: E731
            exporter = "dynamo" if dynamo else "torchscript"
            print(f"{reduction:<11} {exporter:<12} {shown(eager):>12} {shown(ort):>12} {err:>12.2e}")
            if not torch.allclose(ort, eager, rtol=1e-4, atol=1e-5):
                raise SystemExit(f"onnxruntime differs from eager for {path}")
    print(f"ONNX files in {out}")


if __name__ == "__main__":
    main()
