"""``tritonlens bench --quick`` end to end: perf_analyzer against a real tritonserver.

Asserts that the results are complete (files, fields, non-empty measurements for every
served CLIP model, baselines, ratios), never how fast anything was. perf_analyzer is
installed into its own tool venv (``.tools/perf_analyzer``) if missing; if it cannot be
installed or run, this test FAILS: it is never skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonlens.bench.run import BenchOptions, run_bench
from tritonlens.bench.scenarios import all_scenarios

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "quick"
    return run_bench(BenchOptions(quick=True, out=out, work=REPO_ROOT / "build" / "bench",
                                  tools_dir=REPO_ROOT / ".tools"))


def test_quick_bench_writes_every_file(quick_results):
    for name in ("results.json", "report.md", "throughput_vs_concurrency.png",
                 "latency_percentiles.png", "tritonserver.log"):
        path = quick_results / name
        assert path.exists() and path.stat().st_size > 0, f"{name} missing or empty"
    assert (quick_results / "throughput_vs_concurrency.png").read_bytes()[:4] == b"\x89PNG"


def test_quick_bench_measures_every_served_clip_model(quick_results):
    results = json.loads((quick_results / "results.json").read_text())
    clip_models = {s.model for s in all_scenarios() if s.family == "clip"}
    assert clip_models <= set(results["served"])
    assert results["uncovered"] == []
    measured = {p["model"] for p in results["perf"]}
    assert clip_models <= measured
    for point in results["perf"]:
        assert point["error"] == "", f"{point['model']} {point['protocol']}: {point['error']}"
        assert point["throughput"] > 0
        assert 0 < point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
        res = point["resources"]
        assert res["server_peak_rss_mb"] > 0 and res["stubs_peak_rss_mb"]
        assert res["server_cpu_cores"] >= 0
    combos = {(p["protocol"], p["shared_memory"]) for p in results["perf"] if p["model"] == "clip_classify"}
    assert {("grpc", "none"), ("http", "none"), ("grpc", "system")} <= combos
    assert len({p["concurrency"] for p in results["perf"] if p["model"] == "clip_classify"}) >= 2


def test_quick_bench_has_baselines_ratios_and_context(quick_results):
    results = json.loads((quick_results / "results.json").read_text())
    assert "clip" in results["families"]
    base = results["baselines"]["clip"]
    for engine in ("onnxruntime", "torch"):
        assert base[engine]["images_per_s"] and base[engine]["best_images_per_s"] > 0
    assert base["naive"]["seconds_per_image"] and base["naive"]["top5"][0]
    ratios = results["ratios"]["clip"]
    for key in ("triton_vs_onnxruntime", "triton_vs_torch", "triton_vs_naive"):
        assert ratios[key] > 0
    assert results["host"]["usable_cores"] >= 1 and results["versions"]["perf_analyzer"]
    assert "clip_image_encoder" in results["configs"]
    report = (quick_results / "report.md").read_text()
    for heading in ("## Against the targets", "## Triton under perf_analyzer",
                    "## In-process baselines", "## Memory", "## Configs served"):
        assert heading in report
