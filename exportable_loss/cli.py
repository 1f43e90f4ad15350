"""The ``exportable-loss`` command: export a loss or a training step, print the compatibility
matrix, run the benchmarks. It parses arguments and prints; the work lives in the library.

    exportable-loss export LOSS [--option NAME=VALUE ...] [--shape INPUT=DIMS ...]
                                [--dynamic INPUT:DIM=LABEL ...] [--reduction R] [--backend B]
                                [--sample-weight] [--demo] [--format F] [--exporter E] -o FILE
    exportable-loss export-step [--model NAME|module:factory] [--loss LOSS] [--option ...]
                                [--format onnx|executorch] [--max-batch N] -o FILE.onnx|FILE.pte
    exportable-loss matrix [--losses ...] [--reductions ...] [--backends ...] [--paths ...] [-o FILE]
    exportable-loss bench [--quick] [--out DIR] [--sweep] [--ops]
    exportable-loss bench-linear-ce [--shape TOKENS HIDDEN VOCAB] [--repeats N] [--out DIR]
    exportable-loss kernels | gpu-suite (see cli_gpu.py)

Exit status: 0 success, 1 a verification failed (or the work itself failed), 2 a usage error
(bad arguments, nothing to run, a destination that cannot be written, a missing extra), each
checked before the work starts. Errors are one line; --verbose adds the traceback.
"""

import argparse
import copy
import importlib
import importlib.metadata
import json
import os
import sys
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from exportable_loss import _io, catalog, cli_gpu, matrix
from exportable_loss.export import ExportError, check_destination, export, run_onnx

BATCH = 6  # the example batch; the artifact is verified at other sizes


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def _version() -> str:
    try:
        version = importlib.metadata.version("exportable-loss")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed)"
    return f"exportable-loss {version} (torch {torch.__version__})"


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}; got {value}")
        return value

    parse.__name__ = "int"  # argparse's message: "invalid int value: 'x'"
    return parse


_positive = _at_least(1)


def _shapes(items: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """``["input=3,16", "target=16"]`` -> ``{"input": (3, 16), "target": (16,)}``."""
    out = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            shape = None
        if not sep or not name or shape is None or any(d < 1 for d in shape):
            raise ValueError(
                f"--shape is INPUT=D1,D2,... with positive sizes (per sample, e.g. input=3,16); got {item!r}"
            )
        out[name] = shape
    return out


def _dynamic(items: Sequence[str], names: Sequence[str], batched: Sequence[bool]) -> Dict[str, Dict[int, str]]:
    """Dim 0 of every batched input is ``batch``; ``["input:2=T", "target:1=T"]`` adds more."""
    out: Dict[str, Dict[int, str]] = {n: {0: "batch"} if b else {} for n, b in zip(names, batched)}
    for item in items:
        where, sep, label = item.partition("=")
        name, colon, dim = where.partition(":")
        if not sep or not colon or not dim.lstrip("-").isdigit() or not label.isidentifier():
            raise ValueError(f"--dynamic is INPUT:DIM=LABEL (DIM counts the batch as 0, e.g. input:2=T); got {item!r}")
        if name not in out:
            raise ValueError(f"--dynamic {item}: no input {name!r}; the inputs are {', '.join(names)}")
        out[name][int(dim)] = label
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    entry = catalog.get(args.loss)
    if args.reduction not in entry.reductions:
        raise ValueError(f"--reduction of {entry.name} is one of {', '.join(entry.reductions)}; got {args.reduction!r}")
    format = check_destination(args.output, args.format)
    if args.exporter is not None and format != "onnx":
        raise ValueError(f"--exporter chooses the ONNX exporter; the format is {format}")
    options = {**(dict(entry.kwargs) if args.demo else {}), **entry.parse_options(args.option)}
    module = entry.make(args.reduction, args.backend, options)
    shapes = _shapes(args.shape)
    example = entry.example(
        BATCH, sample_weight=args.sample_weight, shapes=shapes, ignore_index=getattr(module, "ignore_index", None)
    )
    names = entry.inputs + (["sample_weight"] if args.sample_weight else [])
    dynamic = _dynamic(args.dynamic, names, entry.batch_inputs(example))
    try:
        report = export(
            module,
            example,
            args.output,
            format=format,
            dynamo=args.exporter != "torchscript",
            input_names=names,
            dynamic_shapes=dynamic,
        )
    except ExportError as e:
        if not str(e).startswith("the module rejects the example inputs"):
            raise
        given = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, example))
        raise ExportError(f"{e} (the example inputs: {given}; set per-sample shapes with --shape INPUT=DIMS)") from e
    print(report.to_json() if args.json else report)
    return 0 if report.passed else 1


