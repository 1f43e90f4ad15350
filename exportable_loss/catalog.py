"""Every loss by name, with example inputs for any batch size: what the CLI and the
compatibility matrix export. Each entry is a view of the loss's declaration (``LossSpec``) and
of its constructor's signature: nothing here lists losses or their options.

A user describes the loss to export by its options (``name=value`` strings, parsed by the type
of the constructor argument) and the per-sample shapes of its inputs; the example tensors keep
the declared example's dtypes and values (``LossEntry.example``).
"""

import dataclasses
import inspect
import os
import re
import typing
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from exportable_loss._registry import EXAMPLE_CLASSES, LossSpec, specs

NUM_CLASSES = EXAMPLE_CLASSES
# constructor arguments that are not options: reduction and backend have flags of their own,
# size_average and reduce are torch.nn's deprecated spellings of reduction
NOT_OPTIONS = ("reduction", "backend", "size_average", "reduce")
_NUMBERS = re.compile(r"[\[(]?\s*[-+.\deE]+(\s*[,\s]\s*[-+.\deE]+)*\s*[\])]?")


@dataclasses.dataclass(frozen=True)
class LossEntry:
    spec: LossSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cls(self) -> Type[nn.Module]:
        return self.spec.module

    @property
    def reductions(self) -> Tuple[str, ...]:
        return self.spec.reductions

    @property
    def backends(self) -> Tuple[str, ...]:
        return self.spec.backends

    @property
    def kwargs(self) -> Tuple[Tuple[str, object], ...]:
        return self.spec.example_options

    @property
    def inputs(self) -> List[str]:
        """The names of the forward arguments the example gives, in order."""
        names = [p for p in inspect.signature(self.cls.forward).parameters if p != "self"]
        return names[: len(self.spec.example(2, torch.Generator().manual_seed(0)))]

    def options(self) -> Dict[str, object]:
        """The constructor's options by name, with their types (reduction and backend aside)."""
        hints = typing.get_type_hints(self.cls.__init__)
        return {n: hints.get(n, str) for n in inspect.signature(self.cls).parameters if n not in NOT_OPTIONS}

    def parse_options(self, pairs: Sequence[str]) -> Dict[str, object]:
        """``["label_smoothing=0.1", "weight=1,2,0.5"]`` -> constructor options, each parsed by
        its argument's type: numbers, booleans (true/false), strings, ``none`` for an optional
        one, and tensors (class weights) as a comma-separated list or a file (``.pt``, ``.npy``,
        or text). ``ValueError`` naming the valid options for an unknown name."""
        valid = self.options()
        out: Dict[str, object] = {}
        for pair in pairs:
            name, sep, text = pair.partition("=")
            name = name.strip()
            if not sep or not name:
                raise ValueError(f"an option is written name=value; got {pair!r}")
            if name not in valid:
                raise ValueError(f"{self.name} has no option {name!r}; its options are {', '.join(valid)}")
            if name in out:
                raise ValueError(f"option {name} is given twice")
            out[name] = _parse_value(name, valid[name], text.strip())
        return out

    def make(
        self, reduction: str = "mean", backend: str = "torch", options: Optional[Mapping[str, object]] = None
    ) -> nn.Module:
        """The loss module with ``options`` (default: the options the example is meant for)."""
        chosen = dict(self.kwargs) if options is None else dict(options)
        return self.cls(reduction=reduction, backend=backend, **chosen)

    def example(
        self,
        batch: int,
        sample_weight: bool = False,
        seed: int = 0,
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
        ignore_index: Optional[int] = None,
    ) -> Tuple[Tensor, ...]:
        """Example tensors at batch size ``batch`` (and sample weights, if asked).

        ``shapes`` sets the per-sample shape of inputs by name (every dimension for an input
        without the batch dimension, such as a classifier matrix). An input not named follows
        the first input where the declared example ties them: one of the first input's shape
        takes its new shape, and class indices shaped as the first input without its class
        dimension (dim 1) take its new shape without it, with values in ``[0, classes)``.
        Reshaped floating-point inputs draw their values from the declared example's (so
        probabilities stay probabilities); reshaped class indices are uniform, with every
        fourth set to ``ignore_index`` when given."""
        g = torch.Generator().manual_seed(seed)
        data = tuple(self.spec.example(batch, g))
        if shapes:
            data = self._reshaped(data, shapes, g, ignore_index)
        return (*data, torch.rand(batch, generator=g)) if sample_weight else data

    def _reshaped(
        self,
        data: Tuple[Tensor, ...],
        shapes: Mapping[str, Sequence[int]],
        g: torch.Generator,
        ignore_index: Optional[int],
    ) -> Tuple[Tensor, ...]:
        names = self.inputs
        unknown = sorted(set(shapes) - set(names))
        if unknown:
            raise ValueError(f"{self.name} has no input {unknown[0]!r}; its inputs are {', '.join(names)}")
        for name, given in shapes.items():
            if any(int(d) < 1 for d in given):
                raise ValueError(f"every dimension of {name}'s shape must be at least 1; got {list(given)}")
        batched = self.batch_inputs(data)
        declared = [tuple(t.shape[1:] if b else t.shape) for t, b in zip(data, batched)]
        first = tuple(shapes.get(names[0], declared[0]))
        out = []
        for i, (name, t, b) in enumerate(zip(names, data, batched)):
            shape: Optional[Tuple[int, ...]] = tuple(shapes[name]) if name in shapes else None
            indices = not t.is_floating_point()
            follows_classes = i > 0 and b and indices and len(declared[0]) > 0 and declared[i] == declared[0][1:]
            if shape is None and i > 0 and b:
                shape = first if declared[i] == declared[0] else first[1:] if follows_classes else None
            classes_kept = not follows_classes or first[:1] == declared[0][:1]
            if shape is None or (shape == declared[i] and classes_kept):
                out.append(t)
                continue
            full = (t.shape[0], *shape) if b else shape
            if not indices:
                out.append(t.flatten()[torch.randint(0, t.numel(), full, generator=g)])
                continue
            classes = first[0] if follows_classes else max(int(t.max()) + 1, 1)
            values = torch.randint(0, classes, full, generator=g, dtype=t.dtype)
            if ignore_index is not None:
                values.view(-1)[::4] = ignore_index
            out.append(values)
        return tuple(out)

    def batch_inputs(self, args: Tuple[Tensor, ...]) -> List[bool]:
        """Which of ``example``'s tensors carry the batch dimension."""
        data = len(self.spec.example(2, torch.Generator().manual_seed(0)))
        batched = self.spec.batched
        return [batched is None or i in batched or i >= data for i in range(len(args))]


