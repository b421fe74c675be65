"""The results folder: ``results.json``, ``report.md`` and two PNG plots.

* ``results.json``: everything measured (perf_analyzer points with CPU/RSS, baselines,
  tuning), the host, versions, options and every served model's config.
* ``report.md``: each family's sections (its ratios against the targets, its in-process
  baselines, its tuning: ``Plugin.bench_summary``), then the tables.
* ``throughput_vs_concurrency.png``: inferences/s per model and protocol (log scale).
* ``latency_percentiles.png``: p50/p95/p99 of the end-to-end model per concurrency.

Units everywhere: throughput in inferences (images) per second, latency in milliseconds,
CPU in cores (CPU seconds per wall second), memory in MB (2**20 bytes).
"""

from __future__ import annotations

import json
from pathlib import Path

def read_configs(repo: Path, models: list[str]) -> dict[str, str]:
    """``config.pbtxt`` text of each served model, as it was served."""
    return {m: (repo / m / "config.pbtxt").read_text() for m in models
            if (repo / m / "config.pbtxt").exists()}


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _config_summary(text: str) -> list:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse(text, mc.ModelConfig())
    if config.platform == "ensemble":
        return ["ensemble", config.max_batch_size, "-", "-", "-", "-"]
    batching = config.dynamic_batching
    threads = config.parameters["intra_op_thread_count"].string_value if "intra_op_thread_count" in config.parameters else "-"
    return [config.backend, config.max_batch_size, batching.max_queue_delay_microseconds,
            list(batching.preferred_batch_size) or "none",
            sum(g.count for g in config.instance_group) or 1, threads]


def contended_host(results: dict) -> bool:
    """Whether other jobs used more than 0.3 cores during any measured point."""
    others = [p["resources"].get("other_cpu_cores", 0.0) for p in results["perf"]]
    return bool(others) and max(others) > 0.3


def markdown(results: dict, sections: list[str] = ()) -> str:
    """The report as markdown (see the module docstring); ``sections`` are the families'
    own (``Plugin.bench_summary``: targets, baselines, tuning), placed after the context."""
    host, ver = results["host"], results["versions"]
    titles = [e.get("title", family) for family, e in results["export"].items()] or ["the repository given"]
    lines = [f"# tritonlens benchmark: {', '.join(titles)} ({results['meta']['mode']} mode)", "",
             f"Run {results['meta']['started']}, {results['meta']['duration_s']:.0f} s. Host: "
             f"{host['cpu']}, {host['usable_cores']} usable cores, {host['memory_gb']} GB RAM, "
             f"{host['os']}, Python {host['python']}, {host['gpu']}. Client (perf_analyzer) and "
             "server share the host. Load average (1/5/15 min) before the baselines: "
             f"{results['meta'].get('load_average_before_baselines')}, at the end: "
             f"{results['meta'].get('load_average_at_end')}; the `other CPU` column is CPU used "
             "by other jobs on the host during each point (0 = a quiet host).", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()) + ".", "",
             f"Inputs: {len(results['inputs']['photos'])} real photos "
             f"({', '.join(results['inputs']['photos'])}), the same for every engine.", ""]
    others = [p["resources"].get("other_cpu_cores", 0.0) for p in results["perf"]]
    if contended_host(results):
        busy = [p for p in results["perf"] if p["resources"].get("other_cpu_cores", 0.0) > 0.3]
        lines += [f"**Contended host:** other jobs used up to {max(others):.2f} cores during "
                  f"{len(busy)} of {len(others)} points (`other CPU` column); those figures are "
                  "low and the ratios noisy. Compare points with `other CPU` near 0.", ""]
    lines += list(sections)
    lines += ["Reproduce: `make bench` (full) or `tritonlens bench --quick` (small models, < 3 min); "
              "perf_analyzer is installed into `.tools/perf_analyzer` on the first run.", ""]
    lines += ["## Triton under perf_analyzer", "",
              "Latency is client-side. CPU: cores busy on average (server = tritonserver plus its "
              "stubs; client = perf_analyzer). RSS: peak during the point.", "",
              table(["model", "protocol", "shm", "conc.", "infer/s", "p50 ms", "p95 ms", "p99 ms",
                      "server CPU", "client CPU", "other CPU", "server RSS MB", "stubs RSS MB"],
                     [[p["model"], p["protocol"], p["shared_memory"], p["concurrency"],
                       f"{p['throughput']:.2f}" if not p["error"] else "FAILED",
                       f"{p['p50_ms']:.1f}", f"{p['p95_ms']:.1f}", f"{p['p99_ms']:.1f}",
                       f"{p['resources'].get('server_cpu_cores', 0):.2f}",
                       f"{p['resources'].get('client_cpu_cores', 0):.2f}",
                       f"{p['resources'].get('other_cpu_cores', 0):.2f}",
                       f"{p['resources'].get('server_peak_rss_mb', 0):.0f}",
                       f"{sum(p['resources'].get('stubs_peak_rss_mb', {}).values()):.0f}"]
                      for p in results["perf"]]), ""]
    errors = [p for p in results["perf"] if p["error"]]
    if errors:
        lines += ["Failed points:", ""] + [f"- {p['model']} {p['protocol']} c={p['concurrency']}: "
                                          f"{p['error']}" for p in errors] + [""]
    stubs: dict[str, float] = {}
    for p in results["perf"]:
        for k, v in p["resources"].get("stubs_peak_rss_mb", {}).items():
            stubs[k] = max(stubs.get(k, 0.0), v)
    server_peak = max([p["resources"].get("server_peak_rss_mb", 0) for p in results["perf"]] or [0])
    lines += ["## Memory", "",
              f"Idle after start: tritonserver {results['idle']['server_peak_rss_mb']:.0f} MB, all "
              f"processes {results['idle']['total_peak_rss_mb']:.0f} MB. Peak over the run: "
              f"tritonserver {server_peak:.0f} MB; per model, its largest stub (one stub per instance):", "",
              table(["process", "peak RSS MB"], [[k, f"{v:.0f}"] for k, v in sorted(stubs.items())]), ""]
    lines += ["## Configs served", "",
              table(["model", "backend", "max batch", "queue delay us", "preferred", "instances",
                      "intra-op threads"],
                     [[m, *_config_summary(t)] for m, t in results["configs"].items()]), "",
              "Full `config.pbtxt` texts are in `results.json` (`configs`).", ""]
    if results.get("uncovered") or results.get("failed_to_load"):
        lines += [f"Served without a scenario: {', '.join(results['uncovered']) or 'none'}. "
                  f"Failed to load: {', '.join(results['failed_to_load']) or 'none'}.", ""]
    lines += ["![throughput vs concurrency](throughput_vs_concurrency.png)", "",
              "![latency percentiles](latency_percentiles.png)", ""]
    return "\n".join(lines)


