"""CLIP zero-shot serving in each precision and memory profile, measured side by side.

For each variant (fp32/int8 x default/low-memory) this exports CLIP into its own model
repository, starts a real tritonserver on it, and measures in one run on the same real
photos:

* memory of the whole server (tritonserver + every Python-backend stub): the sum of RSS,
  and the sum of PSS (proportional set size: a page shared by two processes counts half in
  each, so memory-mapped weights shared between instances are not counted twice), at idle
  after load and at peak under load;
* throughput and latency of ``clip_classify`` (encoded JPEG/PNG/WebP bytes in, label
  probabilities out) under perf_analyzer, gRPC, at one concurrency;
* agreement with the fp32 default variant: embedding cosine and zero-shot top-1 agreement.

Then the cost of a second instance: the same export with two image-encoder instances, and
the extra PSS it brings relative to the first instance's RSS.

Run: ``python -m tritonlens.bench.profiles [--model ViT-B-32] [--out results/profiles]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from tritonlens.bench.monitor import ResourceMonitor, process_label
from tritonlens.bench.perf_analyzer import (Measurement, PerfPoint, ensure_perf_analyzer, run_point,
                                            write_input_data)
from tritonlens.client.clip import ClipClient
from tritonlens.client.demo import DEMO_LABELS, write_sample_photos
from tritonlens.export.clip import ClipExportOptions, export_clip
from tritonlens.export.clip.export import read_lines
from tritonlens.serve import TritonServer

TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of a {}."]


@dataclass(frozen=True)
class Variant:
    """One export to measure: precision, profile and image-encoder instances."""

    precision: str
    profile: str
    instances: int = 1
    text: bool | None = None  # None: the profile's default (no text models in low-memory)

    @property
    def name(self) -> str:
        return (f"{self.precision}-{self.profile}" + ("+text" if self.text else "")
                + (f"-x{self.instances}" if self.instances > 1 else ""))


VARIANTS = [Variant("fp32", "default"), Variant("fp32", "low-memory"),
            Variant("fp32", "low-memory", text=True),
            Variant("int8", "default"), Variant("int8", "low-memory"),
            Variant("fp32", "default", 2), Variant("fp32", "low-memory", 2)]


def tree_memory(pid: int) -> dict:
    """RSS and PSS (MB) of a process and its children, total and per process label."""
    rss = pss = 0.0
    per_process: list[dict] = []
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss / 2**20
        pss += info.pss / 2**20
        per_process.append({"process": process_label(proc), "rss_mb": round(info.rss / 2**20, 1),
                            "pss_mb": round(info.pss / 2**20, 1),
                            "uss_mb": round(info.uss / 2**20, 1)})
    return {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1), "processes": per_process}


def measure_variant(variant: Variant, model: str, pretrained: str, photos: list[Path],
                    work: Path, tool, concurrency: int, interval_ms: int) -> dict:
    """Export, serve and measure one variant (see the module docstring)."""
    repo = work / "repos" / variant.name
    labels = read_lines(DEMO_LABELS, "labels")
    cores = os.cpu_count() or 1
    export_clip(ClipExportOptions(model=model, pretrained=pretrained, labels=labels,
                                  templates=TEMPLATES, precision=variant.precision,
                                  profile=variant.profile, instance_count=variant.instances,
                                  text=variant.text,
                                  threads=max(1, cores // variant.instances)), repo)
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=work / f"{variant.name}.server.log") as server:
        client = ClipClient(server.grpc_url, "grpc")
        embeddings = client.embed_images(photos)  # also warms every model up
        probabilities = client.probabilities(photos)
        time.sleep(1.0)
        idle = tree_memory(server.process.pid)
        data = write_input_data(work / "inputs" / "image_bytes.json",
                                [[{"image": [p.read_bytes()]} for p in photos]])
        point = PerfPoint("clip_classify", "grpc", "none", concurrency)
        with ResourceMonitor(server.process.pid) as monitor:
            point = run_point(tool, point, server.grpc_url, data, work / "perf" / variant.name,
                              Measurement(interval_ms=interval_ms),
                              on_start=monitor.watch_client)
            loaded = tree_memory(server.process.pid)
        usage = monitor.summary()
    return {"variant": variant.name, "precision": variant.precision, "profile": variant.profile,
            "instances": variant.instances, "idle": idle, "under_load": loaded,
            "peak_rss_mb": max(usage["total_peak_rss_mb"], loaded["rss_mb"]),
            "throughput": point.throughput, "p50_ms": point.p50_ms, "p95_ms": point.p95_ms,
            "p99_ms": point.p99_ms, "error": point.error,
            "server_cpu_cores": usage["server_cpu_cores"], "other_cpu_cores": usage["other_cpu_cores"],
            "embeddings": embeddings.tolist(), "probabilities": probabilities.tolist()}


def encoder_stubs(result: dict) -> list[dict]:
    return [p for p in result["idle"]["processes"] if p["process"] == "stub:clip_image_encoder"]


def summarise(results: list[dict]) -> dict:
    """Ratios against fp32-default: memory, throughput, agreement; second-instance cost."""
    by_name = {r["variant"]: r for r in results}
    base = by_name["fp32-default"]
    base_emb, base_prob = np.array(base["embeddings"]), np.array(base["probabilities"])
    rows = []
    for r in results:
        emb, prob = np.array(r["embeddings"]), np.array(r["probabilities"])
        cos = np.sum(emb * base_emb, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(base_emb, axis=1))
        rows.append({
            "variant": r["variant"], "peak_rss_mb": r["peak_rss_mb"],
            "idle_pss_mb": r["idle"]["pss_mb"],
            "peak_rss_vs_fp32_default": round(r["peak_rss_mb"] / base["peak_rss_mb"], 3),
            "throughput": round(r["throughput"], 2),
            "throughput_vs_fp32_default": round(r["throughput"] / base["throughput"], 3) if base["throughput"] else None,
            "p50_ms": round(r["p50_ms"], 1), "p95_ms": round(r["p95_ms"], 1),
            "min_cosine_vs_fp32": round(float(cos.min()), 5),
            "top1_agreement_vs_fp32": float(np.mean(prob.argmax(1) == base_prob.argmax(1))),
            "other_cpu_cores": r["other_cpu_cores"], "error": r["error"],
        })
    second = {}
    for profile in ("default", "low-memory"):
        one, two = by_name.get(f"fp32-{profile}"), by_name.get(f"fp32-{profile}-x2")
        if not (one and two and encoder_stubs(one) and len(encoder_stubs(two)) == 2):
            continue
        first_rss = encoder_stubs(one)[0]["rss_mb"]
        extra_pss = sum(p["pss_mb"] for p in encoder_stubs(two)) - encoder_stubs(one)[0]["pss_mb"]
        second[profile] = {"first_instance_rss_mb": first_rss,
                           "second_instance_extra_pss_mb": round(extra_pss, 1),
                           "ratio": round(extra_pss / first_rss, 3)}
    return {"variants": rows, "second_instance": second}


def markdown(summary: dict, model: str) -> str:
    """The report table as markdown."""
    head = ["variant", "peak RSS MB", "vs fp32", "idle PSS MB", "classify/s", "vs fp32",
            "p50 ms", "p95 ms", "min cosine", "top-1 agree", "other CPU"]
    lines = [f"CLIP {model} zero-shot (`clip_classify`, gRPC), whole server = tritonserver + stubs",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["variants"]:
        lines.append("| " + " | ".join(str(x) for x in (
            r["variant"], r["peak_rss_mb"], r["peak_rss_vs_fp32_default"], r["idle_pss_mb"],
            r["throughput"], r["throughput_vs_fp32_default"], r["p50_ms"], r["p95_ms"],
            r["min_cosine_vs_fp32"], r["top1_agreement_vs_fp32"], r["other_cpu_cores"])) + " |")
    lines += ["", "| second image-encoder instance | first instance RSS MB | extra PSS MB | ratio |",
              "|---|---|---|---|"]
    for profile, s in summary["second_instance"].items():
        lines.append(f"| {profile} | {s['first_instance_rss_mb']} | "
                     f"{s['second_instance_extra_pss_mb']} | {s['ratio']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--out", type=Path, default=Path("results/profiles"))
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--interval-ms", type=int, default=8000)
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tool = ensure_perf_analyzer(log=print)
    photos = write_sample_photos(args.out / "photos")
    chosen = [v for v in VARIANTS if not args.variants or v.name in args.variants.split(",")]
    results = []
    for variant in chosen:
        print(f"measuring {variant.name} ...", flush=True)
        results.append(measure_variant(variant, args.model, args.pretrained, photos, args.out,
                                       tool, args.concurrency, args.interval_ms))
        (args.out / "raw.json").write_text(json.dumps(results, indent=1))
    summary = summarise(results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary, args.model)
    (args.out / "profiles.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
