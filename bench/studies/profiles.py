"""Serving in each precision and memory profile, measured side by side (CLIP and SAM 2).

For each variant (fp32/int8 x default/low-memory) this exports the model family into its
own model repository, starts a real tritonserver on it, and measures in one run on the same
real photos:

* memory of the whole server (tritonserver + every Python-backend stub): the sum of RSS,
  and the sum of PSS (proportional set size: a page shared by two processes counts half in
  each, so memory-mapped weights shared between instances are not counted twice), at idle
  after load and at peak under load;
* throughput and latency of the family's end-to-end ensemble under perf_analyzer, gRPC, at
  one concurrency: ``clip_classify`` (encoded photo bytes in, label probabilities out) or
  ``sam2_segment`` (photo bytes + one click in, masks out);
* agreement with the fp32 default variant: CLIP embedding cosine and zero-shot top-1
  agreement; SAM 2 mask IoU (every mask of a centre click on every photo).

For CLIP, then the cost of a second instance: the same export with two image-encoder
instances; a second instance adds its private memory (USS: pages it shares with the first,
such as memory-mapped weights, are already paid for), relative to the first's RSS.

Run: ``python -m tritonlens.bench.studies.profiles [--family clip|sam2] [--model ViT-B-32]
[--sam2-size 512] [--out results/profiles]``.
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
from PIL import Image

from tritonlens.bench.monitor import ResourceMonitor, process_label
from tritonlens.bench.perf_analyzer import (Measurement, PerfPoint, ensure_perf_analyzer, run_point,
                                            write_input_data)
from tritonlens.client.clip import ClipClient
from tritonlens.client.clip.demo import DEMO_LABELS
from tritonlens.client.demo import write_sample_photos
from tritonlens.core.plugins import BenchInputs
from tritonlens.client.sam2 import Sam2Client, mask_iou
from tritonlens.client.sam2.scenarios import sam2_image_and_click
from tritonlens.export.clip import ClipExportOptions, export_clip
from tritonlens.export.clip.export import read_lines
from tritonlens.export.onnx_variants import INT8_FORMAT, host_isa
from tritonlens.launcher import TritonServer

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


VARIANTS = {
    "clip": [Variant("fp32", "default"), Variant("fp32", "low-memory"),
             Variant("fp32", "low-memory", text=True),
             Variant("int8", "default"), Variant("int8", "low-memory"),
             Variant("fp32", "default", 2), Variant("fp32", "low-memory", 2)],
    # fp32-default is what `export sam2` gives by default: TorchScript image encoder and the
    # video tracker; the others are onnxruntime graphs without the tracker.
    "sam2": [Variant("fp32", "default"), Variant("fp32", "low-memory"),
             Variant("int8", "default"), Variant("int8", "low-memory")],
}
ENSEMBLE = {"clip": "clip_classify", "sam2": "sam2_segment"}


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


def export_variant(family: str, variant: Variant, args, repo: Path) -> None:
    """Export ``family`` in ``variant`` into ``repo`` (threads split between instances)."""
    threads = max(1, (os.cpu_count() or 1) // variant.instances)
    if family == "clip":
        export_clip(ClipExportOptions(model=args.model, pretrained=args.pretrained,
                                      labels=read_lines(DEMO_LABELS, "labels"),
                                      templates=TEMPLATES, precision=variant.precision,
                                      profile=variant.profile, instance_count=variant.instances,
                                      text=variant.text, threads=threads), repo)
    else:
        from tritonlens.export.sam2 import Sam2ExportOptions, export_sam2

        export_sam2(Sam2ExportOptions(config=args.sam2_config, checkpoint=args.sam2_checkpoint,
                                      image_size=args.sam2_size, precision=variant.precision,
                                      profile=variant.profile, instance_count=variant.instances,
                                      threads=threads), repo)


def served_outputs(family: str, server: TritonServer, photos: list[Path]) -> dict:
    """What agreement is measured on (and the warm-up of every model on the path)."""
    if family == "clip":
        client = ClipClient(server.grpc_url, "grpc")
        return {"embeddings": client.embed_images(photos).tolist(),
                "probabilities": client.probabilities(photos).tolist()}
    client = Sam2Client(server.grpc_url, "grpc")
    masks = []
    for photo in photos:
        width, height = Image.open(photo).size
        masks.append(client.segment(photo, points=[(width / 2, height / 2)], labels=[1]).masks)
    return {"masks": [np.packbits(m).tolist() for m in masks],
            "mask_shapes": [list(m.shape) for m in masks]}


def measure_variant(family: str, variant: Variant, args, photos: list[Path], tool) -> dict:
    """Export, serve and measure one variant (see the module docstring)."""
    work = args.out
    repo = work / "repos" / variant.name
    export_variant(family, variant, args, repo)
    inputs = BenchInputs(photos=photos, repo=repo)
    streams = ([[{"image": [p.read_bytes()]} for p in photos]] if family == "clip"
               else sam2_image_and_click(inputs))
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=work / f"{variant.name}.server.log") as server:
        outputs = served_outputs(family, server, photos)  # also warms every model up
        time.sleep(1.0)
        idle = tree_memory(server.process.pid)
        data = write_input_data(work / "inputs" / f"{family}.json", streams)
        point = PerfPoint(ENSEMBLE[family], "grpc", "none", args.concurrency)
        with ResourceMonitor(server.process.pid) as monitor:
            point = run_point(tool, point, server.grpc_url, data, work / "perf" / variant.name,
                              Measurement(interval_ms=args.interval_ms),
                              on_start=monitor.watch_client)
            loaded = tree_memory(server.process.pid)
        usage = monitor.summary()
    return {"variant": variant.name, "precision": variant.precision, "profile": variant.profile,
            "instances": variant.instances, "idle": idle, "under_load": loaded,
            "peak_rss_mb": max(usage["total_peak_rss_mb"], loaded["rss_mb"]),
            "throughput": point.throughput, "p50_ms": point.p50_ms, "p95_ms": point.p95_ms,
            "p99_ms": point.p99_ms, "error": point.error,
            "server_cpu_cores": usage["server_cpu_cores"], "other_cpu_cores": usage["other_cpu_cores"],
            **outputs}


def agreement(result: dict, base: dict) -> dict:
    """Agreement of a variant with fp32-default: CLIP cosine/top-1, SAM 2 mask IoU."""
    if "embeddings" in result:
        emb, base_emb = np.array(result["embeddings"]), np.array(base["embeddings"])
        prob, base_prob = np.array(result["probabilities"]), np.array(base["probabilities"])
        cos = np.sum(emb * base_emb, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(base_emb, axis=1))
        return {"min_cosine_vs_fp32": round(float(cos.min()), 5),
                "top1_agreement_vs_fp32": round(float(np.mean(prob.argmax(1) == base_prob.argmax(1))), 3)}
    ious = []
    for packed, base_packed, shape in zip(result["masks"], base["masks"], result["mask_shapes"]):
        count = int(np.prod(shape))
        a = np.unpackbits(np.array(packed, np.uint8))[:count].reshape(shape).astype(bool)
        b = np.unpackbits(np.array(base_packed, np.uint8))[:count].reshape(shape).astype(bool)
        ious += [mask_iou(x, y) for x, y in zip(a, b)]
    return {"min_mask_iou_vs_fp32": round(float(min(ious)), 4),
            "mean_mask_iou_vs_fp32": round(float(np.mean(ious)), 4)}


def encoder_stubs(result: dict) -> list[dict]:
    return [p for p in result["idle"]["processes"] if p["process"] == "stub:clip_image_encoder"]


def summarise(results: list[dict]) -> dict:
    """Ratios against fp32-default: memory, throughput, agreement; second-instance cost."""
    by_name = {r["variant"]: r for r in results}
    base = by_name["fp32-default"]
    rows = []
    for r in results:
        rows.append({
            "variant": r["variant"], "peak_rss_mb": r["peak_rss_mb"],
            "idle_pss_mb": r["idle"]["pss_mb"],
            "peak_rss_vs_fp32_default": round(r["peak_rss_mb"] / base["peak_rss_mb"], 3),
            "throughput": round(r["throughput"], 2),
            "throughput_vs_fp32_default": round(r["throughput"] / base["throughput"], 3) if base["throughput"] else None,
            "p50_ms": round(r["p50_ms"], 1), "p95_ms": round(r["p95_ms"], 1),
            **agreement(r, base),
            "other_cpu_cores": r["other_cpu_cores"], "error": r["error"],
        })
    # What a second instance adds is its private memory (USS): pages it shares with the
    # first (memory-mapped weights, shared libraries) are already paid for. Relative to
    # the RSS of the single instance of the one-instance export.
    second = {}
    for profile in ("default", "low-memory"):
        one, two = by_name.get(f"fp32-{profile}"), by_name.get(f"fp32-{profile}-x2")
        if not (one and two and encoder_stubs(one) and len(encoder_stubs(two)) == 2):
            continue
        first_rss = encoder_stubs(one)[0]["rss_mb"]
        private = float(np.mean([p["uss_mb"] for p in encoder_stubs(two)]))
        second[profile] = {"first_instance_rss_mb": first_rss,
                           "instance_private_mb": round(private, 1),
                           "ratio": round(private / first_rss, 3)}
    return {"variants": rows, "second_instance": second}


def markdown(summary: dict, title: str) -> str:
    """The report table as markdown (agreement columns follow the family)."""
    rows = summary["variants"]
    sam2 = "min_mask_iou_vs_fp32" in rows[0]
    agree = (["min mask IoU", "mean mask IoU"] if sam2 else ["min cosine", "top-1 agree"])
    keys = (["min_mask_iou_vs_fp32", "mean_mask_iou_vs_fp32"] if sam2
            else ["min_cosine_vs_fp32", "top1_agreement_vs_fp32"])
    head = ["variant", "peak RSS MB", "vs fp32", "idle PSS MB", "requests/s", "vs fp32",
            "p50 ms", "p95 ms", *agree, "other CPU"]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in (
            r["variant"], r["peak_rss_mb"], r["peak_rss_vs_fp32_default"], r["idle_pss_mb"],
            r["throughput"], r["throughput_vs_fp32_default"], r["p50_ms"], r["p95_ms"],
            *(r[k] for k in keys), r["other_cpu_cores"])) + " |")
    if summary["second_instance"]:
        lines += ["", "| second image-encoder instance | first instance RSS MB | "
                  "private MB per instance (USS) | ratio |", "|---|---|---|---|"]
        for profile, s in summary["second_instance"].items():
            lines.append(f"| {profile} | {s['first_instance_rss_mb']} | "
                         f"{s['instance_private_mb']} | {s['ratio']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(VARIANTS), default="clip")
    parser.add_argument("--model", default="ViT-B-32", help="OpenCLIP model (--family clip)")
    parser.add_argument("--pretrained", default="none", help="OpenCLIP weights (--family clip)")
    parser.add_argument("--sam2-config", default="sam2.1_hiera_t")
    parser.add_argument("--sam2-checkpoint", default="none")
    parser.add_argument("--sam2-size", type=int, default=512, help="SAM 2 image size in pixels")
    parser.add_argument("--out", type=Path, default=Path("results/profiles"))
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--interval-ms", type=int, default=8000)
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tool = ensure_perf_analyzer(log=print)
    photos = write_sample_photos(args.out / "photos")
    chosen = [v for v in VARIANTS[args.family]
              if not args.variants or v.name in args.variants.split(",")]
    results = []
    for variant in chosen:
        print(f"measuring {args.family} {variant.name} ...", flush=True)
        results.append(measure_variant(args.family, variant, args, photos, tool))
        (args.out / "raw.json").write_text(json.dumps(results, indent=1))
    summary = summarise(results)
    # int8 agreement and speed depend on the CPU's int8 kernels: name the ISA and the format.
    summary.update(isa=host_isa(), int8_format=INT8_FORMAT)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    title = (f"CLIP {args.model} zero-shot (`clip_classify`, gRPC)" if args.family == "clip"
             else f"SAM 2 {args.sam2_config} at {args.sam2_size} px (`sam2_segment`, one click, gRPC)")
    table = markdown(summary, title + f", concurrency {args.concurrency}; "
                     f"whole server = tritonserver + stubs; ISA {summary['isa']}, int8 "
                     f"{INT8_FORMAT}")
    (args.out / "profiles.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
