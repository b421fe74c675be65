"""``tritonlens track`` on live sources or several sources at once (the real-time path of
``track_cli.track``): a live table of per-stream figures while it runs, a summary at the
end, masks as JSON lines, overlays to files or to a live MPEG-TS stream."""

from __future__ import annotations

import json
import signal
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from tritonlens.client.base import TritonLensError
from tritonlens.client.options import console, err_console, fail
from tritonlens.client.sam2.live import LiveFrame, LiveSource, LiveTracking, StreamStats

# Overlay targets sent as a live stream (MPEG-TS), e.g. udp://127.0.0.1:5001 for ffplay/VLC.
STREAM_OUT_SCHEMES = ("udp", "rtp", "srt", "tcp", "http")


class OverlayWriter:
    """Write RGB frames as H.264 with their own timestamps (PyAV): an .mp4 file, or a live
    MPEG-TS stream to a URL (``udp://host:port`` and the other :data:`STREAM_OUT_SCHEMES`;
    ``ffplay udp://host:port`` or VLC plays it). Timestamps are the frames' times from the
    source in ms (strictly increasing), so a stream with dropped frames plays at its real
    pace; ``tune=zerolatency`` keeps the encoder from holding frames back."""

    def __init__(self, target: str):
        import av

        self.target = target
        live = is_stream_target(target)
        self.container = av.open(target, mode="w", format="mpegts" if live else None)
        self.stream = self.container.add_stream("libx264", rate=25)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23", "tune": "zerolatency", "preset": "veryfast"}
        self.stream.codec_context.time_base = Fraction(1, 1000)
        self.started, self.start_time, self.last_pts = False, None, -1

    def write(self, frame: np.ndarray, seconds: float) -> None:
        """uint8 [H, W, 3] RGB shown at ``seconds`` (any origin; the first frame is 0)."""
        import av

        h, w = frame.shape[:2]
        frame = frame[: h - h % 2, : w - w % 2]
        if not self.started:
            self.stream.height, self.stream.width = frame.shape[:2]
            self.started, self.start_time = True, seconds
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        self.last_pts = max(self.last_pts + 1, round((seconds - self.start_time) * 1000))
        video.pts, video.time_base = self.last_pts, Fraction(1, 1000)
        for packet in self.stream.encode(video):
            self.container.mux(packet)

    def close(self) -> None:
        if self.started:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def is_stream_target(target: str) -> bool:
    """Whether an ``--out`` value is a live-stream URL (:data:`STREAM_OUT_SCHEMES`)."""
    return "://" in target and target.split("://", 1)[0].lower() in STREAM_OUT_SCHEMES


def parse_source_options(items: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings -> FFmpeg options (``--source-option rtsp_transport=tcp``)."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--source-option {item!r}: give KEY=VALUE, e.g. rtsp_transport=tcp")
        options[key.strip()] = value
    return options


def stream_names(sources: list[str]) -> list[str]:
    """A unique name per source: the source itself, ``#2``... for repeats."""
    names = []
    for source in sources:
        name, n = source, 1
        while name in names:
            n += 1
            name = f"{source}#{n}"
        names.append(name)
    return names


