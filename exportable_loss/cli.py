"""The ``exportable-loss`` command: export a loss, or print the compatibility matrix.

    exportable-loss export LOSS [--reduction R] [--backend B] [--sample-weight]
                                [--format onnx|torchscript|pt2] [--exporter dynamo|torchscript] -o FILE
    exportable-loss matrix [--losses ...] [--reductions ...] [--backends ...] [--paths ...] [-o FILE]
    exportable-loss export-step [--model mlp|transformer|convnet|module:factory] [--optimizer sgd|adamw] -o FILE
    exportable-loss bench [--quick] [--out DIR]

Exit status 1 when a verification fails, 2 on a usage error; errors are one line unless --verbose.
"""

import argparse
import importlib
import json
import os
import sys
import traceback
from typing import Optional, Sequence

import torch

from exportable_loss import catalog, matrix
from exportable_loss.export import ExportError, export


def _cmd_export(args: argparse.Namespace) -> int:
    entry = catalog.get(args.loss)
    if args.reduction not in entry.reductions:
        raise ExportError(
            f"reduction must be one of {', '.join(entry.reductions)} for {entry.name}; got {args.reduction!r}"
        )
    module = entry.make(args.reduction, args.backend)
    example = entry.example(6, sample_weight=args.sample_weight)
    report = export(
        module,
        example,
        args.output,
        format=args.format,
        dynamo=args.exporter == "dynamo",
        batch_inputs=entry.batch_inputs(example),
    )
    print(report.to_json() if args.json else report)
    return 0 if report.passed else 1


def _cmd_matrix(args: argparse.Namespace) -> int:
    for name in args.losses:
        catalog.get(name)
    rows = matrix.run(args.losses, args.reductions, args.backends, args.paths, args.verbose)
    table = matrix.markdown(rows)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(matrix.page(table))
    failed = sum(r[4] != "pass" for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _load_model(spec: str) -> torch.nn.Module:
    from exportable_loss.export import demo_models

    if ":" not in spec:
        return demo_models.demo(spec)
    module_name, factory = spec.split(":", 1)
    return getattr(importlib.import_module(module_name), factory)()


def _cmd_export_step(args: argparse.Namespace) -> int:
    from exportable_loss.export import run_onnx
    from exportable_loss.export.demo_models import NUM_CLASSES, example_input
    from exportable_loss.export.step import export_training_step

    if ":" in args.model and args.input_shape is None:
        raise ExportError("a model given as module:factory needs --input-shape (per-sample shape, e.g. 3 32 32)")
    model = _load_model(args.model)
    loss = catalog.get("cross_entropy").cls(weight=torch.linspace(0.5, 1.5, args.num_classes or NUM_CLASSES))

    def batch(n: int, seed: int):
        if args.input_shape is None:
            return example_input(args.model, n, seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, *args.input_shape, generator=g)
        return x, torch.randint(0, args.num_classes or NUM_CLASSES, (n,), generator=g), torch.rand(n, generator=g)

    names = export_training_step(model, loss, batch(6, 0), args.output, optimizer=args.optimizer, lr=args.lr)
    x, t, s = batch(9, 1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    outs = run_onnx(args.output, [p.detach() for p in trainable] + [x, t, s])
    grads = torch.autograd.grad(loss(model(x), t, s), trainable)
    err = max((o - g).abs().max().item() for o, g in zip(outs[2:], grads))
    passed = err <= 1e-4
    print(f"{'PASS' if passed else 'FAIL'} training step {args.output}")
    print(f"  inputs:  {', '.join(names['inputs'])}")
    print(f"  outputs: {', '.join(names['outputs'])}")
    print(f"  onnxruntime gradients vs torch.autograd at batch 9 (example batch 6): max abs error {err:.3g}")
    return 0 if passed else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    from exportable_loss.bench import suite as bench

    paths = bench.run(args.out, quick=args.quick, peak_gbps=args.peak_gbps)
    with open(paths["md"]) as f:
        print(f.read())
    print(f"wrote {', '.join(paths.values())}", file=sys.stderr)
    return 0


def _cmd_bench_linear_ce(args: argparse.Namespace) -> int:
    from exportable_loss.bench import linear_ce as bench_linear_ce

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    result = bench_linear_ce.run(tuple(args.shape), dtype, repeats=args.repeats, only=args.only)
    table = bench_linear_ce.markdown(result)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, "linear_ce_{}x{}x{}_{}".format(*args.shape, args.dtype))
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(table)
        print(f"wrote {stem}.json, {stem}.md", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exportable-loss", description="Export and verify exportable-loss losses.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export one loss and print its verification report")
    p.add_argument("loss", help=f"one of: {', '.join(catalog.LOSSES)}")
    p.add_argument("--reduction", default="mean")
    p.add_argument("--backend", default="torch", choices=("torch", "triton", "auto"))
    p.add_argument("--sample-weight", action="store_true", help="export with a sample_weight input")
    p.add_argument("--format", default="onnx", choices=("onnx", "torchscript", "pt2"))
    p.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"), help="ONNX exporter")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("matrix", help="every loss x reduction x backend x path, verified against eager")
    p.add_argument("--losses", nargs="+", default=list(catalog.LOSSES))
    p.add_argument("--reductions", nargs="+")
    p.add_argument("--backends", nargs="+", default=list(matrix.BACKENDS), choices=matrix.BACKENDS)
    p.add_argument("--paths", nargs="+", default=list(matrix.PATHS), choices=matrix.PATHS)
    p.add_argument("-o", "--output", help="also write the table as Markdown here")
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_matrix)

    p = sub.add_parser("export-step", help="export a model's training step (loss, per-sample losses, gradients)")
    p.add_argument("--model", default="mlp", help="mlp, transformer, convnet, or module:factory")
    p.add_argument("--input-shape", type=int, nargs="+", help="per-sample input shape for module:factory")
    p.add_argument("--num-classes", type=int, help="classes of a module:factory model")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="also output the parameters after an update")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_export_step)

    p = sub.add_parser("bench", help="benchmark the losses on this device: JSON, PNG plots, Markdown")
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (under 3 minutes on 2 CPU cores)")
    p.add_argument("--out", default="bench-results", help="output folder")
    p.add_argument("--peak-gbps", type=float, help="CUDA: the device's peak memory bandwidth, GB/s")
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "bench-linear-ce", help="working memory and time of FusedLinearCrossEntropyLoss against the unfused form"
    )
    p.add_argument("--shape", type=int, nargs=3, default=[4096, 1024, 32000], metavar=("TOKENS", "HIDDEN", "VOCAB"))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="+", help="only the methods whose name contains one of these words")
    p.add_argument("--out", help="also write JSON and Markdown into this folder")
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_bench_linear_ce)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ExportError, ValueError, OSError) as e:
        if args.verbose:
            traceback.print_exc()
        print(f"exportable-loss: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
