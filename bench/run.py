"""``tritonlens bench``: the whole benchmark, start to finish, into one results folder.

1. real inputs: scikit-image's sample photos (JPEG, PNG, WebP of different sizes);
2. a CLIP export (or the repository given) with a seeded random-init checkpoint file, so
   the in-process baselines load exactly the served weights; then every other plugin's
   benchmark export (``Plugin.bench_export``; full mode);
3. baselines in this process, before the server starts (no CPU contention): open_clip in
   torch and a raw onnxruntime session per batch size, then the naive path as real
   subprocesses, one per image;
4. a real tritonserver; perf_analyzer over every plugin's scenario whose model is served,
   per protocol, concurrency and (optionally) system shared memory, with CPU and RSS sampled;
5. optional tuning: candidate configs loaded into the running server and measured;
6. ``results.json``, ``report.md`` and PNG plots (see ``report.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from tritonlens.bench import baselines, report, scenarios, tuning
from tritonlens.client.clip.demo import DEMO_LABELS
from tritonlens.client.clip.scenarios import clip_pixels
from tritonlens.client.plugins import load_plugins
from tritonlens.bench.host import describe_host, versions
from tritonlens.bench.monitor import ResourceMonitor
from tritonlens.bench.perf_analyzer import (Measurement, PerfPoint, ensure_perf_analyzer,
                                            run_point, write_input_data)

# The label file of ``tritonlens demo`` (27 labels) and open_clip's 7 "simple" ImageNet
# templates (SIMPLE_IMAGENET_TEMPLATES), used by the export and the naive path alike.
TEMPLATES = ["itap of a {}.", "a bad photo of the {}.", "a origami {}.",
             "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
             "a photo of the small {}."]


@dataclass
class BenchOptions:
    """What to run. ``None`` fields take the mode's default (quick / full) in :meth:`resolved`.

    Attributes:
        quick: the CI smoke mode (< 3 min on 2 cores): ViT-S-32, short windows, few points.
        clip_model: open_clip architecture to export (ViT-S-32 quick, ViT-B-32 full).
        repo: serve this repository (exported into it first if it has no CLIP export);
            None: ``<work>/<clip_model>/model_repository``.
        out: results folder (``results/<timestamp>``).
        work: scratch folder for exports, checkpoints and inputs (kept between runs).
        protocols: ``grpc`` and/or ``http``.
        shared_memory: also run system-shared-memory variants where a scenario allows it.
        concurrency: the sweep for end-to-end models; components run at its ends.
        models: restrict to these Triton model names (None: every served model).
        naive_images: how many images the naive path classifies (one process each).
        batch_sizes: batch sizes of the in-process baselines.
        baseline_seconds: measuring time per baseline batch size (s).
        measurement: perf_analyzer's window and stability settings.
        tune: run the tuning candidates after the sweep.
        tools_dir: where perf_analyzer's own venv lives.
        families: also run these plugins' benchmark exports (``Plugin.bench_export``, e.g.
            sam2: SAM 2.1 hiera-tiny at 512 px) into the repository, so their models are
            measured too (default: every installed plugin in full mode, none in quick mode
            or with ``repo`` given; CLIP is always exported, for the baselines). A
            repository that already holds a family keeps it.
    """

    quick: bool = False
    clip_model: str | None = None
    repo: Path | None = None
    out: Path | None = None
    work: Path = Path("build/bench")
    protocols: list[str] = field(default_factory=lambda: ["grpc", "http"])
    shared_memory: bool = True
    concurrency: list[int] | None = None
    models: list[str] | None = None
    naive_images: int | None = None
    batch_sizes: list[int] | None = None
    baseline_seconds: float | None = None
    measurement: Measurement | None = None
    tune: bool | None = None
    tools_dir: Path = Path(".tools")
    families: list[str] | None = None

    def resolved(self) -> "BenchOptions":
        """A copy with every None replaced by the mode's default."""
        q = self.quick
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return BenchOptions(
            quick=q,
            clip_model=self.clip_model or ("ViT-S-32" if q else "ViT-B-32"),
            repo=self.repo, out=self.out or Path("results") / stamp, work=self.work,
            protocols=list(self.protocols), shared_memory=self.shared_memory,
            concurrency=sorted(set(self.concurrency or ([1, 4] if q else [1, 2, 4, 8]))),
            models=self.models,
            naive_images=self.naive_images if self.naive_images is not None else (1 if q else 3),
            batch_sizes=self.batch_sizes or ([1, 4] if q else [1, 4, 8, 16, 32]),
            baseline_seconds=self.baseline_seconds or (1.0 if q else 5.0),
            measurement=self.measurement or (Measurement(800, 200, 6) if q else Measurement(3000, 30, 6)),
            tune=self.tune if self.tune is not None else not q,
            tools_dir=self.tools_dir,
            families=(list(self.families) if self.families is not None
                      else [] if (q or self.repo) else list(load_plugins())))


