"""``tritonlens track``: track objects through a video with SAM 2 on a running Triton."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from tritonlens.client.base import TritonLensError
from tritonlens.client.options import (Protocol, Url, check_protocol, console, err_console, fail,
                                       warn_random_weights)
from tritonlens.client.sam2.live import is_live
from tritonlens.client.sam2.live_cli import is_stream_target, parse_source_options, run_live
from tritonlens.client.sam2.render import draw_prompts
from tritonlens.client.sam2.track import Box, Point, Sam2VideoClient, TrackedFrame
from tritonlens.client.sam2.video import read_video
from tritonlens.serve.parameters import WEIGHTS_PARAMETER

# One colour per object (RGB), cycled.
COLOURS = np.array([(30, 144, 255), (255, 64, 64), (60, 200, 80), (255, 200, 0),
                    (200, 80, 255), (0, 220, 220)], dtype=np.float32)
_POINT = re.compile(r"^(\d+):([^@]+?)(?:@(-?\d+))?$")


def parse_point(text: str) -> tuple[int, Point]:
    """``FRAME:x,y[,label][@object]`` -> (frame, Point); label 1, object 1 by default."""
    m = _POINT.match(text.strip())
    parts = m.group(2).split(",") if m else []
    try:
        if m and len(parts) in (2, 3):
            label = int(parts[2]) if len(parts) == 3 else 1
            return int(m.group(1)), Point(float(parts[0]), float(parts[1]), label,
                                          int(m.group(3) or 1))
    except ValueError:
        pass
    raise typer.BadParameter(f"{text!r}: a point is FRAME:x,y[,label][@object] (pixels; label 1 "
                             "foreground, 0 background)", param_hint="--point")


def parse_box(text: str) -> tuple[int, Box]:
    """``FRAME:x0,y0,x1,y1[@object]`` -> (frame, Box)."""
    m = _POINT.match(text.strip())
    try:
        values = [float(v) for v in m.group(2).split(",")] if m else []
    except ValueError:
        values = []
    if len(values) != 4:
        raise typer.BadParameter(f"{text!r}: a box is FRAME:x0,y0,x1,y1[@object] in pixels",
                                 param_hint="--box")
    return int(m.group(1)), Box(*values, object_id=int(m.group(3) or 1))


def overlay_frame(image: np.ndarray, result: TrackedFrame, alpha: float = 0.5) -> np.ndarray:
    """uint8 [H, W, 3]: the frame with each object's mask tinted in its colour."""
    out = image.astype(np.float32)
    for k, obj in enumerate(result.object_ids):
        colour = COLOURS[int(obj) % len(COLOURS)]
        mask = result.masks[k]
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return out.clip(0, 255).astype(np.uint8)


