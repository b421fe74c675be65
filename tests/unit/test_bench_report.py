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

