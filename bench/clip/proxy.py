"""What nginx in front of Triton replicas costs and gains: CLIP classify throughput direct to
one server, through the proxy to that one server, and through the proxy to two replicas,
side by side in one run, with the CPU seconds every process spent per request.

    python -m tritonlens.bench.clip.proxy --repo build/repo --seconds 20 --rounds 3

Starts two replicas of the repository (``clip_classify`` only, explicit model control) behind
nginx, and a second nginx in front of replica 0 alone; then, round after round, runs the
same closed loop (``--concurrency`` clients, each sending one photo at a time through
tritonlens' ClipClient) against each of the three for ``--seconds``. CPU is the user +
system time of every process involved over each window: both replicas with their
Python-backend stubs, both nginx (master and workers), and this client process; the
nginx part is also shown alone. On a host
with fewer cores than replicas x intra-op threads the replicas share the cores, so the gain
of a second replica is bounded by the cores, not by the proxy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import psutil

from tritonlens.bench.host import cpu_model
from tritonlens.bench.load import closed_loop
from tritonlens.client.clip import ClipClient
from tritonlens.launcher.nginx import NginxProxy, ProxySettings
from tritonlens.launcher.replicas import ReplicaSet


def process_tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and all their descendants (exited children of a
    waited-for process count in its children times)."""
    total = 0.0
    seen = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
            if proc.pid == os.getpid():  # this process: not its servers (counted above)
                continue
            total += times.children_user + times.children_system
    return total


def classify_calls(url: str):
    """A new gRPC client's ``classify`` (one per closed-loop thread)."""
    return ClipClient(url, "grpc").classify


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="model repository with clip_classify")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one measured window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the three set-ups")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    args = parser.parse_args(argv)

    from tritonlens.client.demo import write_sample_photos

    with tempfile.TemporaryDirectory() as folder:
        images = [p.read_bytes() for p in write_sample_photos(Path(folder))]
    load_before = os.getloadavg()
    with ReplicaSet(args.repo, 2, ProxySettings(grpc_port=0, http_port=0), model_control_mode="explicit",
                    load_models=["clip_classify"]) as replicas:
        one = replicas.replicas[0].server
        single = NginxProxy(ProxySettings(grpc_port=0, http_port=0),
                            [one.grpc_url], [one.http_url])
        with single:
            setups = {"direct to one server": one.grpc_url,
                      "nginx -> 1 replica": single.grpc_url,
                      "nginx -> 2 replicas": replicas.grpc_url}
            nginx = [replicas.nginx.pid, single.process.pid]
            pids = [r.server.process.pid for r in replicas.replicas] + nginx + [os.getpid()]
            results = {name: [] for name in setups}
            for round_ in range(args.rounds):
                for name, url in setups.items():
                    cpu0, proxy0 = process_tree_cpu(pids), process_tree_cpu(nginx)
                    count, wall, latencies = closed_loop(lambda: classify_calls(url), images,
                                                         args.concurrency, args.seconds)
                    cpu, proxy = process_tree_cpu(pids) - cpu0, process_tree_cpu(nginx) - proxy0
                    results[name].append((count / wall, cpu / count, statistics.median(latencies),
                                          proxy / count))
                    print(f"round {round_ + 1} {name}: {count / wall:.1f} req/s, "
                          f"{1000 * cpu / count:.1f} ms CPU/req ({1000 * proxy / count:.2f} in nginx)",
                          flush=True)
    load_after = os.getloadavg()

    base = statistics.median(r[0] for r in results["direct to one server"])
    print(f"\nCLIP classify (clip_classify, gRPC, {args.concurrency} in flight, {args.rounds} x "
          f"{args.seconds:.0f} s per set-up, medians); host: {cpu_model()}, {os.cpu_count()} cores; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print("| set-up | req/s | vs direct | median latency (ms) | CPU ms per request, all processes "
          "| of it in nginx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        throughput = statistics.median(r[0] for r in rows)
        print(f"| {name} | {throughput:.1f} | {throughput / base:.2f} | "
              f"{1000 * statistics.median(r[2] for r in rows):.1f} | "
              f"{1000 * statistics.median(r[1] for r in rows):.1f} | "
              f"{1000 * statistics.median(r[3] for r in rows):.2f} |")


if __name__ == "__main__":
    main()
