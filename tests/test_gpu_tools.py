"""The GPU-readiness tools on a machine without a GPU: the GPU suite's dry run (every part
started, each skipped for lack of CUDA, within seconds, results written), its time limits, and
the ahead-of-time compilation of a representative subset of the kernel specialisations
(registers, spills, vector loads) for sm_90."""

import json
import os
import subprocess
import sys
import time

import pytest

import exportable_loss.triton_kernels as tk
from exportable_loss.bench import gpu_suite

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_gpu_suite_dry_run_starts_and_skips_every_part(tmp_path):
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "exportable_loss", "gpu-suite", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - start < 60
    (json_file,) = tmp_path.glob("*.json")
    result = json.loads(json_file.read_text())
    assert [p["name"] for p in result["parts"]] == [name for name, _ in gpu_suite.PARTS]
    assert all(p["status"] == "skipped" and "no CUDA" in p["note"] for p in result["parts"])
    assert result["environment"]["torch"] and result["environment"]["triton"]
    markdown = json_file.with_suffix(".md").read_text()
    assert "torch " in markdown and "| linear_cross_entropy | skipped |" in markdown
    assert sum(share for _, share in gpu_suite.PARTS) == pytest.approx(1.0)


def _writes_then_sleeps(write, dry_run, limit):
    write(kind="row", bench="slow", shape=[1], dtype="float32", impl="ours (triton)", ms=1.0, spread_ms=0.0,
          peak_extra_mb=0.0)  # fmt: skip
    time.sleep(60)


def _fails(write, dry_run, limit):
    raise RuntimeError("broken part")


def _environment(write, dry_run, limit):
    write(kind="env", device="Test GPU", driver="1.0", torch="x", triton="y")


def test_a_slow_or_failing_part_keeps_its_results_and_the_next_part_runs(tmp_path):
    parts = [("slow", 0.5, _writes_then_sleeps), ("failing", 0.25, _fails), ("environment", 0.25, _environment)]
    start = time.perf_counter()
    result = gpu_suite.run(str(tmp_path), budget=8.0, parts=parts)
    assert time.perf_counter() - start < 40
    status = {p["name"]: p["status"] for p in result["parts"]}
    assert status == {"slow": "timeout", "failing": "failed", "environment": "ok"}
    assert [r["bench"] for r in result["records"] if r["kind"] == "row"] == ["slow"]
    assert os.path.basename(result["paths"]["json"]) == "test-gpu.json"
    assert "| slow | timeout |" in open(result["paths"]["md"]).read()


@pytest.mark.skipif(not tk.triton_importable(), reason="needs Triton")
def test_representative_kernels_compile_for_sm90_without_spills_and_with_vector_loads():
    """The kernel specialisations compile ahead of time for an H100 with no GPU here: no spill,
    registers within the 255 limit, and the big tensors of contiguous rows (length a multiple of
    16) loaded and stored with 8- or 16-byte vector instructions; rows of odd length and (N, C, D)
    logits cannot be (their rows do not start on a 16-byte boundary, or are strided)."""
    from exportable_loss.triton_kernels import aot

    specs = aot.specialisations(representative=True)
    kernels = {s.kernel for s in specs}
    assert kernels == {
        "cross_entropy_forward_kernel", "cross_entropy_backward_kernel", "finish_reduction_kernel",
        "pointwise_forward_kernel", "pointwise_backward_kernel",
    }  # fmt: skip
    # a fraction, to stay within a minute on two cores: every kernel, fp32 and bf16, options off and on
    chosen = {}
    for s in specs:
        chosen.setdefault((s.kernel, s.dtype, s.options.split()[0], "HAS_WEIGHT" in s.options), s)
    with aot.private_cache():
        reports = [aot.compile_one(s, 90) for s in chosen.values()]
    for r in reports:
        assert r.error is None, r
        assert r.local_bytes == 0 and r.spill_stores == 0 and r.spill_loads == 0 and 0 < r.registers <= 255, r
        if r.options.startswith(("rows", "aligned")):
            assert r.vectorised and all(w == 16 for w in r.access.values()), r
        elif r.access:
            assert not r.vectorised, r  # if this starts vectorising, update the docs' explanation
    assert any(r.options.startswith("rows") and r.access for r in reports)


def test_kernels_command_prints_a_table_and_exits_0(tmp_path):
    if not tk.triton_importable():
        pytest.skip("needs Triton")
    done = subprocess.run(
        [sys.executable, "-m", "exportable_loss", "kernels", "--arch", "90", "--representative", "--only", "finish"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| `finish_reduction_kernel` |" in done.stdout and "0 failed, 0 spill" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "exportable_loss", "kernels", "--arch", "nine"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid int value" in bad.stderr
