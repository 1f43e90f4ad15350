"""Three small demo models for training-step export: an MLP, a transformer block, a convnet.
Each classifies into ``NUM_CLASSES`` classes; ``example_input(n)`` gives a batch of n."""

import math
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

NUM_CLASSES = 4


class MLP(nn.Module):
    def __init__(self, features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block; attention written with matmul and softmax, whose backward exports to
    ONNX (``scaled_dot_product_attention``'s backward has no ONNX translation)."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


class ConvNet(nn.Module):
    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, padding=1),
            nn.GroupNorm(2, 4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 3 * 3, NUM_CLASSES),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


DEMOS: Dict[str, Tuple[Callable[[], nn.Module], Tuple[int, ...]]] = {
    "mlp": (MLP, (8,)),
    "transformer": (TransformerBlock, (5, 8)),
    "convnet": (ConvNet, (2, 6, 6)),
}


def demo(name: str, seed: int = 0) -> nn.Module:
    if name not in DEMOS:
        raise ValueError(f"unknown demo model {name!r}; known: {', '.join(DEMOS)}")
    torch.manual_seed(seed)
    return DEMOS[name][0]()


def example_input(name: str, n: int, seed: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """(input, class-index target with some padding, sample weights) for demo ``name``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *DEMOS[name][1], generator=g)
    t = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    t[::5] = -100
    return x, t, torch.rand(n, generator=g)