def log(message: str) -> None:
    """One progress line on stderr, with the time of day."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- steps ------------------------------------------------------------------------------------
def prepare_clip(options: BenchOptions) -> tuple[Path, dict]:
    """Export CLIP (unless the repository already holds this export); returns the repository
    and what was exported (model, weights, labels, templates)."""
    import open_clip
    import torch

    from tritonlens.client.clip.demo import existing_export
    from tritonlens.export.clip import ClipExportOptions, export_clip
    from tritonlens.export.clip.export import read_lines
    from tritonlens.export.config import parse_config

    model = options.clip_model
    work = options.work / model
    repo = options.repo or work / "model_repository"
    labels = read_lines(DEMO_LABELS, "labels")
    templates = TEMPLATES[:1] if options.quick else TEMPLATES
    if options.repo and (repo / "clip_image_encoder" / "config.pbtxt").exists():
        params = parse_config(repo / "clip_image_encoder" / "config.pbtxt").parameters
        labels = read_lines(repo / "clip_zero_shot" / "labels.txt", "labels")
        return repo, {"model": params["tritonlens.model_name"].string_value,
                      "weights": params["tritonlens.weights"].string_value,
                      "labels": labels, "templates": TEMPLATES,
                      "note": "repository given; the naive path uses the bench's templates"}
    checkpoint = work / f"{model}-seed0.pt"
    if not checkpoint.exists():
        log(f"writing a seeded random-init {model} checkpoint (no pretrained weights offline)")
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(open_clip.create_model(model, pretrained=None).state_dict(), checkpoint)
    if existing_export(repo, model, str(checkpoint)) and (
            (repo / "clip_zero_shot" / "templates.txt").exists()
            and (repo / "clip_zero_shot" / "templates.txt").read_text() == "\n".join(templates)):
        log(f"reusing the export in {repo}")
    else:
        log(f"exporting {model} into {repo}")
        export_clip(ClipExportOptions(model=model, pretrained=str(checkpoint), labels=labels,
                                      templates=templates), repo, report=log)
        (repo / "clip_zero_shot" / "templates.txt").write_text("\n".join(templates))
    return repo, {"model": model, "weights": str(checkpoint), "labels": labels,
                  "templates": templates}


def run_clip_baselines(options: BenchOptions, inputs: scenarios.BenchInputs, export: dict) -> dict:
    """torch and onnxruntime in-process per batch size, then the naive path."""
    cores = usable_cores()
    pixels = clip_pixels(inputs)
    log(f"baseline: onnxruntime in-process, batch sizes {options.batch_sizes}")
    ort_curve = baselines.onnxruntime_encoder(
        inputs.repo / "clip_image_encoder" / "1" / "model.onnx", pixels, options.batch_sizes,
        options.baseline_seconds, cores)
    log(f"baseline: torch in-process, batch sizes {options.batch_sizes}")
    torch_curve = baselines.torch_encoder(export["model"], export["weights"], pixels,
                                          options.batch_sizes, options.baseline_seconds, cores)
    files = options.out / "inputs"
    files.mkdir(parents=True, exist_ok=True)
    labels_file, templates_file = files / "labels.txt", files / "templates.txt"
    labels_file.write_text("\n".join(export["labels"]) + "\n")
    templates_file.write_text("\n".join(export["templates"]) + "\n")
    images = inputs.photos[:options.naive_images]
    log(f"baseline: the naive path, one process per image, {len(images)} image(s)")
    naive = baselines.naive_path(export["model"], export["weights"], labels_file, templates_file,
                                 images, cores)
    return {"onnxruntime": ort_curve.to_dict(), "torch": torch_curve.to_dict(),
            "naive": naive.to_dict()}


def plan_points(scenario: scenarios.Scenario, options: BenchOptions) -> list[PerfPoint]:
    """The measurement points of one scenario (see :class:`BenchOptions`)."""
    sweep = options.concurrency
    ends = sorted({sweep[0], sweep[-1]}) if not options.quick else [sweep[-1]]
    conc = sweep if scenario.end_to_end else ends
    protocols = options.protocols if (scenario.end_to_end or not options.quick) else options.protocols[:1]
    points = [PerfPoint(scenario.model, p, "none", c, sequence_length=scenario.sequence_length)
              for p in protocols for c in conc]
    if options.shared_memory and scenario.shared_memory:
        shm_conc = [sweep[-1]] if options.quick else sweep if scenario.end_to_end else ends
        points += [PerfPoint(scenario.model, options.protocols[0], "system", c,
                             sequence_length=scenario.sequence_length) for c in shm_conc]
    return points


def measure(tool, server, point: PerfPoint, input_data: Path, options: BenchOptions) -> PerfPoint:
    """One perf_analyzer run with the resource monitor around it."""
    measurement = options.measurement
    if point.sequence_length:
        # A window must hold whole sequences of slow (~1 s) frames: short windows give
        # one-request passes and perf_analyzer gives up on them.
        measurement = Measurement(max(measurement.interval_ms, 5000), measurement.stability_percent,
                                  measurement.max_trials)
    with ResourceMonitor(server.process.pid) as monitor:
        run_point(tool, point, server.url(point.protocol), input_data, options.out / "perf_analyzer",
                  measurement, on_start=monitor.watch_client)
    point.resources = monitor.summary()
    status = (f"{point.throughput:8.2f} infer/s  p50 {point.p50_ms:8.1f} ms  p99 {point.p99_ms:8.1f} ms"
              if not point.error else f"FAILED: {point.error}")
    log(f"{point.model:20s} {point.protocol:4s} shm={point.shared_memory:6s} c={point.concurrency:<2d} {status}")
    return point


def run_tuning(tool, server, repo: Path, input_data: Path, options: BenchOptions) -> list[dict]:
    """Measure ``clip_classify`` (first protocol, top concurrency) under each candidate."""
    cores = usable_cores()
    rows = []
    for candidate in tuning.clip_candidates(cores):
        if any(n > cores for n in candidate.threads_per_model(cores).values()):
            log(f"tuning: skipping {candidate.name!r}: more threads than cores")
            continue
        log(f"tuning: {candidate.name}")
        try:
            tuning.load(server.http_url, repo, candidate)
            for conc in options.concurrency[-1:]:
                point = measure(tool, server, PerfPoint("clip_classify", options.protocols[0], "none", conc),
                                input_data, options)
                rows.append({"candidate": candidate.name, "changes": [asdict(c) for c in candidate.changes],
                             **point.to_dict()})
        finally:
            tuning.restore(server.http_url, candidate)
    return rows


def run_bench(options: BenchOptions) -> Path:
    """Run the benchmark per ``options``; returns the results folder.

    Raises:
        PerfAnalyzerError: perf_analyzer cannot be installed or run (never skipped).
        ModelLoadError / ServerStartError: the server or the CLIP models did not come up.
    """
    from tritonlens.client.demo import write_sample_photos
    from tritonlens.serve import TritonServer

    options = options.resolved()
    started = time.time()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    log(f"{'quick' if options.quick else 'full'} benchmark into {out}")
    tool = ensure_perf_analyzer(options.tools_dir, log)
    photos = write_sample_photos(options.work / "photos")
    repo, export = prepare_clip(options)
    plugins = load_plugins()
    unknown = sorted(set(options.families) - set(plugins))
    if unknown:
        raise ValueError(f"no plugin named {', '.join(unknown)}; installed: {', '.join(plugins)}")
    for family in options.families:
        plugins[family].bench_export(repo, log)
    inputs = scenarios.BenchInputs(photos=photos, repo=repo, labels=export["labels"],
                                   templates=export["templates"])
    load_before = psutil.getloadavg()
    baseline_results = run_clip_baselines(options, inputs, export)

    model_dirs = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
    log(f"starting tritonserver on {repo} ({len(model_dirs)} models)")
    points, tuning_rows = [], []
    # No response cache: perf_analyzer repeats its inputs, and the text encoder (whose config
    # enables the cache) would answer them from it instead of encoding them.
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, log_file=out / "tritonserver.log",
                      model_control_mode="explicit", load_models=model_dirs,
                      require_all_models=False, response_cache_bytes=0) as server:
        idle = ResourceMonitor(server.process.pid)
        with idle:
            time.sleep(0.5)
        served = sorted(m["name"] for m in server.repository_index() if m.get("state") == "READY")
        failed = server.model_failures()
        server_version = server.metadata()["version"]
        chosen, uncovered = scenarios.scenarios_for(served, options.models)
        if uncovered:
            log(f"WARNING: served models without a scenario: {', '.join(uncovered)}")
        for scenario in chosen:
            data = write_input_data(out / "inputs" / f"{scenario.model}.json", scenario.build_inputs(inputs))
            for point in plan_points(scenario, options):
                points.append(measure(tool, server, point, data, options))
        if options.tune and "clip_classify" in served:
            tuning_rows = run_tuning(tool, server, repo, out / "inputs" / "clip_classify.json", options)

    results = {
        "meta": {"mode": "quick" if options.quick else "full", "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
                 "duration_s": round(time.time() - started, 1), "command": " ".join(sys.argv),
                 "load_average_before_baselines": [round(x, 2) for x in load_before],
                 "load_average_at_end": [round(x, 2) for x in psutil.getloadavg()]},
        "host": describe_host(),
        "versions": versions(tool.version(), server_version),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "export": {**export, "repository": str(repo)},
        "configs": report.read_configs(repo, served),
        "served": served, "failed_to_load": failed, "uncovered": uncovered,
        "scenarios": [s.model for s in chosen],
        "inputs": {"photos": [p.name for p in photos], "sizes_bytes": [p.stat().st_size for p in photos]},
        "idle": idle.summary(),
        "perf": [p.to_dict() for p in points],
        "baselines": baseline_results,
        "tuning": tuning_rows,
    }
    results["ratios"] = report.ratios(results)
    report.write_all(results, out)
    log(f"done in {results['meta']['duration_s']:.0f} s: {out / 'report.md'}")
    return out
