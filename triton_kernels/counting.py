"""What a call launches and what each kernel launch moves, counted on the CPU.

``with Counter() as c: ...`` records, for the code inside it:

* every Triton kernel launch (under Triton's interpreter, ``TRITON_INTERPRET=1``), with the
  bytes it loads and stores per argument, from the interpreter's masked loads and stores
  (masked-off lanes move nothing): the bytes requested, and the distinct bytes touched (what
  reaches DRAM when re-reads hit the cache, as the class-weight vector read by every row does);
* every PyTorch operator that launches a kernel on a GPU (every ATen operator but views and
  allocations), inside the fused ops too;
* every host synchronisation (``.item()``, ``nonzero`` and the like).

Not counted: the interpreter's own copies of a kernel's arguments, and autograd writing the
gradient into ``.grad`` (the same for every implementation).

Each kernel module declares what its launches move (``TRAFFIC``: per kernel, the arguments it
reads and writes and over what extent, ``"elements"`` being one pass over the big tensor);
``expected`` turns a declaration into bytes for a recorded launch, so a test can hold every
kernel to its stated passes.
"""

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ATen operators that launch no kernel: allocations and metadata (views are recognised by their
# schema); and those that read a value back to the host.
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "set_", "resize_"}
SYNCS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal", "masked_select", "unique"}


@dataclass
class Launch:
    """One kernel launch: a Triton kernel (with its arguments and the bytes it moved) or a
    PyTorch operator."""

    name: str
    triton: bool
    args: Dict[str, Any] = field(default_factory=dict)
    grid: Tuple[int, ...] = ()
    # per storage (the names of the arguments that point into it): bytes by "load"/"store",
    # requested and distinct
    requested: Dict[Tuple[Tuple[str, ...], str], int] = field(default_factory=dict)
    distinct: Dict[Tuple[Tuple[str, ...], str], int] = field(default_factory=dict)
    _ranges: list = field(default_factory=list, repr=False)
    _addresses: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, name: str, args: Dict[str, Any], grid) -> "Launch":
        launch = cls(name, triton=True, args=args, grid=tuple(grid))
        storages: Dict[int, Tuple[int, int, List[str]]] = {}
        for arg, value in args.items():
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                start = storage.data_ptr()
                storages.setdefault(storage._cdata, (start, start + storage.nbytes(), []))[2].append(arg)
        launch._ranges = [(start, end, tuple(names)) for start, end, names in storages.values()]
        return launch

    def record(self, kind: str, ptrs: np.ndarray, mask: np.ndarray, itemsize: int) -> None:
        addresses = ptrs[np.broadcast_to(mask, ptrs.shape)].astype(np.uint64).ravel()
        for start, end, names in self._ranges:
            inside = addresses[(addresses >= start) & (addresses < end)]
            if inside.size:
                key = (names, kind)
                self.requested[key] = self.requested.get(key, 0) + int(inside.size) * itemsize
                self._addresses.setdefault(key, []).append((inside, itemsize))

    def finish(self) -> None:
        for key, parts in self._addresses.items():
            self.distinct[key] = int(np.unique(np.concatenate([a for a, _ in parts])).size) * parts[0][1]
        self._addresses.clear()

    def moved(self, distinct: bool = True) -> int:
        return sum((self.distinct if distinct else self.requested).values())


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: "Counter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        counter = self.counter
        if counter.inside_triton:  # the interpreter's own copies of the arguments
            return func(*args, **kwargs)
        if func.namespace == "exportable_loss":
            # a fused op: count what its implementation launches
            with self:
                return func.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args, **kwargs)
        node = torch._C._current_autograd_node()
        if node is not None and "AccumulateGrad" in node.name():
            # writing .grad: the same for every implementation (and, only under this mode,
            # a copy where autograd would otherwise take the gradient's memory)
            return func(*args, **kwargs)
        name = func._opname
        if name in SYNCS:
            counter.syncs.append(str(func))
        if not func.is_view and name not in NO_KERNEL:
            counter.launches.append(Launch(str(func), triton=False))
        return func(*args, **kwargs)