def stats_table(session: LiveTracking):
    """A rich table of every stream's figures (received, tracked, dropped, frames/s,
    latency p50/p95 in ms)."""
    from rich.table import Table

    table = Table("stream", "received", "tracked", "dropped", "frames/s", "latency p50 ms",
                  "p95 ms", title="live tracking")
    for name, stats in session.stats.items():
        source = session.streams[name][0]
        received = max(stats.received, source.received)  # the source counts while running
        dropped = max(stats.dropped, source.dropped)
        table.add_row(name, str(received), str(stats.tracked), str(dropped), f"{stats.fps:.2f}",
                      f"{stats.latency_ms(50):.0f}", f"{stats.latency_ms(95):.0f}")
    return table


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so the sequences are ended as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def run_live(client, sources: list[str], prompts: dict, *, out: str | None, as_json: bool,
             options: dict[str, str], realtime: bool | None, max_pending: int,
             reconnect_s: float, read_timeout_s: float, sequence_ids: list[str],
             max_frames: int | None, draw) -> None:
    """Track ``sources`` at once (one sequence each) and write the outputs; exits with 1
    when a stream failed (the error names its source), 130 on Ctrl-C, 143 on SIGTERM, every
    sequence ended in each case. ``draw(result, prompts)`` renders an overlay frame."""
    from PIL import Image
    from rich.live import Live

    if sequence_ids and len(sequence_ids) != len(sources):
        fail(f"--sequence-id: give one per source ({len(sources)}), not {len(sequence_ids)}")
    if out and is_stream_target(out) and len(sources) > 1:
        fail(f"--out {out}: a live overlay stream takes one source; give a folder for "
             f"{len(sources)} sources")
    names = stream_names(sources)
    targets = {}  # name -> (overlay target, masks folder or None)
    for i, name in enumerate(names):
        if out is None:
            continue
        if is_stream_target(out) or out.lower().endswith(".mp4") and len(sources) == 1:
            if not is_stream_target(out):
                Path(out).parent.mkdir(parents=True, exist_ok=True)
            targets[name] = (out, None)
        else:
            folder = Path(out) if len(sources) == 1 else Path(out) / f"stream{i + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            targets[name] = (str(folder / "overlay.mp4"), folder)
    ids = {name: (int(s) if s.isdigit() else s) for name, s in zip(names, sequence_ids)}
    try:
        streams = {name: (LiveSource(source, options, realtime=realtime, max_pending=max_pending,
                                     reconnect_s=reconnect_s, read_timeout_s=read_timeout_s),
                          prompts) for name, source in zip(names, sources)}
        session = LiveTracking(client, streams, sequence_ids=ids, keep_images=out is not None,
                               max_frames=max_frames)
    except ValueError as err:
        fail(str(err))
    writers: dict[str, OverlayWriter] = {}
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    stopped = None
    report = err_console if as_json else console
    try:
        with Live(stats_table(session), console=err_console, refresh_per_second=2,
                  transient=False, redirect_stdout=False) as live:
            try:
                for frame in session:
                    _write_outputs(frame, targets, writers, prompts, as_json, draw, Image)
                    live.update(stats_table(session))
            except KeyboardInterrupt:
                stopped = ("Ctrl-C", 130)
            except _Terminated:
                stopped = ("SIGTERM", 143)
            except (TritonLensError, ValueError):
                pass  # every stream's error is in session.errors, reported below
            live.update(stats_table(session))
    finally:
        signal.signal(signal.SIGTERM, previous)
        for writer in writers.values():
            writer.close()
    summary = {name: stats.summary() for name, stats in session.stats.items()}
    if report is err_console:
        err_console.print()  # after the live table's last line
    report.print(_summary_line(session.stats), highlight=False)
    if as_json:
        print(json.dumps({"summary": summary}), file=sys.stderr, flush=True)  # one line, unwrapped
    for name, (target, folder) in targets.items():
        if name in writers:
            report.print(f"{name}: overlay written to {target}"
                         + (f", per-frame masks to {folder}/" if folder else ""), highlight=False)
    for name, err in session.errors.items():
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
    if stopped:
        err_console.print(f"stopped by {stopped[0]}: every stream's sequence was ended",
                          highlight=False)
        raise SystemExit(stopped[1])
    if session.errors:
        raise SystemExit(1)


def _summary_line(stats: dict[str, StreamStats]) -> str:
    lines = []
    for name, s in stats.items():
        lines.append(f"{name}: received {s.received}, tracked {s.tracked}, dropped {s.dropped}"
                     + (f" (resized {s.resized})" if s.resized else "")
                     + f", {s.fps:.2f} frames/s, latency p50 {s.latency_ms(50):.0f} ms, "
                       f"p95 {s.latency_ms(95):.0f} ms")
    return "\n".join(lines)


def _write_outputs(frame: LiveFrame, targets, writers, prompts, as_json, draw, Image) -> None:
    result = frame.result
    if frame.stream in targets:
        target, folder = targets[frame.stream]
        if frame.stream not in writers:
            writers[frame.stream] = OverlayWriter(target)
        shown = prompts.get(frame.source_frame, [])
        writers[frame.stream].write(draw(result, shown),
                                    frame.time if frame.time is not None else frame.arrival)
        if folder is not None:
            for k, obj in enumerate(result.object_ids):
                Image.fromarray(result.masks[k].astype(np.uint8) * 255).save(
                    folder / f"frame{frame.source_frame:05d}_object{int(obj)}.png")
    if as_json:
        print(json.dumps({"source": frame.stream, "frame": result.frame_index,
                          "source_frame": frame.source_frame,
                          "latency_ms": round(frame.latency_s * 1000, 1), "objects": [
                              {"object_id": int(obj), "area": int(result.masks[k].sum()),
                               "object_score": float(result.object_scores[k]),
                               "visible": bool(result.object_scores[k] > 0)}
                              for k, obj in enumerate(result.object_ids)]}), flush=True)
