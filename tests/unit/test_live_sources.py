"""Live sources without a server (client/sam2/live.py, live_cli.py): real clips decoded by
PyAV, the drop policy's counts, a resolution change mid-stream, a lost source named, and
the overlay writer's timestamps."""

from __future__ import annotations

import socket
import time

import av
import numpy as np
import pytest
import skimage.data

from tritonlens.client.sam2.live import LiveSource, LiveSourceError, is_live
from tritonlens.client.sam2.live_cli import OverlayWriter, is_stream_target, stream_names
from tritonlens.client.sam2.video import read_video
from tritonlens.client.sam2.video import pan_zoom_frames


def write_ts(path, size=(240, 320), count=8, fps=25, format="mpegts", options=None) -> str:
    """A pan/zoom clip over a real photo, H.264 in MPEG-TS (or ``format``, e.g. hls)."""
    frames = pan_zoom_frames(skimage.data.chelsea(), count, size=size)
    with av.open(str(path), "w", format=format, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def test_live_sources_are_told_from_files():
    for source in ("rtsp://cam/stream", "HTTP://cam/live.ts", "udp://0.0.0.0:5000",
                   "srt://host:9000?mode=caller", "/dev/video0", "https://h/index.m3u8"):
        assert is_live(source), source
    for source in ("clip.mp4", "frames/", "/data/video.ts", "file:///x.mp4"):
        assert not is_live(source), source
    assert is_stream_target("udp://127.0.0.1:5001") and not is_stream_target("out/overlay.mp4")
    assert stream_names(["a", "b", "a"]) == ["a", "b", "a#2"]


def test_a_file_gives_every_frame_as_read_video(tmp_path):
    clip = write_ts(tmp_path / "clip.ts", count=10)
    source = LiveSource(clip, max_pending=1)  # the reader waits for the consumer
    got = []
    for frame in source.frames():
        time.sleep(0.02)
        got.append(frame.rgb(source.size))
    expected = list(read_video(clip))
    assert len(got) == len(expected) == 10
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert (source.received, source.dropped) == (10, 0)


def test_real_time_drops_the_oldest_and_counts(tmp_path):
    """A file read in real time (25 fps) by a consumer that takes 0.2 s a frame: the
    newest frames are kept, in order, and received = taken + dropped."""
    clip = write_ts(tmp_path / "clip.ts", count=25)
    source = LiveSource(clip, realtime=True, max_pending=1)
    taken = []
    for frame in source.frames():
        taken.append(frame.index)
        time.sleep(0.2)
    source.close()
    assert source.received == 25
    assert source.dropped > 0 and len(taken) + source.dropped == 25
    assert taken == sorted(taken) and taken[0] == 0


def test_resolution_change_is_scaled_to_the_first_size(tmp_path, caplog):
    """Two MPEG-TS clips of different sizes back to back (a camera reconfigured): every
    frame comes out at the first size and the change is counted and named."""
    parts = [write_ts(tmp_path / "a.ts", (240, 320), 5), write_ts(tmp_path / "b.ts", (120, 160), 4)]
    both = tmp_path / "both.ts"
    both.write_bytes(b"".join(open(part, "rb").read() for part in parts))
    source = LiveSource(str(both))
    shapes = [frame.rgb(source.size).shape for frame in source.frames()]
    assert shapes == [(240, 320, 3)] * 9
    assert source.resized == 4
    assert "frame size changed from 320x240 to 160x120 at frame 5" in caplog.text


def test_lost_and_missing_sources_are_named(tmp_path):
    with socket.socket() as sock:  # a TCP port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/live.ts"
    source = LiveSource(url, reconnect_s=1.5, open_timeout_s=1, read_timeout_s=1)
    start = time.monotonic()
    with pytest.raises(LiveSourceError, match=rf"^{url}: no frame from this source: no frame "
                                              r"for [\d.]+ s "
                                              r"after \d+ reconnect attempt"):
        list(source.frames())
    assert time.monotonic() - start < 30  # bounded by reconnect_s (+ one open)
    with pytest.raises(LiveSourceError, match="no such video file, frame folder or live source"):
        list(LiveSource(str(tmp_path / "absent.mp4")).frames())
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        LiveSource("udp://127.0.0.1:5000", max_pending=0)


def test_overlay_writer_keeps_the_frames_times(tmp_path):
    """Frames written at irregular times (dropped frames between them) play at those times."""
    path = tmp_path / "overlay.mp4"
    writer = OverlayWriter(str(path))
    times = [10.0, 10.2, 10.9, 11.0, 12.5]
    for i, t in enumerate(times):
        writer.write(np.full((240, 320, 3), i * 40, np.uint8), t)
    writer.close()
    with av.open(str(path)) as container:
        shown = [frame.time for frame in container.decode(video=0)]
    assert shown == pytest.approx([t - times[0] for t in times], abs=0.002)


def test_a_finite_http_stream_is_read_once(tmp_path):
    """An HLS VOD playlist over HTTP (it has a duration) ends at its end: it is not
    reconnected and replayed as a live stream that ended would be."""
    import functools
    import http.server
    import threading

    write_ts(tmp_path / "index.m3u8", count=12, fps=12, format="hls",
             options={"hls_time": "1", "hls_list_size": "0"})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = LiveSource(f"http://127.0.0.1:{server.server_port}/index.m3u8",
                            realtime=False, reconnect_s=5)
        assert source.live
        assert sum(1 for _ in source.frames()) == 12 == source.received
    finally:
        server.shutdown()
        server.server_close()
