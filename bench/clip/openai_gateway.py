"""The OpenAI-compatible embeddings gateway against direct gRPC, side by side in one run:
throughput, latency and the gateway's CPU per request at the same number of requests in
flight (goal: the gateway at >= 0.9x direct with 8 in flight).

    python -m tritonlens.bench.clip.openai_gateway [--repo DIR | --model ViT-B-32] [--seconds 10]
                                              [--rounds 2] [--concurrency 8] [--kinds text,image]

Exports ``--model`` (random weights) unless ``--repo`` is given, starts tritonserver and the
gateway (:class:`~tritonlens.launcher.openai_process.OpenAIGateway`, its own process), then,
round after round and for each kind of input, runs the same closed loop against each arm for
``--seconds``: ``--concurrency`` threads, each sending one input per request and the next as
soon as the answer is in.

* **direct**: tritonclient's gRPC client (one per thread) calling ``clip_embed_text`` /
  ``clip_embed_image`` with a BYTES [1, 1] tensor;
* **gateway**: ``POST /v1/embeddings`` over a keep-alive HTTP/1.1 connection per thread
  (``http.client``: the lightest client, so the figures are the gateway's and not a client
  library's), ``encoding_format: base64`` as the ``openai`` package sends it; images as
  ``data:`` URLs.

Texts are short labels ("a photo of a <label>"); images are scikit-image's sample photos.
CPU is user + system seconds over each window: of the gateway process, of tritonserver with
its stubs, and of this client process, per request. Every process shares the host's cores,
so on a small CPU host the gateway's CPU comes out of Triton's: the ratio measures both the
gateway's latency and its CPU cost.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import psutil

from tritonlens.bench.host import cpu_model
from tritonlens.bench.load import closed_loop
from tritonlens.bench.monitor import load_average
from tritonlens.bench.clip.proxy import process_tree_cpu
from tritonlens.export.onnx_variants import host_isa
from tritonlens.launcher import TritonServer
from tritonlens.launcher.openai_process import OpenAIGateway

LABELS = ("cat", "dog", "cup of coffee", "astronaut", "rocket", "galaxy", "bee", "flower",
          "chart", "diagram", "horse", "car", "pizza", "man with a camera")
ARMS = ("direct", "gateway")


def direct_call(url: str, kind: str):
    """A function sending one item to ``clip_embed_<kind>`` over gRPC (its own client)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    name, model = ("text", "clip_embed_text") if kind == "text" else ("image", "clip_embed_image")
    outputs = [grpcclient.InferRequestedOutput("embedding")]

    def call(item: bytes) -> np.ndarray:
        tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[item]], dtype=np.object_))
        return client.infer(model, [tensor], outputs=outputs).as_numpy("embedding")[0]
    return call


def gateway_call(gateway: OpenAIGateway):
    """A function sending one item (text, or an image as a data URL) to ``POST
    /v1/embeddings`` on its own keep-alive connection."""
    host, port = gateway.url.split("//", 1)[1].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Content-Type": "application/json"}

    def call(item: str) -> np.ndarray:
        body = json.dumps({"model": "clip", "input": [item], "encoding_format": "base64"})
        connection.request("POST", "/v1/embeddings", body, headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"gateway answered {response.status}: {answer}")
        return np.frombuffer(base64.b64decode(answer["data"][0]["embedding"]), "<f4")
    return call


