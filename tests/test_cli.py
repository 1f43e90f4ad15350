"""The exportable-loss command as a user runs it: what it exports (checked in onnxruntime against
torch.nn), its usage errors, and its exit codes from a real process for every subcommand."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from exportable_loss import catalog
from exportable_loss.cli import build_parser, main
from exportable_loss.export import run_onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shell(*args, cwd, pythonpath=()):
    """``python -m exportable_loss ARGS`` in a fresh process."""
    path = os.pathsep.join([*pythonpath, ROOT, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run(
        [sys.executable, "-m", "exportable_loss", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


# ------------------------------------------------------------------ export: what the user describes


def test_export_the_described_loss(tmp_path, capsys):
    """Classes, class weights, options, a dynamic sequence length: onnxruntime at another batch
    and length gives torch.nn's weighted, smoothed cross entropy."""
    out = str(tmp_path / "ce.onnx")
    code = main(
        ["export", "cross_entropy", "--shape", "input=3,16", "--option", "weight=1,2,0.5"]
        + ["--option", "label_smoothing=0.1", "--option", "ignore_index=0", "--sample-weight"]
        + ["--dynamic", "input:2=T", "--dynamic", "target:1=T", "--reduction", "sum", "-o", out, "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [i["shape"] for i in report["inputs"]] == [["batch", 3, "T"], ["batch", "T"], ["batch"]]
    g = torch.Generator().manual_seed(5)
    x, t, s = torch.randn(4, 3, 20, generator=g), torch.randint(0, 3, (4, 20), generator=g), torch.rand(4, generator=g)
    want = torch.nn.CrossEntropyLoss(
        weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1, ignore_index=0, reduction="none"
    )(x, t)
    torch.testing.assert_close(run_onnx(out, (x, t, s))[0], (want.sum(1) * s).sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("demo", [False, True])
def test_export_uses_the_constructor_defaults_unless_demo(demo, tmp_path):
    """No hidden options: without --demo, BCE has no pos_weight; --demo uses the catalogue's."""
    out = str(tmp_path / "b.pt")
    assert main(["export", "bce_with_logits", "-o", out] + (["--demo"] if demo else [])) == 0
    x, y = torch.randn(5, 3), torch.rand(5, 3)
    pos_weight = torch.tensor([1.0, 2.0, 0.5]) if demo else None
    torch.testing.assert_close(torch.jit.load(out)(x, y), torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(x, y))


def test_class_weights_from_a_file(tmp_path):
    (tmp_path / "w.txt").write_text("1.0 2.0\n0.5\n")
    torch.save(torch.tensor([1.0, 2.0, 0.5]), tmp_path / "w.pt")
    for file in ("w.txt", "w.pt"):
        out = str(tmp_path / f"{file}.pt")
        assert main(["export", "nll", "--shape", "input=3", "--option", f"weight={tmp_path / file}", "-o", out]) == 0
        x, t = torch.randn(7, 3).log_softmax(1), torch.randint(0, 3, (7,))
        torch.testing.assert_close(
            torch.jit.load(out)(x, t), torch.nn.NLLLoss(weight=torch.tensor([1.0, 2.0, 0.5]))(x, t)
        )


def test_described_examples_follow_the_first_input():
    """A target tied to the input follows its shape; class indices stay below the classes."""
    ce, dice, mse = catalog.get("cross_entropy"), catalog.get("dice"), catalog.get("mse")
    x, t = ce.example(6, shapes={"input": (3, 16)}, ignore_index=-100)
    assert x.shape == (6, 3, 16) and t.shape == (6, 16) and set(t.unique().tolist()) <= {-100, 0, 1, 2}
    x, t = ce.example(40, shapes={"input": (2,)})  # same rank, fewer classes than the example's 5
    assert t.shape == (40,) and set(t.unique().tolist()) == {0, 1}
    x, t = dice.example(6, shapes={"input": (2, 8, 8)})
    assert t.shape == (6, 8, 8) and t.max() == 1
    x, t = mse.example(6, shapes={"input": (7,)})
    assert x.shape == t.shape == (6, 7)
    assert all(torch.equal(a, b) for a, b in zip(ce.example(6), ce.example(6, shapes={"input": (5,)})))


def test_every_loss_accepts_its_example_with_its_defaults():
    """Without --demo every loss is built from its constructor's defaults: the example fits."""
    for entry in catalog.LOSSES.values():
        assert entry.make(options={})(*entry.example(6, sample_weight=True)).isfinite().all(), entry.name


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--option", "smoothing=0.1"],
            "cross_entropy has no option 'smoothing'; its options are weight, ignore_index, label_smoothing, z_loss, logit_softcap, validate, inplace_backward",
        ),
        (["--option", "label_smoothing=high"], "option label_smoothing takes a float; got 'high'"),
        (["--option", "label_smoothing"], "an option is written name=value; got 'label_smoothing'"),
        (["--option", "label_smoothing=2"], "label_smoothing"),  # the constructor's own check
        (
            ["--option", "weight=w.csv"],
            "option weight takes a list of numbers \\(1,2,0.5\\) or a file; 'w.csv' is neither",
        ),
        (["--option", "validate=maybe"], "option validate is true or false; got 'maybe'"),
        (["--shape", "input=3,x"], "--shape is INPUT=D1,D2,... with positive sizes"),
        (["--shape", "logits=3"], "cross_entropy has no input 'logits'; its inputs are input, target"),
        (["--dynamic", "input:2"], "--dynamic is INPUT:DIM=LABEL"),
        (["--dynamic", "logits:1=T"], "no input 'logits'; the inputs are input, target"),
        (
            ["--option", "weight=1,2"],
            "the module rejects the example inputs: .*\\(the example inputs: input \\(6, 5\\), target \\(6,\\); set per-sample shapes with --shape INPUT=DIMS\\)",
        ),
        (
            ["--reduction", "batchmean"],
            "--reduction of cross_entropy is one of none, per_sample, mean, sum; got 'batchmean'",
        ),
        (["--format", "pt2"], "'.*x.onnx' does not have the extension of format pt2"),
        (
            ["--exporter", "torchscript", "--format", "torchscript", "-o", "x.pt"],
            "--exporter chooses the ONNX exporter; the format is torchscript",
        ),
    ],
)
def test_export_usage_errors_are_one_line_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["export", "cross_entropy", *args] + ([] if "-o" in args else ["-o", str(tmp_path / "x.onnx")])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("exportable-loss: error: ")
    assert re.search(message, err), err
    assert os.listdir(tmp_path) == []


