"""CLIP's steps of ``tritonlens bench`` (called through the plugin contract): export with a
seeded random-init checkpoint, so the in-process baselines load exactly the served weights;
the baselines (open_clip in torch and a raw onnxruntime session per batch size, then the naive
path as real subprocesses, one per image); the tuning candidates of ``clip_classify``; and
the headline ratios and report sections.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

from tritonlens.bench import tuning
from tritonlens.bench.clip import baselines
from tritonlens.bench.report import contended_host, table
from tritonlens.client.clip.demo import DEMO_LABELS, existing_export
from tritonlens.client.clip.plugin import ClipBenchOptions
from tritonlens.client.clip.scenarios import clip_pixels
from tritonlens.core.plugins import BenchInputs, BenchSettings
from tritonlens.serve.parameters import MODEL_NAME_PARAMETER, WEIGHTS_PARAMETER
from tritonlens.serve.resources import usable_cores

# The label file of ``tritonlens demo`` (27 labels) and open_clip's 7 "simple" ImageNet
# templates (SIMPLE_IMAGENET_TEMPLATES), used by the export and the naive path alike.
TEMPLATES = ["itap of a {}.", "a bad photo of the {}.", "a origami {}.",
             "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
             "a photo of the small {}."]
# Triton end to end against the in-process engines: what the benchmark calls met.
TARGETS = {"triton_vs_onnxruntime": 0.9, "triton_vs_naive": 100.0}
END_TO_END = "clip_classify"


def export(settings: BenchSettings, options: ClipBenchOptions, report: Callable[[str], None]) -> dict:
    """Export CLIP into ``settings.repo`` (unless it already holds this export); returns what
    was exported (model, weights, labels, templates, and the plot title)."""
    import open_clip
    import torch

    from tritonlens.export.clip import ClipExportOptions, export_clip
    from tritonlens.export.clip.export import read_lines
    from tritonlens.export.config import parse_config

    model = options.clip_model or ("ViT-S-32" if settings.quick else "ViT-B-32")
    repo, work = settings.repo, settings.work / model
    labels = read_lines(DEMO_LABELS, "labels")
    templates = TEMPLATES[:1] if settings.quick else TEMPLATES
    if settings.given_repo and (repo / "clip_image_encoder" / "config.pbtxt").exists():
        params = parse_config(repo / "clip_image_encoder" / "config.pbtxt").parameters
        model = params[MODEL_NAME_PARAMETER].string_value
        return {"model": model, "title": f"CLIP {model}",
                "weights": params[WEIGHTS_PARAMETER].string_value,
                "labels": read_lines(repo / "clip_zero_shot" / "labels.txt", "labels"),
                "templates": TEMPLATES,
                "note": "repository given; the naive path uses the bench's templates"}
    checkpoint = work / f"{model}-seed0.pt"
    if not checkpoint.exists():
        report(f"writing a seeded random-init {model} checkpoint (no pretrained weights offline)")
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(open_clip.create_model(model, pretrained=None).state_dict(), checkpoint)
    templates_file = repo / "clip_zero_shot" / "templates.txt"
    if (existing_export(repo, model, str(checkpoint)) and templates_file.exists()
            and templates_file.read_text() == "\n".join(templates)):
        report(f"reusing the export in {repo}")
    else:
        report(f"exporting {model} into {repo}")
        export_clip(ClipExportOptions(model=model, pretrained=str(checkpoint), labels=labels,
                                      templates=templates), repo, report=report)
        templates_file.write_text("\n".join(templates))
    return {"model": model, "title": f"CLIP {model}", "weights": str(checkpoint),
            "labels": labels, "templates": templates}


def run_baselines(inputs: BenchInputs, settings: BenchSettings, exported: dict,
                  report: Callable[[str], None]) -> dict:
    """torch and onnxruntime in-process per batch size, then the naive path."""
    cores = usable_cores()
    pixels = clip_pixels(inputs)
    report(f"baseline: onnxruntime in-process, batch sizes {settings.batch_sizes}")
    ort_curve = baselines.onnxruntime_encoder(
        inputs.repo / "clip_image_encoder" / "1" / "model.onnx", pixels, settings.batch_sizes,
        settings.baseline_seconds, cores)
    report(f"baseline: torch in-process, batch sizes {settings.batch_sizes}")
    torch_curve = baselines.torch_encoder(exported["model"], exported["weights"], pixels,
                                          settings.batch_sizes, settings.baseline_seconds, cores)
    files = settings.out / "inputs"
    files.mkdir(parents=True, exist_ok=True)
    labels_file, templates_file = files / "labels.txt", files / "templates.txt"
    labels_file.write_text("\n".join(exported["labels"]) + "\n")
    templates_file.write_text("\n".join(exported["templates"]) + "\n")
    images = inputs.photos[:settings.naive_images]
    report(f"baseline: the naive path, one process per image, {len(images)} image(s)")
    naive = baselines.naive_path(exported["model"], exported["weights"], labels_file, templates_file,
                                 images, cores)
    return {"onnxruntime": ort_curve.to_dict(), "torch": torch_curve.to_dict(),
            "naive": naive.to_dict()}


def candidates(cores: int) -> list[tuning.Candidate]:
    """The CLIP settings compared on this host (``cores`` = usable cores)."""
    Candidate, Change = tuning.Candidate, tuning.Change
    enc = "clip_image_encoder"
    return [
        Candidate("exported defaults"),
        Candidate("encoder: no queue delay", (Change(enc, max_queue_delay_us=0),)),
        Candidate("encoder: 20 ms delay, preferred 4/8",
                  (Change(enc, max_queue_delay_us=20000, preferred_batch_sizes=(4, 8)),)),
        Candidate(f"encoder: 1 instance x {cores} threads",
                  (Change(enc, instance_count=1, intra_op_threads=cores),)),
        Candidate(f"encoder: {cores} instances x 1 thread",
                  (Change(enc, instance_count=cores, intra_op_threads=1),)),
        Candidate("preprocess: 1 instance", (Change("clip_preprocess", instance_count=1),)),
    ]


def run_tuning(server, measure: Callable[[str], dict], settings: BenchSettings,
               report: Callable[[str], None]) -> list[dict]:
    """Measure ``clip_classify`` (first protocol, top concurrency) under each candidate."""
    cores = usable_cores()
    rows = []
    for candidate in candidates(cores):
        if any(n > cores for n in candidate.threads_per_model(cores).values()):
            report(f"tuning: skipping {candidate.name!r}: more threads than cores")
            continue
        report(f"tuning: {candidate.name}")
        try:
            tuning.load(server.http_url, settings.repo, candidate)
            rows.append({"candidate": candidate.name,
                         "changes": [asdict(c) for c in candidate.changes], **measure(END_TO_END)})
        finally:
            tuning.restore(server.http_url, candidate)
    return rows


def _ok(points: list[dict], model: str) -> list[dict]:
    return [p for p in points if p["model"] == model and not p["error"] and p["throughput"] > 0]


def ratios(perf: list[dict], base: dict) -> dict:
    """The headline figures: Triton end-to-end against each baseline (see :data:`TARGETS`);
    ``reference`` is the line the throughput plot draws."""
    e2e = _ok(perf, END_TO_END)
    if not e2e or not base:
        return {}
    best = max(e2e, key=lambda p: p["throughput"])
    out = {
        "triton_end_to_end": {"model": END_TO_END, "images_per_s": best["throughput"],
                              "protocol": best["protocol"], "shared_memory": best["shared_memory"],
                              "concurrency": best["concurrency"]},
        "onnxruntime_in_process": {"images_per_s": base["onnxruntime"]["best_images_per_s"],
                                   "batch": base["onnxruntime"]["best_batch"]},
        "torch_in_process": {"images_per_s": base["torch"]["best_images_per_s"],
                             "batch": base["torch"]["best_batch"]},
        "naive": {"images_per_s": base["naive"]["images_per_s"]},
        "reference": {"label": f"onnxruntime in-process (batch {base['onnxruntime']['best_batch']})",
                      "images_per_s": base["onnxruntime"]["best_images_per_s"]},
    }
    out["triton_vs_onnxruntime"] = best["throughput"] / base["onnxruntime"]["best_images_per_s"]
    out["triton_vs_torch"] = best["throughput"] / base["torch"]["best_images_per_s"]
    out["triton_vs_naive"] = best["throughput"] / base["naive"]["images_per_s"]
    encoder = _ok(perf, "clip_image_encoder")
    if encoder:
        out["triton_encoder_vs_onnxruntime"] = (max(p["throughput"] for p in encoder)
                                                / base["onnxruntime"]["best_images_per_s"])
    preprocess = _ok(perf, "clip_preprocess")
    if preprocess:
        out["preprocess_images_per_s"] = max(p["throughput"] for p in preprocess)
    return out


def summary(results: dict) -> tuple[dict, list[str]]:
    """CLIP's headline ratios and its sections of ``report.md``: against the targets, the
    in-process baselines, the tuning candidates."""
    exported = results["export"].get("clip", {})
    base = results["baselines"].get("clip", {})
    r = ratios(results["perf"], base)
    contended = contended_host(results)

    def met(ok: bool) -> str:
        return ("yes" if ok else "**no**") + (" (contended host: not established)" if contended else "")

    lines = []
    if exported:
        lines += [f"CLIP weights: {exported['weights']} (seeded random init: throughput is what this "
                  f"measures; predictions are not real). {len(exported['labels'])} labels x "
                  f"{len(exported['templates'])} prompt templates.", ""]
    if r:
        e2e = r["triton_end_to_end"]
        lines += ["## Against the targets", "",
                  table(["measure", "images/s", "ratio (Triton e2e / it)", "target", "met"], [
                      [f"Triton end-to-end `{e2e['model']}` (image bytes in, probabilities out; "
                       f"{e2e['protocol']}, shm {e2e['shared_memory']}, concurrency {e2e['concurrency']})",
                       f"{e2e['images_per_s']:.2f}", "1", "", ""],
                      [f"onnxruntime in-process, image encoder only, batch {r['onnxruntime_in_process']['batch']}",
                       f"{r['onnxruntime_in_process']['images_per_s']:.2f}", f"{r['triton_vs_onnxruntime']:.2f}x",
                       ">= 0.9x", met(r["triton_vs_onnxruntime"] >= TARGETS["triton_vs_onnxruntime"])],
                      [f"torch (open_clip) in-process, image encoder only, batch {r['torch_in_process']['batch']}",
                       f"{r['torch_in_process']['images_per_s']:.2f}", f"{r['triton_vs_torch']:.2f}x", "", ""],
                      ["naive path (one process per image: load, encode labels, classify)",
                       f"{r['naive']['images_per_s']:.4f}", f"{r['triton_vs_naive']:.0f}x", ">= 100x",
                       met(r["triton_vs_naive"] >= TARGETS["triton_vs_naive"])],
                  ]), ""]
        if "triton_encoder_vs_onnxruntime" in r:
            lines += [f"The served image encoder alone (`clip_image_encoder`, preprocessed pixels in) "
                      f"reaches {r['triton_encoder_vs_onnxruntime']:.2f}x the raw onnxruntime session; "
                      f"`clip_preprocess` alone (decode + resize + crop of the photo files) reaches "
                      f"{r.get('preprocess_images_per_s', 0):.1f} images/s. The end-to-end path pays "
                      "for both on the same cores, plus perf_analyzer's own CPU "
                      "(client CPU column), which the encoder-only baselines do not.", ""]
    if base:
        sizes = sorted({int(b) for c in ("onnxruntime", "torch") for b in base[c]["images_per_s"]})
        lines += ["## In-process baselines (same photos, same weights, fp32)", "",
                  table(["engine", "threads", *[f"batch {b}" for b in sizes], "best"],
                        [[base[c]["engine"], base[c]["threads"],
                          *[f"{base[c]['images_per_s'].get(b, base[c]['images_per_s'].get(str(b), 0)):.2f}" for b in sizes],
                          f"{base[c]['best_images_per_s']:.2f} (batch {base[c]['best_batch']})"]
                         for c in ("onnxruntime", "torch")]), "",
                  f"Naive path: {len(base['naive']['seconds_per_image'])} image(s), "
                  f"{base['naive']['mean_seconds_per_image']:.1f} s per image (process start to exit), "
                  f"peak RSS {max(base['naive']['peak_rss_mb']):.0f} MB per process; "
                  f"= {base['naive']['images_per_s']:.4f} images/s.", ""]
    rows = results.get("tuning", {}).get("clip")
    if rows:
        lines += [f"## Tuning candidates (`{END_TO_END}`, loaded as config overrides)", "",
                  table(["candidate", "protocol", "conc.", "infer/s", "p50 ms", "p99 ms", "server CPU"],
                        [[t["candidate"], t["protocol"], t["concurrency"],
                          f"{t['throughput']:.2f}" if not t["error"] else "FAILED",
                          f"{t['p50_ms']:.1f}", f"{t['p99_ms']:.1f}",
                          f"{t['resources'].get('server_cpu_cores', 0):.2f}"] for t in rows]), ""]
    return r, lines
