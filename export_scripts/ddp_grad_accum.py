"""DDP + gradient accumulation with an exact loss: every micro-batch divides by the denominator
of the whole optimizer step (all ranks, all micro-batches), so uneven padding changes nothing.

    torchrun --nproc-per-node 2 export_scripts/ddp_grad_accum.py      # CPU (gloo) or GPUs (nccl)

Rank 0 also replays each step in one process on the full batch and prints the largest
parameter difference (float32 rounding only).
"""

import argparse
import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn

from exportable_loss import CrossEntropyLoss
from exportable_loss.distributed import logged_loss, step_normalizer

VOCAB, DIM, TOKENS = 11, 16, 8


def micro_batches(step: int, rank: int, world: int, accumulation: int):
    """This rank's micro-batches of one step: token sequences with uneven padding."""
    out = []
    for i in range(world * accumulation):
        g = torch.Generator().manual_seed(1000 * step + i)
        n = 3 + i % 4
        x = torch.randn(n, TOKENS, DIM, generator=g)
        t = torch.randint(0, VOCAB, (n, TOKENS), generator=g)
        t[:, TOKENS - (i * 3) % TOKENS :] = -100  # padding, different in every micro-batch
        out.append((x, t))
    return out[rank * accumulation : (rank + 1) * accumulation], out


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 32), nn.GELU(), nn.Linear(32, VOCAB))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--accumulation", type=int, default=2)
    args = parser.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu")
    model = make_model().to(device)
    ddp = nn.parallel.DistributedDataParallel(model)
    loss_fn = CrossEntropyLoss(label_smoothing=0.1).to(device)  # reduction="mean"
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    reference = make_model()  # rank 0 replays the steps on the full batch in one process
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)

    for step in range(args.steps):
        mine, everything = micro_batches(step, rank, world, args.accumulation)
        mine = [(x.to(device), t.to(device)) for x, t in mine]
        # the whole step's denominator: this rank's targets, one all-reduce, no host sync
        normalizer = step_normalizer(loss_fn, [t for _, t in mine])
        accumulated = torch.zeros((), device=device)
        for i, (x, t) in enumerate(mine):
            sync = contextlib.nullcontext() if i == len(mine) - 1 else ddp.no_sync()
            with sync:
                loss = loss_fn(ddp(x).transpose(1, 2), t, normalizer=normalizer)
                loss.backward()
            accumulated += loss.detach()
        optimizer.step()
        optimizer.zero_grad()
        global_loss = logged_loss(accumulated)  # the exact mean over every rank's tokens

        if rank == 0:
            # the whole step as one batch (every micro-batch has TOKENS positions per sample)
            x = torch.cat([x for x, _ in everything])
            t = torch.cat([t for _, t in everything])
            ref_loss = CrossEntropyLoss(label_smoothing=0.1)(reference(x).transpose(1, 2), t)
            ref_loss.backward()
            ref_optimizer.step()
            ref_optimizer.zero_grad()
            diff = max((a.cpu() - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
            print(
                f"step {step}: loss {global_loss.item():.6f} (single process, full batch: {ref_loss.item():.6f}); "
                f"max parameter difference {diff:.1e}",
                flush=True,
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