def _cmd_matrix(args: argparse.Namespace) -> int:
    cells = matrix.cells(args.losses or list(catalog.LOSSES), args.reductions, args.backends, args.paths)
    if args.output:
        _io.check_writable(args.output)
    rows = matrix.run_cells(cells, args.verbose)
    table = matrix.markdown(rows)
    print(table)
    if args.output:
        _io.write_text(args.output, matrix.page(table))
    failed = sum(r[4] != "pass" for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _load_model(spec: str, input_shape: Optional[Sequence[int]]) -> Tuple[nn.Module, Tuple[int, ...]]:
    """The model ``--model`` names and its per-sample input shape; ``ValueError`` in one line."""
    from exportable_loss.export import demo_models

    if ":" not in spec:
        if spec not in demo_models.DEMOS:
            raise ValueError(f"--model is a demo ({', '.join(demo_models.DEMOS)}) or module:factory; got {spec!r}")
        if input_shape is not None:
            raise ValueError("--input-shape is for a module:factory model; a demo model knows its input")
        return demo_models.demo(spec), demo_models.DEMOS[spec][1]
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"--model is module:factory, e.g. mypackage.models:make_model; got {spec!r}")
    if input_shape is None:
        raise ValueError(f"--model {spec} needs --input-shape (the per-sample input shape, e.g. 3 32 32)")
    if os.getcwd() not in sys.path:  # as `python -m` would: a module in the current folder imports
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ValueError(f"--model {spec}: cannot import {module_name}: {type(e).__name__}: {e}") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"--model {spec}: {module_name} has no callable {name!r}")
    try:
        model = factory()
    except Exception as e:
        raise ValueError(f"--model {spec}: {name}() raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec}: {name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model, tuple(input_shape)


def _cmd_export_step(args: argparse.Namespace) -> int:
    from exportable_loss.export.executorch import StepReport
    from exportable_loss.export.step import export_training_step, step_format, step_losses

    entry = catalog.get(args.loss)
    if entry.name not in step_losses():
        raise ValueError(
            f"export-step trains with a loss of (input, target); {entry.name} takes {', '.join(entry.inputs)}"
        )
    if args.reduction not in entry.reductions:
        raise ValueError(f"--reduction of {entry.name} is one of {', '.join(entry.reductions)}; got {args.reduction!r}")
    format = step_format(args.output, args.format)
    if format == "onnx" and (args.max_batch is not None or args.momentum is not None):
        raise ValueError("--max-batch and --momentum are for --format executorch (an ONNX step has neither)")
    if format == "executorch" and args.optimizer == "adamw":
        raise ValueError("--optimizer adamw is for ONNX: ExecuTorch's training runtime updates with SGD")
    loss = entry.make(args.reduction, args.backend, entry.parse_options(args.option))
    model, input_shape = _load_model(args.model, args.input_shape)

    def batch(n: int, seed: int) -> Tuple[Tensor, Tensor, Tensor]:
        x = torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed))
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as e:
            raise ValueError(f"the model rejects an input of shape {tuple(x.shape)}: {e}") from e
        shapes = {"input": tuple(out.shape[1:])}
        _, target, weight = entry.example(
            n, sample_weight=True, seed=seed, shapes=shapes, ignore_index=getattr(loss, "ignore_index", None)
        )
        return x, target, weight

    if format == "executorch":
        max_batch = 64 if args.max_batch is None else args.max_batch
        result = export_training_step(
            model,
            loss,
            batch(min(BATCH, max_batch), 0),
            args.output,
            format=format,
            max_batch=max_batch,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
        )
    else:
        result = export_training_step(
            model,
            loss,
            batch(BATCH, 0),
            args.output,
            format=format,
            optimizer=args.optimizer,
            lr=args.lr,
            weight_decay=args.weight_decay,
        )
    if isinstance(result, StepReport):  # ExecuTorch's: verified in its runtime
        print(result)
        return 0 if result.passed else 1
    names = result
    errors = _check_step(model, loss, batch(9, 1), args.output, args.optimizer, args.lr, args.weight_decay or 0.0)
    passed = all(err <= 1e-4 for err in errors.values())
    print(f"{'PASS' if passed else 'FAIL'} training step {args.output}")
    print(f"  inputs:  {', '.join(names['inputs'])}")
    print(f"  outputs: {', '.join(names['outputs'])}")
    print(f"  onnxruntime against PyTorch at batch 9 (example batch {BATCH}), max abs error:")
    for what, err in errors.items():
        print(f"    {what}: {err:.3g}")
    return 0 if passed else 1


