"""exportable-loss bench --quick writes its JSON, Markdown and plot, with the spread of every
figure; unreliable figures are marked and reported; onnxruntime is timed with one session."""

import contextlib
import io
import json
import os
import sys

import numpy as np
import pytest

from exportable_loss.bench import suite, timing
from exportable_loss.cli import main
from exportable_loss.export import executorch


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `bench --quick` run, counting the onnxruntime sessions it creates."""
    import onnxruntime

    out = tmp_path_factory.mktemp("bench")
    created = []
    original = onnxruntime.InferenceSession

    def counting(*args, **kwargs):
        created.append(args[0])
        return original(*args, **kwargs)

    onnxruntime.InferenceSession = counting
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["bench", "--quick", "--out", str(out)])
    finally:
        onnxruntime.InferenceSession = original
    return code, out, stdout.getvalue(), stderr.getvalue(), created


def _figures(results):
    return [
        v
        for rows in results.values()
        if isinstance(rows, list)
        for r in rows
        for v in r.values()
        if isinstance(v, dict)
    ]


def test_bench_quick_writes_every_figure_with_its_spread(quick_run):
    code, out, stdout, stderr, _ = quick_run
    assert code == 0 and sorted(os.listdir(out)) == ["bench.json", "bench.md", "bench.png"]
    results = json.loads((out / "bench.json").read_text())
    assert results["quick"] is True and results["threshold"] == timing.UNRELIABLE
    assert {r["reduction"] for r in results["overhead"]} == {"none", "mean", "sum"}
    assert len(results["sweep"]) == 3 * (4 + 3) and len(results["onnxruntime"]) == 2
    figures = _figures(results)
    steps = len(suite.STEP_BATCHES) if executorch.available() else 0  # ExecuTorch against eager
    assert len(figures) == 2 * 6 + 2 * 6 + 21 + 2 * 2 + 2 * steps
    for f in figures:
        assert f["ms"] > 0 and f["iqr_ms"] >= 0 and f["runs"] >= timing.MIN_RUNS
        assert f["reliable"] == (f["iqr_ms"] / f["ms"] <= timing.UNRELIABLE)
    for r in results["overhead"]:
        assert r["ratio"] == pytest.approx(r["ours"]["ms"] / r["baseline"]["ms"])
        assert r["reliable"] == (r["ours"]["reliable"] and r["baseline"]["reliable"])
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert oct(os.stat(out / "bench.json").st_mode & 0o777) == oct(0o666 & ~_umask())
    assert "| cross_entropy (4096, 1000) | mean |" in stdout and "Quick mode" in stdout


def test_unreliable_figures_are_marked_and_reported(quick_run):
    _, out, _, stderr, _ = quick_run
    results = json.loads((out / "bench.json").read_text())
    flagged = [f for f in _figures(results) if not f["reliable"]]
    table = (out / "bench.md").read_text()
    # a dagger after every unreliable time (ratios built on one carry one too)
    assert table.count("% †") == len(flagged)
    if flagged:
        assert f"warning: {len(flagged)} figures have a spread above 10% of their median" in stderr
    else:
        assert "have a spread above" not in stderr
    total = 35 + (len(suite.STEP_BATCHES) if executorch.available() else 0)
    assert "\r" not in stderr and f"bench: {total}/{total}" in stderr  # a log gets plain progress lines


@pytest.mark.skipif(not executorch.available(), reason="needs the executorch extra")
def test_a_training_step_in_executorch_is_timed_against_eager(quick_run):
    _, out, stdout, *_ = quick_run
    rows = json.loads((out / "bench.json").read_text())["executorch"]
    assert [r["size"] for r in rows] == list(suite.STEP_BATCHES)
    for r in rows:
        assert r["ratio"] == pytest.approx(r["executorch"]["ms"] / r["eager"]["ms"])
    assert "### A training step: ExecuTorch's training runtime against eager PyTorch" in stdout
    assert f"| {suite.STEP_BATCHES[-1]} | " in stdout


def test_onnxruntime_is_timed_with_one_session_per_loss(quick_run):
    *_, created = quick_run
    assert len(created) == 2


def test_without_matplotlib_json_and_markdown_are_written(quick_run, tmp_path, monkeypatch, capsys):
    _, out, *_ = quick_run
    results = json.loads((out / "bench.json").read_text())
    rows = {k: v for k, v in results.items() if isinstance(v, list)}
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    paths = {k: str(tmp_path / f"bench.{k}") for k in ("json", "md", "png")}
    written = suite.write(rows, paths, quick=True)
    assert sorted(written) == ["json", "md"] and sorted(os.listdir(tmp_path)) == ["bench.json", "bench.md"]
    assert "no plot; pip install 'exportable-loss[bench]' adds bench.png" in capsys.readouterr().err


def test_spread_is_the_interquartile_range():
    samples = [0.010, 0.011, 0.012, 0.013, 0.030, 0.0105, 0.0115]
    t = timing.from_samples(samples)
    q1, q3 = np.percentile(samples, [25, 75])
    assert t.ms == pytest.approx(np.median(samples) * 1e3) and t.iqr_ms == pytest.approx((q3 - q1) * 1e3)
    assert t.runs == 7 and t.spread == pytest.approx((q3 - q1) / np.median(samples))
    assert not timing.from_samples([0.01]).reliable  # one run: no spread to tell
    steady = timing.Timing(10.0, 0.5, 9)
    assert timing.cell(steady) == "10.000 ±5%" and timing.cell(timing.Timing(10.0, 1.5, 9)) == "10.000 ±15% †"
    assert timing.ratio_cell(steady, timing.Timing(20.0, 3.0, 9), 2) == "0.50 †"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