def _parse_value(name: str, kind: object, text: str) -> object:
    args = typing.get_args(kind)
    if type(None) in args:  # Optional[X]
        if text.lower() == "none":
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is Tensor:
        return _parse_tensor(name, text)
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in words:
            raise ValueError(f"option {name} is true or false; got {text!r}")
        return words[text.lower()]
    if kind in (int, float, str):
        try:
            return kind(text)  # type: ignore[operator]
        except ValueError:
            raise ValueError(
                f"option {name} takes {'an' if kind is int else 'a'} {kind.__name__}; got {text!r}"
            ) from None
    raise ValueError(f"option {name} of type {kind} cannot be given on the command line")


def _parse_tensor(name: str, text: str) -> Tensor:
    """A comma-separated list of numbers, or a file: ``.pt`` (a saved tensor), ``.npy``, or
    text with numbers separated by commas or white space."""
    if _NUMBERS.fullmatch(text):
        source = text.strip("[]()")
    elif not os.path.isfile(text):
        raise ValueError(f"option {name} takes a list of numbers (1,2,0.5) or a file; {text!r} is neither")
    elif text.endswith(".pt"):
        loaded = torch.load(text, weights_only=True)
        if not isinstance(loaded, Tensor):
            raise ValueError(f"option {name}: {text} holds a {type(loaded).__name__}, not a tensor")
        return loaded if loaded.is_floating_point() else loaded.float()
    elif text.endswith(".npy"):
        import numpy

        return torch.from_numpy(numpy.load(text)).float()
    else:
        with open(text) as f:
            source = f.read()
    try:
        return torch.tensor([float(v) for v in re.split(r"[,\s]+", source.strip()) if v])
    except ValueError:
        raise ValueError(f"option {name}: {text!r} holds something other than numbers") from None


LOSSES: Dict[str, LossEntry] = {name: LossEntry(spec) for name, spec in specs().items()}
# every reduction some loss accepts (KL divergence adds batchmean)
REDUCTIONS: Tuple[str, ...] = tuple(dict.fromkeys(r for e in LOSSES.values() for r in e.reductions))


def get(name: str) -> LossEntry:
    """The catalogue entry ``name``; ``ValueError`` naming the known losses otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]
