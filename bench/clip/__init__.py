"""CLIP's part of the benchmarks: the in-process reference engines (open_clip in torch, the raw
onnxruntime session, the naive one-process-per-image path), the end-to-end path study, the
proxy study, and its steps of `tritonlens bench` (export, baselines, tuning, report)."""
