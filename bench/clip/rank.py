"""clip_rank (labels in the request) beside clip_classify (labels exported) in one run.

    python -m tritonlens.bench.clip.rank [--model ViT-B-32] [--repo DIR] [--images 64]
                                         [--rounds 2] [--concurrency 4]

Exports ``--model`` in the default profile (random weights, seeded) with the 27 labels of
``examples/labels.txt`` (or serves ``--repo`` as it is, its exported labels used as the
request's), then sends the same photos (scikit-image's samples, repeated) through
``ClipClient`` over gRPC, ``--concurrency`` requests in flight, alternating the two paths
round by round, and prints images/s of each with the load average beside it, their ratio,
and what the text encoder ran meanwhile (its inferences vs clip_rank's text-cache hits): after the
first request, the labels sent with every image cost no text-encoder work.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tritonlens.bench.host import cpu_model
from tritonlens.bench.monitor import load_average
from tritonlens.client.cache_status import read_metrics, text_cache_counts
from tritonlens.client.clip import ClipClient
from tritonlens.client.demo import write_sample_photos
from tritonlens.export.onnx_variants import host_isa
from tritonlens.launcher import TritonServer

LABELS_FILE = Path(__file__).resolve().parents[2] / "examples" / "labels.txt"


def text_encoder_counts(client: ClipClient, metrics_url: str) -> tuple[int, int]:
    """(inferences of clip_text_encoder, text-cache hits of clip_rank) since they loaded."""
    entry = client.connection.get_inference_statistics("clip_text_encoder",
                                                       as_json=True)["model_stats"][0]
    counts = text_cache_counts(read_metrics(metrics_url), "clip_rank") or {"hits": 0}
    return int(entry["inference_count"]), int(counts["hits"])


def measure(repo: Path, photos: list[Path], rounds: int, concurrency: int) -> None:
    """Serve ``repo`` and print the side-by-side figures (see the module docstring)."""
    labels = (repo / "clip_zero_shot" / "labels.txt").read_text(encoding="utf-8").splitlines()
    print(f"host: {cpu_model()} ({host_isa()}); {len(photos)} photos per round, "
          f"{len(labels)} labels, {concurrency} requests in flight")
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=repo.parent / "clip_rank_bench_server.log") as server:
        client = ClipClient(server.grpc_url, "grpc")
        client.probabilities(photos[:4])
        client.rank(photos[:4], labels)  # the labels' embeddings into the cache
        rates: dict[str, list[float]] = {"clip_classify": [], "clip_rank": []}
        before = text_encoder_counts(client, server.metrics_url)
        for round_ in range(rounds):
            for name, run in (("clip_classify", lambda: client.probabilities(
                                  photos, batch_size=1, concurrency=concurrency)),
                              ("clip_rank", lambda: client.rank(
                                  photos, labels, batch_size=1, concurrency=concurrency))):
                start = time.perf_counter()
                run()
                rate = len(photos) / (time.perf_counter() - start)
                rates[name].append(rate)
                print(f"round {round_ + 1}: {name:14s} {rate:6.2f} images/s  "
                      f"(load average {load_average()})")
        after = text_encoder_counts(client, server.metrics_url)
    best = {name: max(values) for name, values in rates.items()}
    print(f"best: clip_classify {best['clip_classify']:.2f}, clip_rank {best['clip_rank']:.2f} "
          f"images/s; clip_rank / clip_classify = {best['clip_rank'] / best['clip_classify']:.2f}x")
    print(f"text encoder during the rounds: {after[0] - before[0]} inferences, "
          f"{after[1] - before[1]} text-cache hits "
          f"({rounds * len(photos)} clip_rank requests x {len(labels)} labels)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repo", type=Path, help="serve this repository (no export)")
    parser.add_argument("--images", type=int, default=64, help="photos per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = args.repo
        if repo is None:
            from tritonlens.export.clip import ClipExportOptions, export_clip
            from tritonlens.export.clip.export import read_lines

            repo = tmp / "repo"
            export_clip(ClipExportOptions(model=args.model,
                                          labels=read_lines(LABELS_FILE, "labels")), repo)
        samples = write_sample_photos(tmp / "photos")
        photos = [samples[i % len(samples)] for i in range(args.images)]
        measure(repo, photos, args.rounds, args.concurrency)


if __name__ == "__main__":
    main()
