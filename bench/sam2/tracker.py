"""Measure the SAM 2 video tracker: speed vs SAM2VideoPredictor, streams, encoder batch
sizes, and memory per stream over 30 vs 300 frames.

    python -m tritonlens.bench.sam2.tracker [--image-size 256] [--frames 24] [--long 300]

Prints one Markdown table per measurement (figures for docs/performance.md). Steps:

1. **In-process reference**: ``SAM2VideoPredictor`` (``init_state`` on a JPEG folder,
   click on frame 0, ``propagate_in_video``) on a pan/zoom clip over a real photo;
   frames per second of the propagation (``init_state``'s frame loading excluded).
2. **Through Triton** (a fresh repository export, a real tritonserver): one stream of the
   same frames through ``sam2_track`` (frame bytes in, masks out, gRPC), then 2 and 4
   concurrent streams (aggregate frames per second), and the image encoder's batch sizes
   as Triton's statistics report them.
3. **Memory**: one in-process ``StreamingTracker`` stream of ``--long`` frames: tracker
   state bytes (``StreamingTracker.state_bytes``) and process RSS after 30 and after
   ``--long`` frames; and the offline predictor's state after 30 frames for comparison.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def _clip(count: int, photo: str = "chelsea") -> list[bytes]:
    import skimage.data

    from tritonlens.client.sam2.video import encode_frame, pan_zoom_frames

    return [encode_frame(f, quality=90) for f in pan_zoom_frames(getattr(skimage.data, photo)(), count)]


def _tensor_bytes(obj, seen=None) -> int:
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.untyped_storage().nbytes())
        if key in seen:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def offline_fps(weights, size: int, jpegs: list[bytes]) -> tuple[float, int]:
    """(frames/s of propagate_in_video, bytes of its inference_state after the run)."""
    from tritonlens.serve.sam2 import build_video_model

    predictor = build_video_model(CONFIG, size, weights)
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        for i, data in enumerate(jpegs):
            Path(folder, f"{i:05d}.jpg").write_bytes(data)
        state = predictor.init_state(folder, offload_video_to_cpu=True)
        predictor.add_new_points_or_box(state, 0, 1, points=[[170.0, 120.0]], labels=[1])
        start = time.perf_counter()
        for _ in predictor.propagate_in_video(state):
            pass
        elapsed = time.perf_counter() - start
    return len(jpegs) / elapsed, _tensor_bytes(state)


def memory_curve(weights, size: int, long: int) -> list[tuple[int, int, float]]:
    """[(frames, state bytes, RSS MiB)] at 30 and ``long`` frames of one in-process stream
    (features of one real frame reused: the state does not depend on their content)."""
    from tritonlens.serve.sam2 import (StreamingTracker, build_video_model, decode_frame,
                                       frame_pixels, parse_prompts)
    from tritonlens.serve.sam2.tracker import FrameFeatures

    model = build_video_model(CONFIG, size, weights)
    tracker = StreamingTracker(model)
    jpeg = _clip(1)[0]
    image = decode_frame(jpeg)
    with torch.inference_mode():
        fpn = model.forward_image(frame_pixels(image, size)[None])["backbone_fpn"]
    features = FrameFeatures(fpn[2], fpn[0], fpn[1])
    prompts = parse_prompts(np.array([[170.0, 120.0], [60.0, 60.0]], np.float32),
                            np.array([1, 1], np.int32), np.array([1, 2], np.int32),
                            (image.height, image.width))
    tracker.start("s")
    rows = []
    for t in range(long):
        tracker.step("s", features, (image.height, image.width), prompts if t == 0 else None)
        if t + 1 in (30, long):
            gc.collect()
            rows.append((t + 1, tracker.state_bytes("s"),
                         psutil.Process().memory_info().rss / 2 ** 20))
    return rows


def served(size: int, jpegs: dict[str, list[bytes]], checkpoint: Path) -> dict:
    """Frames/s through Triton for 1, 2 and 4 streams, and the encoder's batch sizes."""
    from tritonlens.client.sam2.track import Point, Sam2VideoClient
    from tritonlens.export.sam2 import Sam2ExportOptions, export_sam2
    from tritonlens.launcher import TritonServer

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        export_sam2(Sam2ExportOptions(config="sam2.1_hiera_t", checkpoint=str(checkpoint),
                                      image_size=size), repo)
        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                          log_file=Path(tmp) / "log.txt") as server:
            client = Sam2VideoClient(f"127.0.0.1:{server.grpc_port}")
            client.check_ready("sam2_track")
            prompts = {0: [Point(170.0, 120.0)]}
            names = list(jpegs)
            list(client.track(jpegs[names[0]][:3], prompts))  # warm-up
            stats0 = _batch_stats(client)
            for streams in (1, 2, 4):
                videos = {f"{names[i % len(names)]}-{i}": (jpegs[names[i % len(names)]], prompts)
                          for i in range(streams)}
                start = time.perf_counter()
                results = client.track_many(videos)
                elapsed = time.perf_counter() - start
                frames = sum(len(r) for r in results.values())
                out[streams] = frames / elapsed
            stats1 = _batch_stats(client)
            out["batches"] = {b: stats1.get(b, 0) - stats0.get(b, 0) for b in sorted(stats1)}
    return out


def _batch_stats(client) -> dict[int, int]:
    stats = client.connection.get_inference_statistics("sam2_image_encoder", as_json=True)
    rows = stats["model_stats"][0].get("batch_stats", [])
    return {int(r["batch_size"]): int(r["compute_infer"]["count"]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--long", type=int, default=300)
    parser.add_argument("--skip-served", action="store_true")
    args = parser.parse_args()
    size = args.image_size
    from tritonlens.serve.sam2 import build_video_model

    torch.manual_seed(0)
    weights = build_video_model(CONFIG, size).state_dict()
    print(f"host: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; SAM 2.1 hiera-tiny, random weights, {size} px, fp32\n")
    jpegs = {p: _clip(args.frames, p) for p in ("chelsea", "coffee", "astronaut", "rocket")}

    fps_offline, offline_bytes = offline_fps(weights, size, jpegs["chelsea"])
    print(f"| engine | streams | frames/s |\n|---|---|---|\n"
          f"| SAM2VideoPredictor in-process (propagate_in_video) | 1 | {fps_offline:.2f} |")
    if not args.skip_served:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "w.pt"
            torch.save({"model": weights}, checkpoint)
            figures = served(size, jpegs, checkpoint)
        for streams in (1, 2, 4):
            ratio = figures[streams] / fps_offline
            print(f"| sam2_track through Triton (gRPC, frame bytes in) | {streams} | "
                  f"{figures[streams]:.2f} ({ratio:.2f}x) |")
        print(f"\nimage encoder batch sizes seen (batch size: executions): {figures['batches']}\n")
    rows = memory_curve(weights, size, args.long)
    print("| stream length (frames) | tracker state (bytes, 2 objects) | process RSS (MiB) |\n|---|---|---|")
    for frames, state, rss in rows:
        print(f"| {frames} | {state:,} | {rss:.0f} |")
    print(f"\nSAM2VideoPredictor inference_state after {args.frames} frames: {offline_bytes:,} bytes "
          f"({offline_bytes / args.frames:,.0f} per frame, 1 object)")


if __name__ == "__main__":
    main()