def test_top_level_verbose_shows_the_traceback(tmp_path, capsys):
    """`exportable-loss --verbose export ...`: the subcommand does not reset --verbose."""
    bad = str(tmp_path / "no" / "x.onnx")
    assert main(["--verbose", "export", "mse", "-o", bad]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["export", "mse", "-o", bad, "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["export", "mse", "-o", bad]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_help_shows_defaults_and_choices():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # the subcommands' parsers
    text = sub["export"].format_help()
    assert "(default: mean)" in text and "{none,per_sample,mean,sum,batchmean}" in text
    assert "{onnx,torchscript,pt2}" in text and "(default: torch)" in text
    assert "(default: 3)" in sub["bench-linear-ce"].format_help()
    assert "(default: bench-results)" in sub["bench"].format_help()


# ------------------------------------------------------------------ export-step


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_export_step_with_an_optimizer(optimizer, tmp_path, capsys):
    """The check feeds the optimizer state and compares torch.optim's update."""
    assert main(["export-step", "--model", "mlp", "--optimizer", optimizer, "-o", str(tmp_path / "s.onnx")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PASS training step") and f"parameters after one {optimizer} step: " in out


def test_export_step_with_the_users_model_and_loss(tmp_path, monkeypatch, capsys):
    """A module:factory model under the loss the user names: no class weights of ours."""
    (tmp_path / "mymodels.py").write_text(
        "import torch\n\ndef make():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    out = str(tmp_path / "s.onnx")
    argv = ["export-step", "--model", "mymodels:make", "--input-shape", "8", "--option", "label_smoothing=0.2"]
    assert main(argv + ["-o", out]) == 0
    assert "PASS training step" in capsys.readouterr().out
    import mymodels

    model = mymodels.make()
    x, t, s = torch.randn(5, 8), torch.tensor([0, 2, 1, 1, 0]), torch.rand(5)
    params = [p.detach() for p in model.parameters()]
    per_element = torch.nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")(model(x), t)
    want = (per_element * s).sum() / s.sum()  # the weighted mean (docs/semantics.md): no class weights
    torch.testing.assert_close(run_onnx(out, params + [x, t, s])[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "model, message",
    [
        (
            "nosuchmod:f",
            "--model nosuchmod:f: cannot import nosuchmod: ModuleNotFoundError: No module named 'nosuchmod'",
        ),
        ("os:nosuchattr", "--model os:nosuchattr: os has no callable 'nosuchattr'"),
        ("os:getcwd", "--model os:getcwd: getcwd\\(\\) returned a str, not a torch.nn.Module"),
        ("resnet", "--model is a demo \\(mlp, transformer, convnet\\) or module:factory; got 'resnet'"),
        ("os:", "--model is module:factory"),
    ],
)
def test_export_step_bad_models_are_usage_errors(model, message, tmp_path, capsys):
    assert main(["export-step", "--model", model, "--input-shape", "8", "-o", str(tmp_path / "s.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_export_step_other_usage_errors(tmp_path, capsys):
    out = str(tmp_path / "s.onnx")
    cases = {
        ("--loss", "jsd"): "export-step trains with a loss of \\(input, target\\); jsd takes input, target, label",
        ("--model", "mymod:make"): "--model mymod:make needs --input-shape",
        ("--input-shape", "8"): "--input-shape is for a module:factory model",
        ("--option", "gamma=2"): "cross_entropy has no option 'gamma'",
    }
    for args, message in cases.items():
        assert main(["export-step", *args, "-o", out]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert main(["export-step", "-o", str(tmp_path / "s.pt2")]) == 2
    assert "expected .onnx for onnx, .pte for executorch" in capsys.readouterr().err
    assert main(["export-step", "--max-batch", "8", "-o", out]) == 2
    assert "--max-batch and --momentum are for --format executorch" in capsys.readouterr().err
    assert main(["export-step", "--optimizer", "adamw", "-o", str(tmp_path / "s.pte")]) == 2
    assert "--optimizer adamw is for ONNX: ExecuTorch's training runtime updates with SGD" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ matrix


def test_matrix_subset_and_its_page(tmp_path, capsys):
    md = str(tmp_path / "matrix.md")
    code = main(
        ["matrix", "--losses", "kl_div", "--reductions", "batchmean", "--backends", "torch", "triton", "-o", md]
    )
    assert code == 0
    table = open(md).read()
    assert table.count("| pass |") == 10 and "FAIL" not in table
    assert oct(os.stat(md).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--losses", "nll", "--backends", "triton"],
            "nothing to run: no selected loss has the reductions and backends asked for \\(nll: none/per_sample/mean/sum on torch\\)",
        ),
        (["--losses", "mse", "--reductions", "batchmean"], "nothing to run"),
        (
            ["--losses", "mse", "-o", "/nonexistent/m.md"],
            "cannot write /nonexistent/m.md: the folder /nonexistent does not exist",
        ),
    ],
)
def test_matrix_nothing_to_run_is_a_usage_error(args, message, capsys):
    assert main(["matrix", *args]) == 2
    assert re.search(message, capsys.readouterr().err)


# ------------------------------------------------------------------ exit codes from a real shell

# Makes every verification fail (onnxruntime's outputs are shifted), for the exit-1 cases.
BREAK_VERIFICATION = """
import exportable_loss.cli, exportable_loss.export.api

def shifted(run):
    return lambda *a, **k: [o + 1 for o in run(*a, **k)]

exportable_loss.export.api.run_onnx = shifted(exportable_loss.export.api.run_onnx)
exportable_loss.cli.run_onnx = shifted(exportable_loss.cli.run_onnx)
"""

SHELL_CASES = [
    (["--version"], 0, "exportable-loss "),
    (["export", "--help"], 0, "(default: mean)"),
    (["export", "l1", "-o", "x.pt"], 0, "PASS torchscript"),
    (["export", "l1", "--sample-weight", "-o", "x.onnx"], 1, "FAIL onnx (dynamo)"),
    (["export", "nope", "-o", "x.onnx"], 2, "invalid choice: 'nope'"),
    (["export", "l1", "-o", "x.onnx", "--format", "pt2"], 2, "does not have the extension of format pt2"),
    (["export-step", "-o", "s.onnx"], 0, "PASS training step"),
    (["export-step", "-o", "s.onnx"], 1, "FAIL training step"),
    (["export-step", "--model", "nosuchmod:f", "--input-shape", "3", "-o", "s.onnx"], 2, "cannot import nosuchmod"),
    (
        ["matrix", "--losses", "l1", "--reductions", "sum", "--backends", "torch", "--paths", "script"],
        0,
        "1 passed, 0 failed",
    ),
    (
        ["matrix", "--losses", "l1", "--reductions", "sum", "--backends", "torch", "--paths", "onnx-dynamo"],
        1,
        "0 passed, 1 failed",
    ),
    (["matrix", "--reductions", "median"], 2, "invalid choice: 'median'"),
    (["bench", "--out", "x.onnx"], 2, "the output folder x.onnx is a file"),
    (["bench", "--sizes", "3"], 2, "--sizes only apply to --sweep"),
    (["bench", "--ops", "--modes", "eager"], 2, "--modes only apply to --sweep"),
    (["bench", "--losses", "mse"], 2, "--losses only applies to --sweep and --ops"),
    (["bench", "--ops", "--peak-gbps", "3000"], 2, "--peak-gbps only applies to the default bench"),
    (["bench", "--sweep", "--losses", "nope"], 2, "no torch.nn twin to compare 'nope' with"),
    (
        ["bench-linear-ce", "--shape", "64", "32", "100", "--repeats", "1", "--only", "eager"],
        0,
        "| F.linear + F.cross_entropy (eager) |",
    ),
    (["bench-linear-ce", "--shape", "0", "0", "0"], 2, "argument --shape: must be at least 1; got 0"),
    (["bench-linear-ce", "--repeats", "0"], 2, "argument --repeats: must be at least 1; got 0"),
]


@pytest.mark.parametrize("args, code, shown", SHELL_CASES, ids=[f"{' '.join(a[:2])}->{c}" for a, c, _ in SHELL_CASES])
def test_exit_codes_from_a_real_shell(args, code, shown, tmp_path):
    (tmp_path / "x.onnx").write_text("")  # a file where `bench --out` wants a folder
    pythonpath = ()
    if code == 1:
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "sitecustomize.py").write_text(BREAK_VERIFICATION)
        pythonpath = (str(tmp_path / "broken"),)
    result = _shell(*args, cwd=tmp_path, pythonpath=pythonpath)
    assert result.returncode == code, result.stderr[-2000:]
    assert shown in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "USDT" not in result.stderr
    if code == 2:
        assert result.stderr.strip().splitlines()[-1].startswith(("exportable-loss: error:", "exportable-loss "))
