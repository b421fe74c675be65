"""CLIP classify end to end against the raw encoder, where each core-millisecond goes, and
the default server's memory, side by side in one run.

    python -m tritonlens.bench.clip.path [--model ViT-B-32] [--repo DIR | --keep DIR]
                                         [--images 128] [--concurrency 4] [--perf-analyzer]
                                         [--large-photos 16]

Exports ``--model`` in the default profile (random weights, seeded; or serves ``--repo`` as
it is), then prints, with the load average beside every figure:

1. **Raw encoder**: a raw onnxruntime session on the exported ``clip_image_encoder``
   ONNX file, in this process, at batch sizes 1-32 with the host's cores as threads (the
   best batch is the reference), on pixels already decoded and resized.
2. **In-process pre-processing**: decode + open_clip's transform
   (``tritonlens.serve.clip.preprocess``, what the stub runs) per photo, in ms.
3. **Served classify**: ``clip_classify`` (photo bytes in, probabilities out) with
   ``ClipClient.probabilities`` (``--images`` photos per round, ``--concurrency`` requests
   in flight; photos per request: the raw encoder's best batch, then the server's max batch
   size) and, with ``--perf-analyzer``, with perf_analyzer (one photo per request,
   ``--pa-concurrency`` in flight). Per composing model, Triton's queue and compute ms and
   its batch sizes.
4. **Where the CPU goes**: core-milliseconds per photo of tritonserver, every stub (summed
   over instances) and the client, from their CPU times over the best Python-client round.
   On a CPU host every process shares the same cores, so the served rate is about
   cores / (total core-ms per photo), and ``raw core-ms / (raw core-ms + preprocessing
   core-ms)`` bounds the ratio any server can reach while it decodes and resizes with
   exact parity: the **ceiling** printed.
5. **Memory**: PSS of tritonserver and every stub (idle after load and one warm-up of each
   ensemble, and again after the measurements), summed (``bench.profiles.tree_memory``).
6. With ``--large-photos N`` (only on a repository this run exported): N photos upscaled
   to 12 MP (4032 x 3024 JPEG, a phone camera's size), classified with exact decoding and
   again with ``jpeg_draft`` switched on in ``clip_preprocess``'s config (server restarted).

:func:`measure` returns every figure as a :class:`ClipPathResult`
(``bench.targets`` prints it beside the tracking and memory targets).
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from tritonlens.bench.monitor import load_average, model_stats, process_label, stats_delta
from tritonlens.bench.studies.profiles import tree_memory
from tritonlens.export.onnx_variants import host_isa

COMPOSING = ("clip_preprocess", "clip_image_encoder", "clip_zero_shot")
LARGE_SIZE = (4032, 3024)  # 12 MP, a phone camera's photo
LARGE_REQUEST = 4  # 12 MP photos per request


@dataclass
class ClipPathResult:
    """Every figure of one :func:`measure` run (rates in photos/s, CPU in core-ms per photo,
    memory in MB of PSS; ``loads`` holds the load average after each step)."""

    isa: str
    cores: int
    raw_curve: dict[int, float]
    preprocess_ms: dict[str, float]
    served: dict[str, list[float]] = field(default_factory=dict)
    perf_analyzer: float | None = None
    perf_analyzer_concurrency: int = 0
    cpu_ms: dict[str, float] = field(default_factory=dict)
    busy_cores: float = 0.0
    pss_idle_mb: float = 0.0
    pss_loaded_mb: float = 0.0
    large: dict[str, float] = field(default_factory=dict)
    loads: dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> float:
        return max(self.raw_curve.values())

    @property
    def raw_batch(self) -> int:
        return max(self.raw_curve, key=self.raw_curve.get)

    @property
    def raw_core_ms(self) -> float:
        """Core-ms per photo of the raw encoder at its best batch (all cores busy)."""
        return self.cores * 1e3 / self.raw

    @property
    def best_served(self) -> float:
        return max(max(rates) for rates in self.served.values())

    @property
    def ceiling(self) -> float:
        """raw core-ms / (raw core-ms + the served preprocessing's core-ms), see the module
        docstring; 1.0 before a served round ran."""
        pre = self.cpu_ms.get("stub:clip_preprocess", 0.0)
        return self.raw_core_ms / (self.raw_core_ms + pre)


def print_stats(before: dict, after: dict, images: int) -> None:
    """One table row per model of what Triton did between two :func:`model_stats` snapshots:
    queue ms per request, compute ms per image (``images`` photos went through)."""
    print("| model | requests | executions | queue ms/request | input ms/img | infer ms/img | "
          "output ms/img | batch sizes |\n|---|---|---|---|---|---|---|---|")
    for name, d in stats_delta(after, before).items():
        per = lambda k: d[k] / max(1, images) / 1e6  # noqa: E731
        queue = d["queue_ns"] / max(1, d["requests"]) / 1e6
        print(f"| {name} | {d['requests']} | {d['executions']} | {queue:.1f} | "
              f"{per('compute_input_ns'):.2f} | {per('compute_infer_ns'):.1f} | "
              f"{per('compute_output_ns'):.2f} | {d['batches']} |")


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of tritonserver, every stub (summed per model) and
    this process (``client``)."""
    root = psutil.Process(server_pid)
    out: dict[str, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            label = process_label(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[label] = out.get(label, 0.0) + times.user + times.system
    own = psutil.Process().cpu_times()
    out["client"] = own.user + own.system
    return out


def large_photos(photos: list[Path], count: int) -> list[bytes]:
    """``count`` 12 MP JPEGs (quality 90): the sample photos upscaled, repeated in turn."""
    distinct = []
    for path in photos[:count]:
        with Image.open(path) as image:
            buffer = io.BytesIO()
            image.convert("RGB").resize(LARGE_SIZE, Image.BICUBIC).save(buffer, "JPEG", quality=90)
        distinct.append(buffer.getvalue())
    return [distinct[i % len(distinct)] for i in range(count)]


def set_jpeg_draft(repo: Path, on: bool) -> None:
    """Rewrite ``clip_preprocess``'s ``jpeg_draft`` parameter (takes effect on restart)."""
    from google.protobuf import text_format

    from tritonlens.export.config import parse_config
    from tritonlens.serve.clip import names

    path = repo / "clip_preprocess" / "config.pbtxt"
    config = parse_config(path)
    config.parameters[names.JPEG_DRAFT].string_value = "true" if on else "false"
    path.write_text(text_format.MessageToString(config))


def measure(repo: Path, workdir: Path, *, images: int = 128, rounds: int = 2,
            concurrency: int = 4, batch_sizes: list[int] | None = None,
            pa_concurrency: int | None = None, large: int = 0) -> ClipPathResult:
    """Run steps 1-6 of the module docstring on ``repo`` (a default-profile CLIP export),
    printing as it goes. ``batch_sizes``: photos per Python-client request, each measured
    ``rounds`` times (0: the server's max batch size; None: the raw encoder's best batch,
    then 0). ``pa_concurrency``: run perf_analyzer at this concurrency (None: skip).
    ``large``: step 6 with that many photos (0: skip; it edits ``repo``'s config).
    """
    from tritonlens.bench.clip.baselines import onnxruntime_encoder
    from tritonlens.client.clip import ClipClient
    from tritonlens.client.demo import write_sample_photos
    from tritonlens.export.config import parse_config
    from tritonlens.launcher import TritonServer
    from tritonlens.serve.clip import names
    from tritonlens.serve.clip.preprocess import FILTERS, ClipPreprocess, clip_transform
    from tritonlens.serve.images import decode
    from tritonlens.serve.resources import usable_cores

    cores = usable_cores()
    print(f"ISA: {host_isa()}; usable cores {cores}; load {load_average()}")
    photos = write_sample_photos(workdir / "photos")
    data = [p.read_bytes() for p in photos]
    params = parse_config(repo / "clip_preprocess" / "config.pbtxt").parameters
    preprocess = ClipPreprocess(size=int(params[names.IMAGE_SIZE].string_value),
                                resize_mode=params[names.RESIZE_MODE].string_value,
                                interpolation=params[names.INTERPOLATION].string_value)
    pixels, decode_ms, transform_ms = [], [], []
    for blob in data:
        t0 = time.perf_counter()
        image = decode(blob, preprocess.max_bytes, preprocess.max_pixels, False, preprocess.max_aspect_ratio)
        t1 = time.perf_counter()
        pixels.append(clip_transform(image, preprocess.size, preprocess.resize_mode,
                                     FILTERS[preprocess.interpolation]))
        t2 = time.perf_counter()
        decode_ms.append((t1 - t0) * 1e3)
        transform_ms.append((t2 - t1) * 1e3)
    print(f"photos: {len(photos)} ({', '.join(p.name for p in photos)}); decode "
          f"{np.mean(decode_ms):.1f} ms, resize+crop {np.mean(transform_ms):.1f} ms per photo "
          f"(in-process, one core); load {load_average()}")
    curve = onnxruntime_encoder(repo / "clip_image_encoder" / "1" / "model.onnx", pixels,
                                [1, 4, 8, 16, 32], 6.0, cores)
    result = ClipPathResult(host_isa(), cores, dict(curve.images_per_s),
                            {"decode": float(np.mean(decode_ms)),
                             "transform": float(np.mean(transform_ms))})
    del curve
    raw = result.raw
    result.loads["raw"] = load_average()
    print(f"raw onnxruntime encoder, {cores} threads: "
          + ", ".join(f"b{b} {v:.1f}" for b, v in result.raw_curve.items())
          + f" img/s; best {raw:.1f} at batch {result.raw_batch} "
            f"({result.raw_core_ms:.0f} core-ms per photo); load {result.loads['raw']}")
    if batch_sizes is None:
        batch_sizes = [result.raw_batch, 0]

    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=workdir / "server.log") as server:
        client = ClipClient(server.grpc_url, "grpc")
        client.probabilities(data)
        if (repo / "clip_embed_text").is_dir():
            client.embed_texts(["a photo of a cat"])
        time.sleep(2)
        memory = tree_memory(server.process.pid)
        result.pss_idle_mb = memory["pss_mb"]
        print(f"\nidle PSS of the server: {memory['pss_mb']:.0f} MB "
              f"(RSS {memory['rss_mb']:.0f} MB); load {load_average()}")
        for row in sorted(memory["processes"], key=lambda r: -r["pss_mb"]):
            print(f"  {row['process']:32s} PSS {row['pss_mb']:7.1f} MB")
        models = [m for m in COMPOSING if (repo / m).is_dir()]
        batch = [data[i % len(data)] for i in range(images)]
        best_rate = 0.0
        for chunk in batch_sizes:
            key = f"{chunk or 'max batch size'} photos per request"
            before = model_stats(client, models)
            for _ in range(rounds):
                cpu0, t0 = cpu_seconds(server.process.pid), time.perf_counter()
                client.probabilities(batch, concurrency=concurrency, batch_size=chunk or None)
                elapsed = time.perf_counter() - t0
                cpu1 = cpu_seconds(server.process.pid)
                rate = len(batch) / elapsed
                result.served.setdefault(key, []).append(rate)
                if rate > best_rate:
                    best_rate = rate
                    result.cpu_ms = {k: (cpu1[k] - cpu0.get(k, 0.0)) / len(batch) * 1e3
                                     for k in cpu1}
                    result.busy_cores = sum(cpu1[k] - cpu0.get(k, 0.0) for k in cpu1) / elapsed
                print(f"clip_classify, Python client ({concurrency} in flight, {key}): "
                      f"{rate:.1f} img/s = {rate / raw:.2f}x the raw encoder; "
                      f"load {load_average()}")
            print_stats(before, model_stats(client, models), len(batch) * rounds)
        result.loads["python client"] = load_average()
        print(f"\nwhere the CPU goes (best Python-client round, {result.busy_cores:.2f} of "
              f"{cores} cores busy): core-ms per photo\n| process | core-ms/photo | share |"
              "\n|---|---|---|")
        total = sum(result.cpu_ms.values())
        for label, ms in sorted(result.cpu_ms.items(), key=lambda kv: -kv[1]):
            print(f"| {label} | {ms:.1f} | {ms / total:.1%} |")
        print(f"| total | {total:.1f} | raw encoder: {result.raw_core_ms:.1f} |")
        print(f"ceiling with exact decoding: {result.raw_core_ms:.0f} / ({result.raw_core_ms:.0f} "
              f"+ {result.cpu_ms.get('stub:clip_preprocess', 0):.1f}) = {result.ceiling:.2f}x; "
              f"served best {best_rate / raw:.2f}x")

        if pa_concurrency:
            from tritonlens.bench.perf_analyzer import (Measurement, PerfPoint,
                                                        ensure_perf_analyzer, run_point,
                                                        write_input_data)

            tool = ensure_perf_analyzer()
            inputs = write_input_data(workdir / "inputs.json", [[{"image": [b]} for b in data]])
            before = model_stats(client, models)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            point = run_point(tool, PerfPoint("clip_classify", "grpc", "none", pa_concurrency),
                              server.grpc_url.split("//")[-1], inputs, workdir / "pa",
                              Measurement(5000, 25, 6))
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            after = model_stats(client, models)
            done = after["clip_preprocess"]["requests"] - before["clip_preprocess"]["requests"]
            cpu = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
            result.perf_analyzer, result.perf_analyzer_concurrency = point.throughput, pa_concurrency
            result.loads["perf_analyzer"] = load_average()
            print(f"\nclip_classify, perf_analyzer (concurrency {pa_concurrency}, one "
                  f"photo per request): {point.throughput:.1f} img/s = "
                  f"{point.throughput / raw:.2f}x the raw encoder; p50 {point.p50_ms:.0f} ms; "
                  f"perf_analyzer CPU {cpu / max(1, done) * 1e3:.1f} ms/img "
                  f"{point.error or ''}; load {result.loads['perf_analyzer']}")
            print_stats(before, after, done)
        result.pss_loaded_mb = tree_memory(server.process.pid)["pss_mb"]

    if large:
        blobs = large_photos(photos, large)
        for draft in (False, True):
            set_jpeg_draft(repo, draft)
            with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                              log_file=workdir / "server-large.log") as server:
                client = ClipClient(server.grpc_url, "grpc")
                client.probabilities(blobs[:2])
                t0 = time.perf_counter()
                # small requests, so preprocessing and the encoder overlap as with small photos
                client.probabilities(blobs, concurrency=concurrency, batch_size=LARGE_REQUEST)
                rate = len(blobs) / (time.perf_counter() - t0)
            key = "draft" if draft else "exact"
            result.large[key] = rate
            print(f"\n{len(blobs)} photos of {LARGE_SIZE[0]}x{LARGE_SIZE[1]} (JPEG), jpeg_draft "
                  f"{'on' if draft else 'off'}: {rate:.1f} img/s = {rate / raw:.2f}x the raw "
                  f"encoder; load {load_average()}")
        set_jpeg_draft(repo, False)
    print(f"\nsummary: raw {raw:.1f} img/s; served (Python client) best "
          f"{result.best_served:.1f} img/s = {result.best_served / raw:.2f}x (ceiling "
          f"{result.ceiling:.2f}x); PSS idle {result.pss_idle_mb:.0f} MB, after the load "
          f"{result.pss_loaded_mb:.0f} MB; load {load_average()}")
    return result


def export_default(repo: Path, model: str = "ViT-B-32") -> None:
    """Export ``model`` (random weights, seed 0) in the default profile with six labels."""
    from tritonlens.export.clip import ClipExportOptions, export_clip

    export_clip(ClipExportOptions(model=model, labels=[
        "cat", "dog", "cup of coffee", "astronaut", "rocket", "galaxy"]), repo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repo", type=Path, help="serve this repository (no export)")
    parser.add_argument("--keep", type=Path, help="export into this folder and keep it")
    parser.add_argument("--images", type=int, default=128, help="photos per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-sizes", default=None,
                        help="photos per client request, comma-separated, each measured "
                             "--rounds times (0: the server's max batch size; default: the "
                             "raw encoder's best batch, then 0)")
    parser.add_argument("--pa-concurrency", type=int, default=16,
                        help="perf_analyzer's concurrency (with --perf-analyzer)")
    parser.add_argument("--perf-analyzer", action="store_true")
    parser.add_argument("--large-photos", type=int, default=0, metavar="N",
                        help="also classify this many 12 MP JPEGs, exact and jpeg_draft "
                             "(not with --repo: it edits the repository's config)")
    args = parser.parse_args()
    if args.repo and args.large_photos:
        parser.error("--large-photos edits clip_preprocess' config: use it without --repo")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = args.repo
        if repo is None:
            repo = args.keep or tmp / "repo"
            export_default(repo, args.model)
        measure(repo, tmp, images=args.images, rounds=args.rounds,
                concurrency=args.concurrency,
                batch_sizes=None if args.batch_sizes is None
                else [int(b) for b in args.batch_sizes.split(",")],
                pa_concurrency=args.pa_concurrency if args.perf_analyzer else None,
                large=args.large_photos)


if __name__ == "__main__":
    main()
