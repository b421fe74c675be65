"""CLIP classify end to end against the raw encoder, where the milliseconds go, and the
default server's memory, side by side in one run.

    python -m tritonlens.bench.clip_path [--model ViT-B-32] [--repo DIR | --keep DIR]
                                         [--images 64] [--concurrency 4] [--perf-analyzer]

Exports ``--model`` in the default profile (random weights, seeded; or serves ``--repo`` as
it is), then prints, with the load average beside every figure:

1. **Raw encoder**: a raw onnxruntime session on the exported ``clip_image_encoder``
   ONNX file, in this process, at batch sizes 1-32 with the host's cores as threads (the
   best batch is the reference), on pixels already decoded and resized.
2. **In-process pre-processing**: decode + open_clip's transform
   (``tritonlens.serve.clip_preprocess``, what the stub runs) per photo, in ms.
3. **Served classify**: ``clip_classify`` (photo bytes in, probabilities out) with
   ``ClipClient.probabilities`` (``--images`` photos per round, ``--concurrency`` requests
   in flight, the server's max batch size per request) and, with ``--perf-analyzer``, with
   perf_analyzer at the same concurrency (one photo per request); the client's own CPU
   seconds per image; per composing model, Triton's queue and compute ms per request and
   its batch sizes.
4. **Memory**: PSS of tritonserver and every stub (idle after load and one warm-up of each
   ensemble, and again after the measurements), summed (``bench.profiles.tree_memory``).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from tritonlens.bench.profiles import tree_memory
from tritonlens.bench.streams import isa, load_average


def model_stats(client, models: list[str]) -> dict[str, dict]:
    out = {}
    for name in models:
        rows = client.connection.get_inference_statistics(name, as_json=True)["model_stats"]
        if not rows:
            continue
        infer = rows[0].get("inference_stats", {})
        batch_stats = rows[0].get("batch_stats", [])
        out[name] = {"requests": int(infer.get("success", {}).get("count", 0)),
                     "executions": int(rows[0].get("execution_count", 0)),
                     "queue": int(infer.get("queue", {}).get("ns", 0)),
                     # per execution (a batch counted once), not per request
                     **{k: sum(int(b.get(k, {}).get("ns", 0)) for b in batch_stats)
                        for k in ("compute_input", "compute_infer", "compute_output")},
                     "batches": {int(b["batch_size"]): int(b["compute_infer"]["count"])
                                 for b in batch_stats}}
    return out


def print_stats(before: dict, after: dict, images: int) -> None:
    print("| model | requests | executions | queue ms/request | input ms/img | infer ms/img | "
          "output ms/img | batch sizes |\n|---|---|---|---|---|---|---|---|")
    for name, a in after.items():
        b = before.get(name, {})
        d = {k: a[k] - b.get(k, 0) for k in ("requests", "executions", "queue", "compute_input",
                                              "compute_infer", "compute_output")}
        batches = {k: v - b.get("batches", {}).get(k, 0) for k, v in a["batches"].items()}
        per = lambda k: d[k] / max(1, images) / 1e6  # noqa: E731
        queue = d["queue"] / max(1, d["requests"]) / 1e6
        print(f"| {name} | {d['requests']} | {d['executions']} | {queue:.1f} | "
              f"{per('compute_input'):.2f} | {per('compute_infer'):.1f} | "
              f"{per('compute_output'):.2f} | {dict(sorted(b for b in batches.items() if b[1]))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repo", type=Path, help="serve this repository (no export)")
    parser.add_argument("--keep", type=Path, help="export into this folder and keep it")
    parser.add_argument("--images", type=int, default=128, help="photos per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-sizes", default="0",
                        help="photos per client request, comma-separated, each measured "
                             "--rounds times (0: the server's max batch size)")
    parser.add_argument("--pa-concurrency", type=int, default=None,
                        help="perf_analyzer's concurrency (default: --concurrency)")
    parser.add_argument("--perf-analyzer", action="store_true")
    args = parser.parse_args()

    from tritonlens.bench.baselines import onnxruntime_encoder
    from tritonlens.client.clip import ClipClient
    from tritonlens.client.demo import write_sample_photos
    from tritonlens.serve import TritonServer
    from tritonlens.serve.clip_preprocess import clip_transform
    from tritonlens.serve.images import decode
    from tritonlens.serve.resources import usable_cores

    cores = usable_cores()
    print(f"ISA: {isa()}; usable cores {cores}; load {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = args.repo
        if repo is None:
            from tritonlens.export.clip import ClipExportOptions, export_clip

            repo = args.keep or tmp / "repo"
            export_clip(ClipExportOptions(model=args.model, labels=[
                "cat", "dog", "cup of coffee", "astronaut", "rocket", "galaxy"]), repo)
        photos = write_sample_photos(tmp / "photos")
        data = [p.read_bytes() for p in photos]
        config = mc.ModelConfig()
        text_format.Parse((repo / "clip_preprocess" / "config.pbtxt").read_text(), config)
        size = int(config.parameters["image_size"].string_value)
        pixels, decode_ms, transform_ms = [], [], []
        for blob in data:
            t0 = time.perf_counter()
            image = decode(blob, 64 << 20, 50_000_000, False, 100.0)
            image.load()
            t1 = time.perf_counter()
            pixels.append(clip_transform(image, size, "shortest", Image.BICUBIC))
            t2 = time.perf_counter()
            decode_ms.append((t1 - t0) * 1e3)
            transform_ms.append((t2 - t1) * 1e3)
        print(f"photos: {len(photos)} ({', '.join(p.name for p in photos)}); decode "
              f"{np.mean(decode_ms):.1f} ms, resize+crop {np.mean(transform_ms):.1f} ms per photo "
              f"(in-process, one core); load {load_average()}")
        curve = onnxruntime_encoder(repo / "clip_image_encoder" / "1" / "model.onnx", pixels,
                                    [1, 4, 8, 16, 32], 6.0, cores)
        raw = curve.best
        print(f"raw onnxruntime encoder, {cores} threads: "
              + ", ".join(f"b{b} {v:.1f}" for b, v in curve.images_per_s.items())
              + f" img/s; best {raw:.1f} at batch {curve.best_batch}; load {load_average()}")
        del curve

        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                          log_file=tmp / "server.log") as server:
            client = ClipClient(server.grpc_url, "grpc")
            client.probabilities(data)
            client.embed_texts(["a photo of a cat"])
            time.sleep(2)
            memory = tree_memory(server.process.pid)
            print(f"\nidle PSS of the server: {memory['pss_mb']:.0f} MB "
                  f"(RSS {memory['rss_mb']:.0f} MB); load {load_average()}")
            for row in sorted(memory["processes"], key=lambda r: -r["pss_mb"]):
                print(f"  {row['process']:32s} PSS {row['pss_mb']:7.1f} MB")
            models = [m for m in ("clip_preprocess", "clip_image_encoder", "clip_zero_shot")
                      if (repo / m).is_dir()]
            batch = [data[i % len(data)] for i in range(args.images)]
            served = []
            for chunk in [int(b) or None for b in args.batch_sizes.split(",")]:
                for _ in range(args.rounds):
                    before = model_stats(client, models)
                    cpu0, t0 = sum(psutil.Process().cpu_times()[:2]), time.perf_counter()
                    client.probabilities(batch, concurrency=args.concurrency, batch_size=chunk)
                    elapsed = time.perf_counter() - t0
                    cpu = sum(psutil.Process().cpu_times()[:2]) - cpu0
                    served.append(len(batch) / elapsed)
                    print(f"clip_classify, Python client ({args.concurrency} in flight, "
                          f"{chunk or 'max batch size'} photos per request): "
                          f"{served[-1]:.1f} img/s = {served[-1] / raw:.2f}x the raw encoder; "
                          f"client CPU {cpu / len(batch) * 1e3:.1f} ms/img; load {load_average()}")
                print_stats(before, model_stats(client, models), len(batch))
            if args.perf_analyzer:
                from tritonlens.bench.perf_analyzer import (Measurement, PerfPoint,
                                                            ensure_perf_analyzer, run_point,
                                                            write_input_data)

                tool = ensure_perf_analyzer()
                inputs = write_input_data(tmp / "inputs.json", [[{"image": [b]} for b in data]])
                before = model_stats(client, models)
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                pa_concurrency = args.pa_concurrency or args.concurrency
                point = run_point(tool, PerfPoint("clip_classify", "grpc", "none",
                                                  pa_concurrency),
                                  server.grpc_url.split("//")[-1], inputs, tmp / "pa",
                                  Measurement(5000, 25, 6))
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                after = model_stats(client, models)
                done = after["clip_preprocess"]["requests"] - before["clip_preprocess"]["requests"]
                cpu = (used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime)
                print(f"\nclip_classify, perf_analyzer (concurrency {pa_concurrency}, one "
                      f"photo per request): {point.throughput:.1f} img/s = "
                      f"{point.throughput / raw:.2f}x the raw encoder; p50 {point.p50_ms:.0f} ms; "
                      f"perf_analyzer CPU {cpu / max(1, done) * 1e3:.1f} ms/img "
                      f"{point.error or ''}; load {load_average()}")
                print_stats(before, after, done)
            loaded = tree_memory(server.process.pid)
            print(f"\nsummary: raw {raw:.1f} img/s; served (Python client) best "
                  f"{max(served):.1f} img/s = {max(served) / raw:.2f}x; PSS idle "
                  f"{memory['pss_mb']:.0f} MB, after the load {loaded['pss_mb']:.0f} MB; "
                  f"load {load_average()}")


if __name__ == "__main__":
    main()