def cpu(pid: int) -> float:
    """User + system CPU seconds of one process."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def inputs(kind: str, photos: list[Path]) -> dict[str, list]:
    """The same inputs for both arms: UTF-8 bytes / file bytes (direct), str / data URL (gateway)."""
    if kind == "text":
        texts = [f"a photo of a {label}" for label in LABELS]
        return {"direct": [t.encode() for t in texts], "gateway": texts}
    files = [p.read_bytes() for p in photos]
    media = {".jpg": "jpeg", ".png": "png", ".webp": "webp"}
    return {"direct": files, "gateway": [f"data:image/{media[p.suffix]};base64,{base64.b64encode(f).decode()}"
                                         for p, f in zip(photos, files)]}


def measure(repo: Path, *, kinds: list[str], seconds: float, rounds: int, concurrency: int,
            workdir: Path) -> dict:
    """Run the rounds (see the module docstring); returns {kind: {arm: [(req/s, median
    latency s, gateway CPU s/req, server CPU s/req, client CPU s/req), ...]}}."""
    from tritonlens.client.demo import write_sample_photos

    photos = write_sample_photos(workdir / "photos")
    results: dict = {kind: {arm: [] for arm in ARMS} for kind in kinds}
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, log_file=workdir / "triton.log",
                      model_control_mode="explicit",
                      load_models=[f"clip_embed_{kind}" for kind in kinds]) as server, \
            OpenAIGateway(server.grpc_url, port=0, log_file=workdir / "gateway.log") as gateway:
        makers = {"direct": lambda kind: (lambda: direct_call(server.grpc_url, kind)),
                  "gateway": lambda kind: (lambda: gateway_call(gateway))}
        for kind in kinds:  # both arms give the same vectors
            items = inputs(kind, photos)
            a = makers["direct"](kind)()(items["direct"][0])
            b = makers["gateway"](kind)()(items["gateway"][0])
            print(f"{kind}: cosine(direct, gateway) = {float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)):.6f}")
        for round_ in range(rounds):
            for kind in kinds:
                items = inputs(kind, photos)
                for arm in ARMS:
                    before = (cpu(gateway.process.pid), process_tree_cpu([server.process.pid]), cpu(os.getpid()))
                    count, wall, latencies = closed_loop(makers[arm](kind), items[arm], concurrency, seconds)
                    after = (cpu(gateway.process.pid), process_tree_cpu([server.process.pid]), cpu(os.getpid()))
                    per = [(b - a) / count for a, b in zip(before, after)]
                    results[kind][arm].append((count / wall, statistics.median(latencies), *per))
                    print(f"round {round_ + 1} {kind} {arm}: {count / wall:.1f} req/s, median "
                          f"{1000 * statistics.median(latencies):.1f} ms, CPU ms/req gateway "
                          f"{1000 * per[0]:.2f} server {1000 * per[1]:.1f} client {1000 * per[2]:.2f}; "
                          f"load {load_average()}", flush=True)
    return results


def report(results: dict, concurrency: int, seconds: float, rounds: int) -> None:
    """The table: per kind and arm, medians over the rounds, and the gateway / direct ratio."""
    print(f"\nOpenAI gateway vs direct gRPC, {concurrency} requests in flight, one input per "
          f"request, {rounds} x {seconds:.0f} s per arm (medians); host: {cpu_model()} "
          f"({host_isa()}), {os.cpu_count()} cores; load average now {load_average()}\n")
    print("| input | arm | req/s | vs direct | median latency ms | gateway CPU ms/req "
          "| tritonserver CPU ms/req | client CPU ms/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, arms in results.items():
        base = statistics.median(r[0] for r in arms["direct"])
        for arm, rows in arms.items():
            med = [statistics.median(r[i] for r in rows) for i in range(5)]
            print(f"| {kind} | {arm} | {med[0]:.1f} | {med[0] / base:.2f}x | {1000 * med[1]:.1f} | "
                  f"{1000 * med[2]:.2f} | {1000 * med[3]:.1f} | {1000 * med[4]:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="serve this repository (no export)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture to export")
    parser.add_argument("--seconds", type=float, default=10.0, help="one measured window")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the arms")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--kinds", default="text,image", help="text, image or both")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in ("text", "image") for k in kinds):
        parser.error(f"--kinds: text and/or image, not {args.kinds!r}")
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        repo = args.repo
        if repo is None:
            from tritonlens.bench.clip.path import export_default

            repo = workdir / "repo"
            print(f"exporting {args.model} (random weights) ...", flush=True)
            export_default(repo, args.model)
        results = measure(repo, kinds=kinds, seconds=args.seconds, rounds=args.rounds,
                          concurrency=args.concurrency, workdir=workdir)
    report(results, args.concurrency, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