# -- plots --------------------------------------------------------------------------------
def series_colours(count: int) -> list[tuple[float, float, float, float]]:
    """``count`` distinct RGBA colours, one per plotted series: matplotlib's qualitative
    ``tab10`` / ``tab20`` maps while they suffice (the default colour cycle repeats after 10,
    which gave two series the same green), else evenly spaced hues of ``hsv``."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["hsv"](i / count) for i in range(count)]


def plot_throughput(results: dict, path: Path) -> None:
    """Inferences/s vs concurrency, one panel per model family (the model name's prefix:
    clip, sam2 ...) and one line per (model, protocol, shared memory)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, list]] = {}
    for p in results["perf"]:
        if p["error"]:
            continue
        label = f"{p['model']} {p['protocol']}" + (" shm" if p["shared_memory"] != "none" else "")
        family = p["model"].split("_")[0]
        panels.setdefault(family, {}).setdefault(label, []).append((p["concurrency"], p["throughput"]))
    fig, axes = plt.subplots(max(1, len(panels)), 1, figsize=(9, 3.6 * max(1, len(panels))),
                             dpi=90, squeeze=False)
    for ax, (family, series) in zip(axes[:, 0], sorted(panels.items())):
        colours = series_colours(len(series))
        for colour, (label, pts) in zip(colours, sorted(series.items())):
            pts.sort()
            ax.plot([c for c, _ in pts], [t for _, t in pts], marker="o", label=label, color=colour,
                    linestyle="--" if " http" in label else "-",
                    linewidth=2.5 if label.split()[0] in results.get("end_to_end", ()) else 1)
        reference = results.get("ratios", {}).get(family, {}).get("reference")
        if reference:  # the family's in-process reference engine (Plugin.bench_summary)
            ax.axhline(reference["images_per_s"], color="k", linestyle="--", linewidth=1,
                       label=reference["label"])
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel("inferences / s (log)")
        title = results.get("export", {}).get(family, {}).get("title", family.upper())
        ax.set_title(f"Throughput, {title}, {results['host']['usable_cores']} cores")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(results: dict, path: Path) -> None:
    """p50/p95/p99 latency of the first end-to-end model (a family's user-facing path,
    ``results["end_to_end"]``) per concurrency and protocol."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = (results.get("end_to_end") or ["(no end-to-end model)"])[0]
    points = [p for p in results["perf"] if p["model"] == model and not p["error"] and p["throughput"] > 0]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=90)
    labels = [f"{p['protocol']}{' shm' if p['shared_memory'] != 'none' else ''}\nc={p['concurrency']}"
              for p in points]
    width = 0.27
    for i, (key, name) in enumerate((("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))):
        ax.bar([x + (i - 1) * width for x in range(len(points))], [p[key] for p in points], width,
               label=name)
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{model} latency percentiles (client side)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_all(results: dict, out: Path, sections: list[str] = ()) -> dict[str, Path]:
    """Write the JSON, the markdown and the plots into ``out``; returns their paths."""
    paths = {"json": out / "results.json", "markdown": out / "report.md",
             "throughput_plot": out / "throughput_vs_concurrency.png",
             "latency_plot": out / "latency_percentiles.png"}
    paths["json"].write_text(json.dumps(results, indent=1, default=str))
    plot_throughput(results, paths["throughput_plot"])
    plot_latency(results, paths["latency_plot"])
    paths["markdown"].write_text(markdown(results, sections))
    return paths
