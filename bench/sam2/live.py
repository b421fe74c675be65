"""Live tracking in real time: 1 and 4 cameras (FFmpeg) at once through ``tritonlens track``.

    python -m tritonlens.bench.sam2.live --url 127.0.0.1:8001 [--streams 1,4] [--seconds 40]
                                    [--camera-fps 25]

Needs a running server with the SAM 2 tracker (e.g. ``tritonlens export sam2 --image-size
256`` and ``tritonlens serve``) and ffmpeg. For each count N, N FFmpeg processes play the
camera: each loops a 320x240 clip (a pan over a scikit-image photo, H.264 in MPEG-TS) in
real time at ``--camera-fps`` to its own UDP port; one ``tritonlens track`` reads the N
sources (one sequence each, real time: frames it cannot send in time are dropped) for
``--seconds`` and is then stopped with Ctrl-C (SIGINT), so every sequence is ended. Prints,
per N, each stream's frames received / tracked / dropped, tracked frames/s, and the
end-to-end latency (a frame's arrival at the client to its masks) p50 / p95, from the
command's own ``{"summary": ...}`` line; with the CPU's model, ISA and the load average.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tritonlens.bench.sam2.camera import BOX, free_port, send_udp, stop, wait_bound, write_ts_clip
from tritonlens.bench.host import cpu_model
from tritonlens.bench.monitor import load_average
from tritonlens.export.onnx_variants import host_isa


def run_step(url: str, count: int, seconds: float, clip: Path) -> dict:
    """N cameras for ``seconds``: ``tritonlens track``'s summary (source -> figures)."""
    ports = [free_port() for _ in range(count)]
    cmd = [str(Path(sys.executable).parent / "tritonlens"), "track",
           *[f"udp://127.0.0.1:{port}" for port in ports], "--box", BOX, "--json", "--url", url]
    tracker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    senders = []
    try:
        for port in ports:
            wait_bound(port)
        senders = [send_udp(clip, port, loops=-1) for port in ports]
        time.sleep(seconds)
        tracker.send_signal(signal.SIGINT)
        _, stderr = tracker.communicate(timeout=120)
    finally:
        stop(tracker)
        for sender in senders:
            stop(sender)
    lines = [line for line in stderr.splitlines() if line.startswith('{"summary"')]
    if not lines:
        raise RuntimeError(f"tritonlens track printed no summary:\n{stderr[-3000:]}")
    return json.loads(lines[-1])["summary"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC host:port")
    parser.add_argument("--streams", default="1,4", help="comma-separated camera counts")
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds per count")
    parser.add_argument("--camera-fps", type=int, default=25, help="each camera's frame rate")
    args = parser.parse_args(argv)
    print(f"CPU {cpu_model()} ({host_isa()}), camera 320x240 at {args.camera_fps} fps, "
          f"{args.seconds:g} s per step; figures are noisy when other jobs share the cores")
    with tempfile.TemporaryDirectory() as folder:
        clip = write_ts_clip(Path(folder) / "camera.ts", 48, args.camera_fps)
        for count in [int(n) for n in args.streams.split(",")]:
            summary = run_step(args.url, count, args.seconds, clip)
            print(f"\n{count} stream(s), load average after {load_average()}")
            print(f"{'stream':28} {'received':>8} {'tracked':>8} {'dropped':>8} {'frames/s':>9} "
                  f"{'p50 ms':>8} {'p95 ms':>8}")
            for source, s in summary.items():
                print(f"{source:28} {s['received']:8d} {s['tracked']:8d} {s['dropped']:8d} "
                      f"{s['fps']:9.2f} {s['latency_p50_ms']:8.0f} {s['latency_p95_ms']:8.0f}")
            total = sum(s["fps"] for s in summary.values())
            print(f"{'all streams':28} {'':8} {'':8} {'':8} {total:9.2f}")


if __name__ == "__main__":
    main()