class Counter:
    """Counts launches, bytes moved and host synchronisations of the code inside ``with``."""

    def __init__(self) -> None:
        self.launches: List[Launch] = []
        self.syncs: List[str] = []
        self.inside_triton = False
        self._current: Optional[Launch] = None
        self._undo: List[Callable[[], None]] = []

    @property
    def triton_launches(self) -> List[Launch]:
        return [launch for launch in self.launches if launch.triton]

    def _patch(self, owner, name: str, replacement) -> None:
        original = getattr(owner, name)
        setattr(owner, name, replacement(original))
        self._undo.append(lambda: setattr(owner, name, original))

    def __enter__(self) -> "Counter":
        from triton.runtime import interpreter

        counter = self

        def run(original):
            def wrapper(fn_self, *args, grid, warmup, **kwargs):
                if warmup:
                    return original(fn_self, *args, grid=grid, warmup=warmup, **kwargs)
                bound = _bind(fn_self.fn, args, kwargs)
                launch = Launch.of(fn_self.fn.__name__, bound, grid)
                counter.launches.append(launch)
                counter._current, counter.inside_triton = launch, True
                try:
                    return original(fn_self, *args, grid=grid, warmup=warmup, **kwargs)
                finally:
                    counter._current, counter.inside_triton = None, False
                    launch.finish()

            return wrapper

        def load(original):
            def wrapper(builder, ptrs, mask, other, *rest):
                if counter._current is not None:
                    itemsize = ptrs.get_element_ty().primitive_bitwidth // 8
                    counter._current.record("load", ptrs.data, mask.data, itemsize)
                return original(builder, ptrs, mask, other, *rest)

            return wrapper

        def store(original):
            def wrapper(builder, ptrs, value, mask, *rest):
                if counter._current is not None:
                    itemsize = ptrs.get_element_ty().primitive_bitwidth // 8
                    counter._current.record("store", ptrs.data, mask.data, itemsize)
                return original(builder, ptrs, value, mask, *rest)

            return wrapper

        self._patch(interpreter.InterpretedFunction, "run", run)
        self._patch(interpreter.InterpreterBuilder, "create_masked_load", load)
        self._patch(interpreter.InterpreterBuilder, "create_masked_store", store)
        self._mode = _Dispatch(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        while self._undo:
            self._undo.pop()()


def _bind(fn, args, kwargs) -> Dict[str, Any]:
    names = list(inspect.signature(fn).parameters)
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return bound


def planned(call: Callable[[], object]) -> List[Tuple[Launch, object, tuple, dict]]:
    """The Triton launches ``call()`` would make, without running a kernel: each as a
    ``Launch`` (no bytes counted) with its JIT function and the launch's arguments. The
    launchers run for real, so ``call`` may pass meta tensors (no memory, and the launchers then
    choose as for a GPU)."""
    from triton.runtime import interpreter, jit

    out: List[Tuple[Launch, object, tuple, dict]] = []

    def capture(fn_self, *args, grid, warmup, **kwargs):
        fn = fn_self.fn
        bound = _bind(fn, args, kwargs)
        grid = grid(bound) if callable(grid) else grid
        out.append((Launch.of(fn.__name__, bound, grid), fn_self, args, kwargs))

    originals = [(cls, cls.run) for cls in (jit.JITFunction, interpreter.InterpretedFunction)]
    for cls, _ in originals:
        cls.run = capture
    try:
        call()
    finally:
        for cls, original in originals:
            cls.run = original
    return out


# ---------------------------------------------------------------- the kernels' declarations


def _declaration(name: str):
    import exportable_loss.triton_kernels as tk

    for module in ("cross_entropy", "pointwise", "reduction"):
        traffic = getattr(tk.kernels(module), "TRAFFIC", {})
        if name in traffic:
            return traffic[name]
    raise KeyError(f"no traffic declaration for kernel {name!r}")


def terms(launch: Launch) -> List[Tuple[str, str, str]]:
    """The (argument, "load"/"store", extent) the kernel declares for this launch's constexprs."""
    declared_terms, _ = _declaration(launch.name)
    return declared_terms(launch.args)


def passes(launch: Launch) -> int:
    """Passes over the big tensor (the logits, the input) the kernel declares for this launch."""
    return sum(extent == "elements" for _, _, extent in terms(launch))


def expected(launch: Launch) -> Dict[Tuple[Tuple[str, ...], str], int]:
    """The distinct bytes per storage and direction that the declaration says this launch moves."""
    declared_terms, extents = _declaration(launch.name)
    sizes = extents(launch.args, launch.grid)
    out: Dict[Tuple[Tuple[str, ...], str], int] = {}
    for arg, kind, extent in declared_terms(launch.args):
        key = next((names, kind) for _, _, names in launch._ranges if arg in names)
        tensor = launch.args[arg]
        out[key] = out.get(key, 0) + sizes[extent] * tensor.element_size()
    return out
