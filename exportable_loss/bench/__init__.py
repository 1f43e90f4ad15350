"""The benchmarks behind ``exportable-loss bench`` (``suite``, with ``cuda`` on a GPU)
and ``exportable-loss bench-linear-ce`` (``linear_ce``): ratios against baselines measured
in the same run."""