class VideoWriter:
    """Write RGB frames to an H.264 mp4 with PyAV (even sizes; yuv420p plays everywhere)."""

    def __init__(self, path: Path, fps: int = 12):
        import av

        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23"}
        self.started = False

    def write(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[:2]
        frame = frame[: h - h % 2, : w - w % 2]
        if not self.started:
            self.stream.height, self.stream.width = frame.shape[:2]
            self.started = True
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                                    format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def track(
    sources: Annotated[list[str], typer.Argument(
        metavar="SOURCE", help="Video file (any format FFmpeg reads), folder of frames, or live "
                                  "source: rtsp://, http(s):// (MPEG-TS, MJPEG, HLS), udp://, "
                                  "srt://, /dev/video0. Several: one sequence each, at once")],
    point: Annotated[list[str] | None, typer.Option(
        "--point", help="FRAME:x,y[,label]\\[@object]: a click in pixels on that frame; label 1 "
                        "foreground (default), 0 background; object ID 1 by default. Repeatable")] = None,
    box: Annotated[list[str] | None, typer.Option(
        "--box", help="FRAME:x0,y0,x1,y1\\[@object]: a box in pixels. Repeatable")] = None,
    out: Annotated[str | None, typer.Option(
        help="A folder (per-frame mask PNGs + overlay.mp4; one subfolder per source with "
             "several), an .mp4 file (the overlay video) or a URL the overlay is streamed to "
             "as MPEG-TS (udp://host:port ...)")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames")] = None,
    fps: Annotated[int, typer.Option(help="Frame rate of the overlay video")] = 12,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per frame as it is tracked: frame, and per "
                       "object its id, mask area (pixels), object score (logit) and visible")] = False,
    source_option: Annotated[list[str] | None, typer.Option(
        "--source-option", help="KEY=VALUE FFmpeg option for the sources, e.g. "
                                "rtsp_transport=tcp, timeout=5000000. Repeatable")] = None,
    realtime: Annotated[bool | None, typer.Option(
        "--realtime/--every-frame", help="Real time: never wait for the server, drop the frames "
                                         "it cannot take in time [default: real time for live "
                                         "sources, every frame for files]")] = None,
    max_pending: Annotated[int, typer.Option(
        help="Frames waiting per stream in real time; the oldest is dropped beyond it")] = 2,
    reconnect_for: Annotated[float, typer.Option(
        help="Seconds a live source that stopped is reconnected (with back-off) before it "
             "is given up")] = 30.0,
    read_timeout: Annotated[float, typer.Option(
        help="Seconds one read of a live source may block before it counts as stalled")] = 10.0,
    sequence_id: Annotated[list[str] | None, typer.Option(
        "--sequence-id", help="Correlation ID of each source's sequence, in order [default: "
                              "random]. Repeatable")] = None,
    url: Url = None,
    protocol: Protocol = "grpc",
) -> None:
    """Track objects through a video (SAM 2, sam2_track): frames are streamed one request at
    a time on a Triton sequence; prompts can be given on any frame.

    Example: tritonlens track clip.mp4 --point 0:210,120 --box 30:10,40,90,160@2 --out tracked.mp4

    Live: tritonlens track rtsp://cam/stream --box 0:10,40,90,160 --out udp://127.0.0.1:5001
    """
    from PIL import Image
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prompts: dict[int, list] = {}
    for frame, prompt in [parse_point(p) for p in point or []] + [parse_box(b) for b in box or []]:
        prompts.setdefault(frame, []).append(prompt)
    if not prompts:
        fail("give at least one --point FRAME:x,y[,label][@object] or --box FRAME:x0,y0,x1,y1[@object]")
    live = (len(sources) > 1 or is_live(sources[0]) or bool(realtime) or bool(sequence_id)
            or bool(source_option) or (out is not None and is_stream_target(out)))
    if live:  # the real-time path (client/sam2/live_cli.py); files alone keep this one
        client = Sam2VideoClient(url, check_protocol(protocol))
        try:
            client.check_ready("sam2_track")
            warn_random_weights(client.model_parameter("sam2_image_encoder", "tritonlens.weights"))
        except TritonLensError as err:
            fail(str(err))
        return run_live(client, sources, prompts, out=out,
                        as_json=as_json, options=parse_source_options(source_option),
                        realtime=realtime, max_pending=max_pending, reconnect_s=reconnect_for,
                        read_timeout_s=read_timeout, sequence_ids=sequence_id or [],
                        max_frames=max_frames,
                        draw=lambda result, shown: draw_prompts(
                            overlay_frame(result.image, result), shown, COLOURS))
    video, out = Path(sources[0]), None if out is None else Path(out)
    masks_dir, writer = None, None
    if out is not None:
        if out.suffix.lower() == ".mp4":
            out.parent.mkdir(parents=True, exist_ok=True)
            writer_path = out
        else:
            masks_dir = out
            masks_dir.mkdir(parents=True, exist_ok=True)
            writer_path = out / "overlay.mp4"
    client = Sam2VideoClient(url, check_protocol(protocol))
    frames_done, areas = 0, {}
    try:
        client.check_ready("sam2_track")
        warn_random_weights(client.model_parameter("sam2_image_encoder", WEIGHTS_PARAMETER))
        total = None
        if video.is_file():
            try:
                import av

                with av.open(str(video)) as container:
                    total = container.streams.video[0].frames or None
            except Exception:  # noqa: BLE001 - only the progress bar's total
                total = None
        if max_frames:
            total = min(total or max_frames, max_frames)
        with Progress(TextColumn("tracking"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console,
                      redirect_stdout=sys.stdout.isatty()) as progress:  # --json | ... stays on stdout
            task = progress.add_task("frames", total=total)
            for result in client.track(read_video(video), prompts, max_frames=max_frames,
                                       keep_images=True):
                if out is not None:
                    if writer is None:
                        writer = VideoWriter(writer_path, fps)
                    shown = [q for f, ps in prompts.items() if 0 <= result.frame_index - f < max(1, fps // 2)
                             for q in ps]  # each prompt stays visible for half a second
                    writer.write(draw_prompts(overlay_frame(result.image, result), shown, COLOURS))
                if masks_dir is not None:
                    for k, obj in enumerate(result.object_ids):
                        Image.fromarray(result.masks[k].astype(np.uint8) * 255).save(
                            masks_dir / f"frame{result.frame_index:05d}_object{int(obj)}.png")
                for k, obj in enumerate(result.object_ids):
                    areas.setdefault(int(obj), []).append(int(result.masks[k].sum()))
                if as_json:
                    print(json.dumps({"frame": result.frame_index, "objects": [
                        {"object_id": int(obj), "area": int(result.masks[k].sum()),
                         "object_score": float(result.object_scores[k]),
                         "visible": bool(result.object_scores[k] > 0)}
                        for k, obj in enumerate(result.object_ids)]}), flush=True)
                frames_done += 1
                progress.advance(task)
    except (TritonLensError, ValueError) as err:
        fail(str(err))
    finally:
        if writer is not None:
            writer.close()
    objects = ", ".join(f"{o} (mean area {np.mean(a):.0f} px over {len(a)} frames)"
                        for o, a in areas.items())
    report = err_console if as_json else console  # with --json, stdout holds only JSON lines
    report.print(f"tracked {frames_done} frames, "
                  + (f"objects {objects}" if objects else "no object"), highlight=False)
    if out is not None:
        report.print(f"wrote the overlay video to {writer_path}"
                      + (f" and per-frame masks to {masks_dir}/" if masks_dir else ""),
                      highlight=False)
