"""bench/report.py plots: every series in a throughput panel has its own colour."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from tritonlens.bench.report import plot_throughput, series_colours  # noqa: E402


def test_series_colours_are_distinct():
    for count in (1, 2, 10, 11, 20, 21, 40):
        colours = series_colours(count)
        assert len(colours) == count and len(set(colours)) == count


def test_throughput_panels_give_every_series_its_own_colour(tmp_path, monkeypatch):
    models = ["clip_classify", "clip_embed_image", "clip_embed_text", "clip_image_encoder",
              "clip_text_encoder", "clip_tokenize", "clip_preprocess"]
    perf = [{"model": m, "protocol": proto, "shared_memory": shm, "concurrency": c,
             "throughput": 10.0 * c, "error": ""}
            for m, proto, shm, c in itertools.product(models, ("grpc", "http"), ("none",), (1, 2, 4))]
    results = {"perf": perf, "export": {"model": "ViT-S-32"}, "host": {"usable_cores": 2}}
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    plot_throughput(results, tmp_path / "throughput.png")
    assert (tmp_path / "throughput.png").stat().st_size > 0
    (ax,) = figures[0].axes
    colours = [to_rgba(line.get_color()) for line in ax.get_lines()]
    assert len(colours) == len(models) * 2 == len(set(colours))  # 14 series > the 10-colour cycle



def _clip_result(served: float, pa: float, pss: float):
    from tritonlens.bench.clip.path import ClipPathResult

    result = ClipPathResult("avx2 fma", 2, {1: 16.0, 8: 19.0, 16: 20.0}, {})
    result.served = {"16 photos per request": [served - 1, served]}
    result.perf_analyzer, result.perf_analyzer_concurrency = pa, 16
    result.cpu_ms = {"stub:clip_image_encoder": 100.0, "stub:clip_preprocess": 10.0,
                     "tritonserver": 0.5, "client": 0.5}
    result.pss_idle_mb, result.pss_loaded_mb = pss, pss + 300
    return result


def test_clip_path_ceiling_is_raw_core_ms_over_raw_plus_preprocessing():
    result = _clip_result(18.0, 17.0, 1200.0)
    assert result.raw == 20.0 and result.raw_batch == 16
    assert result.raw_core_ms == 100.0  # 2 cores x 1000 ms / 20 photos/s
    assert abs(result.ceiling - 100.0 / 110.0) < 1e-9
    assert result.best_served == 18.0


def test_targets_table_says_met_and_missed_per_target():
    from tritonlens.bench.studies.targets import table

    tracking = [(1, 2.0, 1.0, "1/1/1", {}), (2, 2.2, 1.1, "1/1/1", {}),
                (4, 2.1, 1.05, "1/1/1", {}), (8, 2.4, 1.2, "1/1/1", {})]
    rows = table(tracking, _clip_result(19.0, 19.5, 1400.0), 512).splitlines()
    assert rows[2].endswith("| met |") and "**1.10x**" in rows[2]
    assert rows[3].endswith("| met |") and "**0.95x**" in rows[3] and "**0.91x**" in rows[3]
    assert rows[4].endswith("| met |") and "1400 MB" in rows[4]
    collapsed = [tracking[0], (2, 1.8, 0.9, "1/1/1", {}), *tracking[2:]]
    rows = table(collapsed, _clip_result(19.0, 18.0, 1600.0), 512).splitlines()
    assert rows[2].endswith("| missed |")  # one stream count under 1.0x
    assert rows[3].endswith("| missed |")  # perf_analyzer at 0.90x
    assert rows[4].endswith("| missed |")  # 1600 MB > 1500 MB
