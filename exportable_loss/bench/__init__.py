"""The benchmarks behind ``exportable-loss bench`` (:mod:`.suite`, with :mod:`.cuda` on a GPU)
and ``exportable-loss bench-linear-ce`` (:mod:`.linear_ce`): ratios against baselines measured
in the same run."""