def _check_step(
    model: nn.Module,
    loss: nn.Module,
    inputs: Tuple[Tensor, Tensor, Tensor],
    path: str,
    optimizer: Optional[str],
    lr: float,
    weight_decay: float,
) -> Dict[str, float]:
    """One step in onnxruntime against PyTorch: the loss, the gradients and (with an optimizer)
    the parameters after ``torch.optim``'s update, from a fresh optimizer state."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    state: List[Tensor] = []
    if optimizer == "adamw":
        state = [torch.zeros_like(p) for p in trainable] * 2 + [torch.tensor(0.0, dtype=trainable[0].dtype)]
    outs = run_onnx(path, [p.detach() for p in trainable] + state + list(inputs))
    reference = copy.deepcopy(model)
    params = [p for p in reference.parameters() if p.requires_grad]
    value = loss(reference(inputs[0]), *inputs[1:])
    grads = torch.autograd.grad(value, params)
    k = len(params)
    errors = {
        "loss": (outs[0] - value.detach()).abs().item(),
        "gradients": max((o - g).abs().max().item() for o, g in zip(outs[2 : 2 + k], grads)),
    }
    if optimizer is not None:
        for p, g in zip(params, grads):
            p.grad = g
        step = (
            torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
            if optimizer == "sgd"
            else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        )
        step.step()
        errors[f"parameters after one {optimizer} step"] = max(
            (o - p.detach()).abs().max().item() for o, p in zip(outs[2 + k : 2 + 2 * k], params)
        )
    return errors


def _cmd_bench(args: argparse.Namespace) -> int:
    from exportable_loss.bench import suite

    # an option the chosen run does not read is a mistake, not something to ignore silently
    given = [f"--{n}" for n in ("sizes", "modes", "classes") if getattr(args, n) is not None]
    if given and not args.sweep:
        raise ValueError(f"{', '.join(given)} only apply to --sweep; add --sweep or leave them out")
    if args.losses is not None and not (args.sweep or args.ops):
        raise ValueError("--losses only applies to --sweep and --ops; add one of them or leave it out")
    if args.peak_gbps is not None and (args.sweep or args.ops):
        raise ValueError("--peak-gbps only applies to the default bench, not to --sweep or --ops")
    if not (args.sweep or args.ops):
        paths = suite.run(args.out, quick=args.quick, peak_gbps=args.peak_gbps)
        with open(paths["md"]) as f:
            print(f.read())
        print(f"wrote {', '.join(paths.values())}", file=sys.stderr)
        return 0
    if args.ops:
        from exportable_loss.bench import ops

        paths = ops.run(args.out, args.losses)
        with open(paths["md"]) as f:
            print(f.read())
        print(f"wrote {', '.join(paths.values())}", file=sys.stderr)
    if args.sweep:
        from exportable_loss.bench import sweep

        # --quick: shorter timings, and eager only at C = 1000 unless --modes/--classes say otherwise
        budget = 0.5 if args.quick else 2.0
        modes = args.modes or (["eager"] if args.quick else list(sweep.MODES))
        classes = args.classes or ([1000] if args.quick else [1000, 32000])
        paths = sweep.run(args.out, args.losses, args.sizes or sweep.SIZES, modes, classes, budget)
        with open(paths["md"]) as f:
            print(f.read())
        print(f"wrote {', '.join(paths.values())}", file=sys.stderr)
        if "png" not in paths:
            print(f"bench: matplotlib is not installed, so no plot; {suite.PLOT_HINT} adds sweep.png", file=sys.stderr)
    return 0


def _cmd_bench_linear_ce(args: argparse.Namespace) -> int:
    from exportable_loss.bench import linear_ce

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    linear_ce.selected(args.shape, args.repeats, args.only, "cuda" if torch.cuda.is_available() else "cpu")
    stem = None
    if args.out:
        stem = os.path.join(args.out, "linear_ce_{}x{}x{}_{}".format(*args.shape, args.dtype))
        os.makedirs(args.out, exist_ok=True)
        _io.check_writable(stem + ".json")
    result = linear_ce.run(tuple(args.shape), dtype, repeats=args.repeats, only=args.only)
    table = linear_ce.markdown(result)
    print(table)
    if stem is not None:
        _io.write_text(stem + ".json", json.dumps(result, indent=1))
        _io.write_text(stem + ".md", table)
        print(f"wrote {stem}.json, {stem}.md", file=sys.stderr)
    flagged = linear_ce.unreliable(result)
    if flagged:
        print(f"warning: unreliable times (spread above 10% of the median): {', '.join(flagged)}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exportable-loss",
        description="Export a loss or a model's training step, verified against eager PyTorch; print the "
        "compatibility matrix; run the benchmarks.",
        epilog=__doc__.split("\n\n")[2],
        formatter_class=_Formatter,
    )
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=_version())
    # each subcommand accepts --verbose too, without overriding the one given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, parents=[common], formatter_class=_Formatter)

    p = command(
        "export",
        "export one loss and print its verification report",
        "Export the loss you describe (its options, the shapes of its inputs, which dimensions are dynamic), "
        "reload it, and verify it against eager PyTorch at other sizes of every dynamic dimension. Without "
        "--demo the loss has its constructor's defaults and your --option values; the example inputs have the "
        "catalogue's shapes unless --shape sets them. Example: exportable-loss export cross_entropy "
        "--shape input=3,16 --option weight=1,2,0.5 --option label_smoothing=0.1 "
        "--dynamic input:2=T --dynamic target:1=T -o ce.onnx",
    )
    p.add_argument("loss", choices=list(catalog.LOSSES), metavar="LOSS", help=f"one of {', '.join(catalog.LOSSES)}")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a constructor option of the loss, e.g. label_smoothing=0.1 or ignore_index=0; class weights "
        "(weight, pos_weight) as a list 1,2,0.5 or a file (.pt, .npy, text); repeatable",
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="INPUT=DIMS",
        help="per-sample shape of an input, e.g. input=3,16 for (N, 3, 16) logits of 3 classes; the inputs "
        "tied to it (a target) follow; repeatable",
    )
    p.add_argument(
        "--dynamic",
        action="append",
        default=[],
        metavar="INPUT:DIM=LABEL",
        help="a dynamic dimension besides the batch (DIM 0), e.g. input:2=T; inputs sharing a LABEL share its size",
    )
    p.add_argument("--reduction", default="mean", choices=catalog.REDUCTIONS, help="the loss's reduction")
    p.add_argument("--backend", default="torch", choices=("torch", "triton", "auto"), help="the loss's backend")
    p.add_argument("--sample-weight", action="store_true", help="export with a sample_weight input")
    p.add_argument("--demo", action="store_true", help="the catalogue's example options (class weights, ...)")
    p.add_argument("--format", choices=("onnx", "torchscript", "pt2"), help="default: from -o's extension")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), help="the ONNX exporter (default dynamo)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-o", "--output", required=True, help="the file to write (.onnx, .pt, .pt2)")
    p.set_defaults(func=_cmd_export)

    p = command(
        "export-step",
        "export a model's training step (loss, per-sample losses, gradients, optimizer update)",
        "Export a model's training step under a loss and check it against PyTorch: one ONNX graph (checked "
        "for one step in onnxruntime: loss, gradients and, with --optimizer, torch.optim's update), or with "
        "--format executorch (-o step.pte) a program for ExecuTorch's training runtime (checked there: loss, "
        "per-sample losses and gradients at batch 2 and --max-batch, then 20 steps of its SGD against "
        "torch.optim.SGD).",
    )
    p.add_argument("--model", default="mlp", help="a demo model (mlp, transformer, convnet) or module:factory")
    p.add_argument("--input-shape", type=_positive, nargs="+", help="per-sample input shape of a module:factory model")
    p.add_argument("--loss", default="cross_entropy", choices=list(catalog.LOSSES), metavar="LOSS", help="the loss")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a loss option (see export)")
    p.add_argument("--reduction", default="mean", choices=("mean", "sum", "batchmean"), help="the loss's reduction")
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "triton", "auto"),
        help="the loss's backend (the step holds its PyTorch formulation either way)",
    )
    p.add_argument("--format", choices=("onnx", "executorch"), help="default: from -o's extension (.onnx, .pte)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="ONNX: also output the parameters after an update")
    p.add_argument("--lr", type=float, default=0.01, help="the optimizer's learning rate")
    p.add_argument(
        "--weight-decay", type=float, help="the optimizer's weight decay (default 0; 0.01 in the ExecuTorch check)"
    )
    p.add_argument("--momentum", type=float, help="ExecuTorch: the SGD check's momentum (default 0.9)")
    p.add_argument(
        "--max-batch",
        type=_at_least(2),
        help="ExecuTorch: the largest batch the program accepts; the runtime refuses larger ones (default 64)",
    )
    p.add_argument("-o", "--output", required=True, help="the file to write: .onnx, or .pte for ExecuTorch")
    p.set_defaults(func=_cmd_export_step)

    p = command(
        "matrix",
        "every loss x reduction x backend x path, verified against eager",
        "Verify every selected loss x reduction x backend x path against eager PyTorch; exit 1 if a cell fails.",
    )
    p.add_argument("--losses", nargs="+", choices=list(catalog.LOSSES), metavar="LOSS", help="default: every loss")
    p.add_argument("--reductions", nargs="+", choices=catalog.REDUCTIONS, help="default: every reduction of each loss")
    p.add_argument("--backends", nargs="+", default=list(matrix.BACKENDS), choices=matrix.BACKENDS, help="backends")
    p.add_argument("--paths", nargs="+", default=list(matrix.PATHS), choices=matrix.PATHS, help="paths")
    p.add_argument("-o", "--output", help="also write the table as Markdown here")
    p.set_defaults(func=_cmd_matrix)

    p = command(
        "bench",
        "benchmark the losses on this device: JSON, Markdown, PNG plot",
        "Time the losses against their baselines in one run (torch.utils.benchmark; on CUDA "
        "triton.testing.do_bench), with the spread of every figure.",
    )
    p.add_argument("--quick", action="store_true", help="fewer sizes and shorter timings (minutes on 2 CPU cores)")
    p.add_argument("--out", default="bench-results", help="output folder")
    p.add_argument("--peak-gbps", type=float, help="CUDA: the device's peak memory bandwidth, GB/s")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="instead: every loss with a torch.nn twin against it, by batch size, eager and compiled, against "
        "the targets (sweep.json, .md, .png; about half an hour on 2 CPU cores; --quick: 0.5 s a figure, "
        "eager, C=1000)",
    )
    p.add_argument(
        "--ops", action="store_true", help="instead: the ATen operators per forward+backward, ours and torch.nn's"
    )
    p.add_argument("--losses", nargs="+", metavar="LOSS", help="--sweep/--ops: only these losses (default: every twin)")
    p.add_argument("--sizes", type=_positive, nargs="+", metavar="N", help="--sweep: the batch sizes")
    p.add_argument(
        "--modes", nargs="+", choices=("eager", "compiled"), help="--sweep (default: both; eager with --quick)"
    )
    p.add_argument(
        "--classes",
        type=_positive,
        nargs="+",
        metavar="C",
        help="--sweep: classes of CE/NLL (default: 1000 32000; 1000 with --quick)",
    )
    p.set_defaults(func=_cmd_bench)

    p = command(
        "bench-linear-ce",
        "working memory and time of FusedLinearCrossEntropyLoss against the unfused form",
        "Working memory and time of FusedLinearCrossEntropyLoss against F.linear + F.cross_entropy and the "
        "alternatives installed, in one run.",
    )
    p.add_argument(
        "--shape",
        type=_positive,
        nargs=3,
        default=[4096, 1024, 32000],
        metavar=("TOKENS", "HIDDEN", "VOCAB"),
        help="the problem size",
    )
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="inputs' dtype")
    p.add_argument("--repeats", type=_positive, default=3, help="timed runs per method")
    p.add_argument("--only", nargs="+", help="only the methods whose name contains one of these words")
    p.add_argument("--out", help="also write JSON and Markdown into this folder")
    p.set_defaults(func=_cmd_bench_linear_ce)
    cli_gpu.register(command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ImportError, OSError) as e:  # bad arguments, a missing extra, an unwritable path
        return _error(args, e, 2)
    except Exception as e:  # the work itself failed (an exporter's error, ...)
        return _error(args, e, 1)


def _error(args: argparse.Namespace, e: Exception, code: int) -> int:
    if args.verbose:
        traceback.print_exc()
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if code == 1:
        message = f"{type(e).__name__}: {message}" + ("" if args.verbose else " (--verbose shows the traceback)")
    print(f"exportable-loss: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
