"""The three performance targets, measured on one host in one run, printed as docs/performance.md's
table (met or missed, with the figures that explain a miss).

    python -m tritonlens.bench.studies.targets [--frames 8] [--image-size 512] [--large-photos 48]
                                       [--out targets.json]

1. **Tracking**: SAM 2.1 hiera-tiny at 512 px (``--image-size``; random weights, seeded)
   served with its video tracker; aggregate frames/s of 1, 2, 4 and 8 concurrent
   ``sam2_track`` streams (``bench.streams``). Met when 2, 4 and 8 streams each reach >= 1.0x the single stream.
2. **CLIP end to end**: ``clip_classify`` (photo bytes in, probabilities out) on a default
   ViT-B-32 export vs a raw onnxruntime session on the same ONNX file at its best batch,
   with the Python client and with perf_analyzer, plus where each core-millisecond goes
   and the ceiling exact decoding leaves (``bench.clip.path``). Met when both clients
   reach >= 0.95x.
3. **Memory**: the default CLIP server's PSS (tritonserver + every stub) idle after load
   and warm-up, and after the load. Met when idle PSS <= 1.5 GB (1500 MB).

The load average is printed after every step: on a shared host the ratios move with it.
Takes about 8 minutes on the 2-core host.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from pathlib import Path

from tritonlens.bench.clip import path as clip_path
from tritonlens.bench.sam2 import streams
from tritonlens.bench.monitor import load_average
from tritonlens.export.onnx_variants import host_isa

STREAM_COUNTS = [1, 2, 4, 8]
TRACK_TARGET, CLIP_TARGET, MEMORY_TARGET_MB = 1.0, 0.95, 1500.0


def table(tracking: list[tuple], clip: clip_path.ClipPathResult, size: int) -> str:
    """The target table of docs/performance.md (markdown) from one run's figures."""
    single = tracking[0][1]
    ratios = [row[2] for row in tracking[1:]]
    track_met = all(r >= TRACK_TARGET for r in ratios)
    raw = clip.raw
    python = clip.best_served / raw
    pa = clip.perf_analyzer / raw if clip.perf_analyzer else None
    clip_met = python >= CLIP_TARGET and (pa is None or pa >= CLIP_TARGET)
    pre = clip.cpu_ms.get("stub:clip_preprocess", 0.0)
    other = sum(v for k, v in clip.cpu_ms.items()
                if k not in ("stub:clip_image_encoder", "stub:clip_preprocess"))
    large = ""
    if clip.large:
        large = (f"; 12 MP JPEGs: {clip.large['exact'] / raw:.2f}x exact, "
                 f"{clip.large['draft'] / raw:.2f}x with `--jpeg-draft`")
    rows = [
        "| target | measured | met? |",
        "|---|---|---|",
        f"| 1. `sam2_track` {size} px: aggregate frames/s with "
        f"{' / '.join(str(r[0]) for r in tracking[1:])} streams >= {TRACK_TARGET}x 1 stream "
        f"| 1 stream {single:.2f} frames/s; "
        + " / ".join(f"{r[0]} streams {r[1]:.2f} (**{r[2]:.2f}x**)" for r in tracking[1:])
        + f" (load {tracking[-1][3]}) | {'met' if track_met else 'missed'} |",
        f"| 2. `clip_classify` vs the raw onnxruntime encoder at its best batch "
        f"({raw:.1f} img/s at batch {clip.raw_batch}), >= {CLIP_TARGET}x "
        f"| Python client **{python:.2f}x** ({clip.best_served:.1f} img/s)"
        + (f", perf_analyzer c{clip.perf_analyzer_concurrency} one photo per request "
           f"**{pa:.2f}x** ({clip.perf_analyzer:.1f} img/s)" if pa is not None else "")
        + f"; per photo the encoder took {clip.cpu_ms.get('stub:clip_image_encoder', 0):.1f} "
          f"core-ms (raw: {clip.raw_core_ms:.1f}), exact decode + resize {pre:.1f}, everything "
          f"else {other:.1f}: ceiling with exact decoding **{clip.ceiling:.2f}x**{large} "
          f"(load {clip.loads.get('python client', '?')}) "
        f"| {'met' if clip_met else 'missed'} |",
        f"| 3. default CLIP server PSS (tritonserver + stubs) <= {MEMORY_TARGET_MB / 1000:.1f} GB "
        f"| **{clip.pss_idle_mb:.0f} MB** idle, {clip.pss_loaded_mb:.0f} MB after the load "
        f"| {'met' if clip.pss_idle_mb <= MEMORY_TARGET_MB else 'missed'} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per tracking stream")
    parser.add_argument("--image-size", type=int, default=512,
                        help="SAM 2 input size in px (512: the issue's before figures)")
    parser.add_argument("--images", type=int, default=128, help="photos per classify round")
    parser.add_argument("--large-photos", type=int, default=48, metavar="N",
                        help="12 MP JPEGs classified exact and with jpeg_draft (0: skip)")
    parser.add_argument("--out", type=Path, help="also write every figure here as JSON")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"targets run {started:%Y-%m-%d %H:%M} UTC; ISA {host_isa()}; "
          f"load {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "sam2").mkdir()
        streams.export(tmp / "sam2" / "repo", args.image_size)
        tracking = streams.run(tmp / "sam2" / "repo", args.frames, STREAM_COUNTS, False, tmp)
        (tmp / "clip").mkdir()
        clip_path.export_default(tmp / "clip" / "repo")
        clip = clip_path.measure(tmp / "clip" / "repo", tmp / "clip", images=args.images,
                                 pa_concurrency=16, large=args.large_photos)
    ended = datetime.datetime.now(datetime.timezone.utc)
    print(f"\n### Targets (measured {started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC, ISA "
          f"`{clip.isa}`, {clip.cores} usable cores)\n")
    print(table(tracking, clip, args.image_size))
    if args.out:
        args.out.write_text(json.dumps({
            "started": started.isoformat(), "ended": ended.isoformat(), "isa": clip.isa,
            "tracking": [{"streams": n, "frames_per_s": fps, "ratio": ratio, "load": load}
                         for n, fps, ratio, load, _ in tracking],
            "clip": {"raw_curve": clip.raw_curve, "served": clip.served,
                     "perf_analyzer": clip.perf_analyzer, "cpu_ms": clip.cpu_ms,
                     "ceiling": clip.ceiling, "large": clip.large, "loads": clip.loads,
                     "preprocess_ms": clip.preprocess_ms},
            "memory": {"pss_idle_mb": clip.pss_idle_mb, "pss_loaded_mb": clip.pss_loaded_mb},
        }, indent=2))


if __name__ == "__main__":
    main()
