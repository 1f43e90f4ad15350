"""Tensor-parallel language-model head: the vocabulary sharded over the ranks, the loss exact.

    torchrun --nproc-per-node 2 export_scripts/vocab_parallel_lm.py      # CPU (gloo) or GPUs (nccl)

Every rank holds the whole (small) trunk and the output layer's rows of its share of the
vocabulary. ``VocabParallelLinearCrossEntropyLoss`` computes the cross entropy of the whole
vocabulary from the hidden states and this rank's rows, without any rank holding the logits (or,
with ``--logits``, ``VocabParallelCrossEntropyLoss`` on this rank's logits, the hidden states passed
through ``all_reduce_gradient``). Each rank's gradient of
its rows is its slice of the whole gradient and the trunk's gradient is whole on every rank, so
the ranks step in lockstep without DDP. Rank 0 replays each step in one process with the whole
output layer (``FusedLinearCrossEntropyLoss``) and prints the largest parameter difference.
"""

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn

from exportable_loss import FusedLinearCrossEntropyLoss
from exportable_loss.distributed import (
    VocabParallelCrossEntropyLoss,
    VocabParallelLinearCrossEntropyLoss,
    all_reduce_gradient,
)

VOCAB, DIM, TOKENS, BATCH = 64, 16, 12, 4
OPTIONS = dict(label_smoothing=0.1, z_loss=1e-4)


def batch(step: int, device: torch.device):
    """Token sequences with uneven padding; the labels are the next tokens."""
    g = torch.Generator().manual_seed(step)
    tokens = torch.randint(0, VOCAB, (BATCH, TOKENS + 1), generator=g)
    labels = tokens[:, 1:].clone()
    for i in range(BATCH):
        labels[i, TOKENS - 2 * i :] = -100
    return tokens[:, :-1].to(device), labels.to(device)


def make_model() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict(
        dict(
            embed=nn.Embedding(VOCAB, DIM),
            trunk=nn.Sequential(nn.Linear(DIM, DIM), nn.Tanh()),
            head=nn.Linear(DIM, VOCAB),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--logits", action="store_true", help="compute this rank's logits, then the loss")
    args = parser.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu")
    if VOCAB % world:
        raise SystemExit(f"the vocabulary ({VOCAB}) must split evenly over {world} ranks (pad it otherwise)")
    shard = VOCAB // world
    model = make_model().to(device)
    # this rank's rows of the output layer: the classes [rank * shard, (rank + 1) * shard)
    rows = slice(rank * shard, (rank + 1) * shard)
    head_weight = nn.Parameter(model["head"].weight.detach()[rows].clone())
    head_bias = nn.Parameter(model["head"].bias.detach()[rows].clone())
    parameters = list(model["embed"].parameters()) + list(model["trunk"].parameters()) + [head_weight, head_bias]
    optimizer = torch.optim.SGD(parameters, lr=0.5)
    linear_loss = VocabParallelLinearCrossEntropyLoss(**OPTIONS)
    logits_loss = VocabParallelCrossEntropyLoss(class_dim=-1, **OPTIONS)  # (BATCH, TOKENS, shard) logits

    reference = make_model()  # rank 0 replays every step with the whole output layer
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    ref_loss_fn = FusedLinearCrossEntropyLoss(**OPTIONS)

    for step in range(args.steps):
        tokens, labels = batch(step, device)
        hidden = model["trunk"](model["embed"](tokens))  # (BATCH, TOKENS, DIM), whole on every rank
        if args.logits:
            # the hidden states' gradient must be summed over the ranks: all_reduce_gradient
            hidden = all_reduce_gradient(hidden)
            loss = logits_loss(torch.nn.functional.linear(hidden, head_weight, head_bias), labels)
        else:
            loss = linear_loss(hidden, head_weight, labels, head_bias)
        loss.backward()  # the trunk's gradient is summed over the ranks inside the loss's backward
        optimizer.step()
        optimizer.zero_grad()

        if rank == 0:
            tokens, labels = tokens.cpu(), labels.cpu()
            ref_hidden = reference["trunk"](reference["embed"](tokens))
            ref_loss = ref_loss_fn(ref_hidden, reference["head"].weight, labels, reference["head"].bias)
            ref_loss.backward()
            ref_optimizer.step()
            ref_optimizer.zero_grad()
            mine = list(model["embed"].parameters()) + list(model["trunk"].parameters())
            theirs = list(reference["embed"].parameters()) + list(reference["trunk"].parameters())
            mine += [head_weight, head_bias]
            theirs += [reference["head"].weight[rows], reference["head"].bias[rows]]
            diff = max((a.detach().cpu() - b.detach()).abs().max().item() for a, b in zip(mine, theirs))
            print(
                f"step {step}: loss {loss.item():.6f} (single process, whole vocabulary: {ref_loss.item():.6f}); "
                f"max parameter difference {diff:.1e}",
                flush=True,
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
