"""SAM 2 video tracking served: 1, 2, 4 and 8 concurrent streams side by side in one run.

    python -m tritonlens.bench.sam2.streams [--image-size 256] [--frames 16] [--streams 1,2,4,8]
                                       [--repo DIR] [--before DIR] [--py-spy]

Exports SAM 2.1 hiera-tiny (random weights, seeded) with its video tracker into a fresh
model repository (or serves ``--repo`` as it is), starts one real tritonserver and streams
``--frames`` frames of real photos panned and zoomed (``client.sam2.video``) through
``sam2_track`` with ``Sam2VideoClient.track_many``: N streams at once, one thread and one
sequence each, a click on frame 0. Prints per stream count:

* the aggregate frames/s (all frames of all streams / wall seconds) and its ratio to the
  single-stream figure of the same run;
* per composing model, from Triton's statistics over that step: executions, requests,
  queue milliseconds per request, compute milliseconds per execution and per frame, and the
  image encoder's batch sizes;
* the load average (``os.getloadavg``) right after the step, and the CPU's ISA flags.

``--before DIR`` first serves another repository the same way (e.g. one exported by an
earlier version, with its own ``model.py`` files and thread settings) with
``OMP_WAIT_POLICY=default`` in the server's environment (libgomp's own default, as before
the stubs set ``PASSIVE``), so both tables come from one run.

``--py-spy`` records a py-spy profile of every stub process during the largest step
(``py-spy`` is in the ``bench`` extra) and prints its top frames.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tritonlens.bench.monitor import load_average, model_stats, stats_delta
from tritonlens.export.onnx_variants import host_isa

MODELS = ("sam2_frame_preprocess", "sam2_image_encoder", "sam2_tracker")
COMPUTE = ("compute_input_ns", "compute_infer_ns", "compute_output_ns")


def stub_pids(server_pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(server_pid).children(recursive=True)]


def export(repo: Path, size: int) -> None:
    import torch

    from tritonlens.export.sam2 import Sam2ExportOptions, export_sam2
    from tritonlens.serve.sam2 import build_video_model

    torch.manual_seed(0)
    weights = build_video_model("configs/sam2.1/sam2.1_hiera_t.yaml", size).state_dict()
    checkpoint = repo.parent / "weights.pt"
    torch.save({"model": weights}, checkpoint)
    export_sam2(Sam2ExportOptions(config="sam2.1_hiera_t", checkpoint=str(checkpoint),
                                  image_size=size), repo)


def run(repo: Path, frames: int, counts: list[int], profile: bool, workdir: Path,
        label: str = "") -> list[tuple]:
    """Stream ``counts`` concurrent videos of ``frames`` frames through ``sam2_track`` on a
    fresh server (module docstring) and print the tables; returns one row per count:
    (streams, aggregate frames/s, ratio to the first count, load average, model stats)."""
    from tritonlens.client.sam2.track import Point, Sam2VideoClient
    from tritonlens.launcher import TritonServer
    from tritonlens.client.sam2.video import encode_frame, pan_zoom_frames
    import skimage.data

    photos = ("chelsea", "coffee", "astronaut", "rocket")
    clips = {p: [encode_frame(f, quality=90) for f in pan_zoom_frames(getattr(skimage.data, p)(), frames)]
             for p in photos}
    prompts = {0: [Point(170.0, 120.0)]}
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=repo.parent / "server.log") as server:
        client = Sam2VideoClient(f"127.0.0.1:{server.grpc_port}")
        client.check_ready("sam2_track")
        list(client.track(clips["chelsea"][:3], prompts))  # warm-up
        print(f"{label}ISA: {host_isa()}; usable cores {len(os.sched_getaffinity(0))}; "
              f"{frames} frames per stream, {photos}\n")
        rows, base = [], None
        for n in counts:
            videos = {f"{photos[i % len(photos)]}-{i}": (clips[photos[i % len(photos)]], prompts)
                      for i in range(n)}
            before = model_stats(client, MODELS)
            spy = None
            if profile and n == max(counts):
                spy = [subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", "600",
                                         "-f", "raw", "-o", str(workdir / f"spy-{pid}.txt"),
                                         "--nonblocking"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                       for pid in stub_pids(server.process.pid)]
            start = time.perf_counter()
            results = client.track_many(videos)
            elapsed = time.perf_counter() - start
            for proc in spy or ():
                proc.send_signal(2)
                proc.wait(30)
            fps = sum(len(r) for r in results.values()) / elapsed
            base = base or fps
            rows.append((n, fps, fps / base, load_average(), stats_delta(model_stats(client, MODELS), before)))
            print(f"{n} streams: {fps:.2f} frames/s ({fps / base:.2f}x), load {rows[-1][3]}",
                  flush=True)
    print(f"\n{label}\n| streams | frames/s (aggregate) | vs 1 stream | load avg 1/5/15 min |"
          "\n|---|---|---|---|")
    for n, fps, ratio, load, _ in rows:
        print(f"| {n} | {fps:.2f} | {ratio:.2f}x | {load} |")
    print("\n| streams | model | executions | requests | queue ms/request | compute ms/exec | "
          "compute ms/frame | batch sizes |\n|---|---|---|---|---|---|---|---|")
    for n, _, _, _, stats in rows:
        for name, s in stats.items():
            e, r = max(1, s["executions"]), max(1, s["requests"])
            compute = sum(s[k] for k in COMPUTE)
            print(f"| {n} | {name} | {s['executions']} | {s['requests']} | "
                  f"{s['queue_ns'] / r / 1e6:.1f} | {compute / e / 1e6:.1f} | "
                  f"{compute / r / 1e6:.1f} | {s['batches']} |")
    if profile:
        for path in sorted(workdir.glob("spy-*.txt")):
            print(f"\npy-spy {path.name}: top stacks")
            lines = [ln.rsplit(" ", 1) for ln in path.read_text().splitlines() if " " in ln]
            total = sum(int(c) for _, c in lines) or 1
            for stack, count in sorted(lines, key=lambda x: -int(x[1]))[:6]:
                print(f"  {int(count) / total:5.1%} {stack.split(';')[-1][:150]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--repo", type=Path, help="serve this repository (no export)")
    parser.add_argument("--keep", type=Path, help="export into this folder and keep it")
    parser.add_argument("--before", type=Path, help="first serve this repository (see above)")
    parser.add_argument("--py-spy", action="store_true", dest="profile")
    args = parser.parse_args()
    counts = [int(c) for c in args.streams.split(",")]
    print(f"SAM 2.1 hiera-tiny, random weights (seed 0), {args.image_size} px, fp32; "
          f"load before: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = args.repo
        if repo is None:
            repo = args.keep or tmp / "repo"
            export(repo, args.image_size)
        if args.before:
            os.environ["OMP_WAIT_POLICY"] = "default"
            try:
                run(args.before, args.frames, counts, False, tmp, f"before ({args.before}): ")
            finally:
                del os.environ["OMP_WAIT_POLICY"]
            print()
        label = f"after ({repo}): " if args.before else ""
        run(repo, args.frames, counts, args.profile, tmp, label)


if __name__ == "__main__":
    main()
