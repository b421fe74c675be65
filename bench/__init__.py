"""tritonlens.bench: perf_analyzer scenarios and in-process baselines."""
