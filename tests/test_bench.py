"""exportable-loss bench --quick writes its JSON, plot and table, with real measurements."""

import json
import os

from exportable_loss.cli import main


def test_bench_quick(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["bench.json", "bench.md", "bench.png"]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert {r["reduction"] for r in results["overhead"]} == {"none", "mean", "sum"}
    assert all(r["ours_ms"] > 0 and r["baseline_ms"] > 0 and r["ratio"] > 0 for r in results["overhead"])
    assert len(results["sweep"]) == 3 * (4 + 3) and len(results["onnxruntime"]) == 2
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cross_entropy (4096, 1000) | mean |" in capsys.readouterr().out
