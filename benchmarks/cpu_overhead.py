"""Overhead of the torch backend against the matching torch.nn loss, forward+backward, eager.

Prints, per loss and reduction, the median time of each and the ratio ours / torch.nn, in one
run on the same machine. Targets (issue 7): at most 1.05 at (4096, 1000) cross entropy and
1M-element MSE, for none/mean/sum without weights. Also prints the cost of the SPEC extras
(sample weights, per_sample) against the unweighted mean.

    python benchmarks/cpu_overhead.py [--repeats 50] [--json FILE]
"""

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import nn

import exportable_loss as el


def _time(fn: Callable[[], None], repeats: int) -> float:
    for _ in range(5):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _fwd_bwd(loss: nn.Module, x: torch.Tensor, *rest: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        out = loss(x, *rest)
        out.backward(torch.ones_like(out))

    return step


def run(repeats: int) -> List[Dict[str, object]]:
    torch.manual_seed(0)
    ce_x = torch.randn(4096, 1000, requires_grad=True)
    ce_t = torch.randint(0, 1000, (4096,))
    mse_x = torch.randn(1024, 1024, requires_grad=True)
    mse_t = torch.randn(1024, 1024)
    rows = []
    pairs = [
        ("cross_entropy (4096, 1000)", el.CrossEntropyLoss, nn.CrossEntropyLoss, ce_x, ce_t),
        ("mse (1M)", el.MSELoss, nn.MSELoss, mse_x, mse_t),
    ]
    for name, ours_cls, theirs_cls, x, t in pairs:
        base = None
        for reduction in ("none", "mean", "sum"):
            # interleave the two so drift on a shared machine hits both alike
            ours_times, theirs_times = [], []
            for _ in range(3):
                theirs_times.append(_time(_fwd_bwd(theirs_cls(reduction=reduction), x, t), repeats))
                ours_times.append(_time(_fwd_bwd(ours_cls(reduction=reduction), x, t), repeats))
            ours, theirs = min(ours_times), min(theirs_times)
            base = ours if reduction == "mean" else base
            rows.append(
                dict(loss=name, variant=reduction, ours_ms=ours * 1e3, torch_nn_ms=theirs * 1e3, ratio=ours / theirs)
            )
        n = x.shape[0]
        extras = {
            "mean + sample_weight": (ours_cls(reduction="mean"), (t, torch.rand(n))),
            "per_sample": (ours_cls(reduction="per_sample"), (t,)),
            "per_sample + sample_weight": (ours_cls(reduction="per_sample"), (t, torch.rand(n))),
        }
        for variant, (loss, rest) in extras.items():
            ours = _time(_fwd_bwd(loss, x, *rest), repeats)
            rows.append(dict(loss=name, variant=variant, ours_ms=ours * 1e3, torch_nn_ms=None, ratio=ours / base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="torch backend overhead against torch.nn on this CPU")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = run(args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| loss | variant | ours (ms) | torch.nn (ms) | ratio |\n|---|---|---:|---:|---:|")
    for r in rows:
        theirs = f"{r['torch_nn_ms']:.3f}" if r["torch_nn_ms"] is not None else "(vs our mean)"
        print(f"| {r['loss']} | {r['variant']} | {r['ours_ms']:.3f} | {theirs} | {r['ratio']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
