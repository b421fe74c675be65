"""``tritonlens bench``: the whole benchmark, start to finish, into one results folder.

1. real inputs: scikit-image's sample photos (JPEG, PNG, WebP of different sizes);
2. every benchmarked family's export into the repository (``Plugin.bench_export``; e.g.
   CLIP with a seeded random-init checkpoint file, so its in-process baselines load exactly
   the served weights), unless the repository holds it;
3. the families' in-process baselines, before the server starts (no CPU contention;
   ``Plugin.bench_baselines``);
4. a real tritonserver; perf_analyzer over every plugin's scenario whose model is served,
   per protocol, concurrency and (optionally) system shared memory, with CPU and RSS sampled;
5. optional tuning: each family's candidate configs loaded into the running server and
   measured (``Plugin.bench_tuning``);
6. ``results.json``, ``report.md`` (with each family's ``Plugin.bench_summary``) and PNG
   plots (see ``report.py``).

The benchmark names no family: which ones run is :attr:`BenchOptions.families` (default:
every installed plugin in full mode, the ``bench_quick`` ones in quick mode or with a
repository given).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from tritonlens.bench import report, scenarios
from tritonlens.bench.host import describe_host, versions
from tritonlens.bench.monitor import ResourceMonitor
from tritonlens.bench.perf_analyzer import (Measurement, PerfPoint, ensure_perf_analyzer,
                                            run_point, write_input_data)
from tritonlens.core.plugins import BenchSettings, load_plugins

@dataclass
class BenchOptions:
    """What to run. ``None`` fields take the mode's default (quick / full) in :meth:`resolved`.

    Attributes:
        quick: the CI smoke mode (< 3 min on 2 cores): small models, short windows, few points.
        repo: serve this repository (each benchmarked family exports into it first if it
            lacks that family); None: ``<work>/<quick|full>/model_repository``.
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
        families: also run these plugins' benchmark steps (``Plugin.bench_export`` ... e.g.
            sam2: SAM 2.1 hiera-tiny at 512 px), besides the ``bench_quick`` ones, which
            always run (default: every installed plugin in full mode, none more in quick mode
            or with ``repo`` given). A repository that already holds a family keeps it.
        family_options: the values of the families' ``bench_options`` fields, by name
            (e.g. ``clip_model``); None values keep the family's default.
    """

    quick: bool = False
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
    family_options: dict = field(default_factory=dict)

    def resolved(self) -> "BenchOptions":
        """A copy with every None replaced by the mode's default."""
        q = self.quick
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return BenchOptions(
            quick=q,
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
                      else [] if (q or self.repo) else list(load_plugins())),
            family_options=dict(self.family_options))


def log(message: str) -> None:
    """One progress line on stderr, with the time of day."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def measure(tool, server, point: PerfPoint, input_data: Path, options: BenchOptions,
            min_window_ms: int = 0) -> PerfPoint:
    """One perf_analyzer run with the resource monitor around it; its window at least
    ``min_window_ms`` (the scenario's)."""
    measurement = options.measurement
    if point.sequence_length:
        # A window must hold whole sequences of slow (~1 s) frames: short windows give
        # one-request passes and perf_analyzer gives up on them.
        min_window_ms = max(min_window_ms, 5000)
    if min_window_ms > measurement.interval_ms:
        measurement = Measurement(min_window_ms, measurement.stability_percent, measurement.max_trials)
    with ResourceMonitor(server.process.pid) as monitor:
        run_point(tool, point, server.url(point.protocol), input_data, options.out / "perf_analyzer",
                  measurement, on_start=monitor.watch_client)
    point.resources = monitor.summary()
    status = (f"{point.throughput:8.2f} infer/s  p50 {point.p50_ms:8.1f} ms  p99 {point.p99_ms:8.1f} ms"
              if not point.error else f"FAILED: {point.error}")
    log(f"{point.model:20s} {point.protocol:4s} shm={point.shared_memory:6s} c={point.concurrency:<2d} {status}")
    return point


def run_bench(options: BenchOptions) -> Path:
    """Run the benchmark per ``options``; returns the results folder.

    Raises:
        PerfAnalyzerError: perf_analyzer cannot be installed or run (never skipped).
        ModelLoadError / ServerStartError: the server did not come up.
    """
    from tritonlens.client.demo import write_sample_photos
    from tritonlens.launcher import TritonServer

    options = options.resolved()
    started = time.time()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    log(f"{'quick' if options.quick else 'full'} benchmark into {out}")
    tool = ensure_perf_analyzer(options.tools_dir, log)
    photos = write_sample_photos(options.work / "photos")
    plugins = load_plugins()
    unknown = sorted(set(options.families) - set(plugins))
    if unknown:
        raise ValueError(f"no plugin named {', '.join(unknown)}; installed: {', '.join(plugins)}")
    families = [name for name, plugin in plugins.items()
                if plugin.bench_quick or name in options.families]
    repo = options.repo or options.work / ("quick" if options.quick else "full") / "model_repository"
    settings = BenchSettings(
        quick=options.quick, repo=repo, given_repo=options.repo is not None, work=options.work,
        out=out, batch_sizes=options.batch_sizes, baseline_seconds=options.baseline_seconds,
        naive_images=options.naive_images, concurrency=options.concurrency,
        protocols=options.protocols, options=options.family_options)
    repo.mkdir(parents=True, exist_ok=True)
    exported = {name: plugins[name].bench_export(settings, log) for name in families}
    inputs = scenarios.BenchInputs(photos=photos, repo=repo)
    load_before = psutil.getloadavg()
    baseline_results = {name: plugins[name].bench_baselines(inputs, settings, exported[name], log)
                        for name in families}

    model_dirs = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
    log(f"starting tritonserver on {repo} ({len(model_dirs)} models)")
    points, tuning_rows = [], {}
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, log_file=out / "tritonserver.log",
                      model_control_mode="explicit", load_models=model_dirs,
                      require_all_models=False) as server:
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
                points.append(measure(tool, server, point, data, options, scenario.min_window_ms))

        def measure_model(model: str) -> dict:
            """One point of ``model`` (first protocol, top concurrency) on its scenario's data."""
            point = PerfPoint(model, options.protocols[0], "none", options.concurrency[-1])
            return measure(tool, server, point, out / "inputs" / f"{model}.json", options).to_dict()

        if options.tune:
            tuning_rows = {name: plugins[name].bench_tuning(server, measure_model, settings, log)
                           for name in families}

    results = {
        "meta": {"mode": "quick" if options.quick else "full", "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
                 "duration_s": round(time.time() - started, 1), "command": " ".join(sys.argv),
                 "load_average_before_baselines": [round(x, 2) for x in load_before],
                 "load_average_at_end": [round(x, 2) for x in psutil.getloadavg()]},
        "host": describe_host(),
        "versions": versions(tool.version(), server_version),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "repository": str(repo),
        "families": families,
        "export": {name: e for name, e in exported.items() if e},
        "configs": report.read_configs(repo, served),
        "served": served, "failed_to_load": failed, "uncovered": uncovered,
        "scenarios": [s.model for s in chosen],
        "end_to_end": [s.model for s in chosen if s.end_to_end],
        "inputs": {"photos": [p.name for p in photos], "sizes_bytes": [p.stat().st_size for p in photos]},
        "idle": idle.summary(),
        "perf": [p.to_dict() for p in points],
        "baselines": {name: b for name, b in baseline_results.items() if b},
        "tuning": {name: rows for name, rows in tuning_rows.items() if rows},
    }
    results["ratios"], sections = {}, []
    for name in families:
        ratios, lines = plugins[name].bench_summary(results)
        if ratios:
            results["ratios"][name] = ratios
        sections += lines
    report.write_all(results, out, sections)
    log(f"done in {results['meta']['duration_s']:.0f} s: {out / 'report.md'}")
    return out
