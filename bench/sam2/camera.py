"""FFmpeg as a camera for live tracking (bench/sam2/live.py, tests/server/test_live_track.py): a
real clip (a pan over a scikit-image photo) encoded as H.264 in MPEG-TS, sent in real time
(``ffmpeg -re``, packets copied, so a receiver decodes exactly the frames a reader of the
file decodes) over UDP or served over HTTP; and the socket checks that tell when a receiver
or sender is ready."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import av

from tritonlens.client.sam2.video import pan_zoom_frames

# A box around the cat's head in the 320x240 clip (the tracking tests' schedule's box).
BOX = "0:40,60,150,200"


def ffmpeg() -> str:
    """The distribution's ffmpeg (``make setup`` installs it)."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("ffmpeg is not installed (make setup installs it: "
                           "apt-get install ffmpeg)")
    return path


def write_ts_clip(path: Path, count: int, fps: int, photo: str = "chelsea") -> Path:
    """``count`` frames of a pan/zoom over ``photo`` as H.264 (crf 10, no B-frames, a
    keyframe every 12 frames, as a camera sends) in MPEG-TS at ``fps``."""
    import skimage.data

    frames = pan_zoom_frames(getattr(skimage.data, photo)(), count)
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "tune": "zerolatency", "preset": "veryfast", "g": "12"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bound(port: int, table: str, state: str | None) -> bool:
    """Whether /proc/net/{table} lists a socket on 127.0.0.1:port (in ``state``, hex)."""
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and (state is None or fields[3] == state):
            return True
    return False


def wait_bound(port: int, tcp: bool = False, timeout: float = 60.0) -> None:
    """Wait until a UDP socket is bound (a receiver listens) or a TCP one listens on ``port``."""
    deadline = time.monotonic() + timeout
    while not _bound(port, "tcp" if tcp else "udp", "0A" if tcp else None):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port} after {timeout:g} s")
        time.sleep(0.1)


def send_udp(clip: Path, port: int, loops: int = 0) -> subprocess.Popen:
    """FFmpeg sending ``clip`` in real time as MPEG-TS to udp://127.0.0.1:port (``loops``
    extra times, -1 forever)."""
    return subprocess.Popen([ffmpeg(), "-hide_banner", "-loglevel", "error", "-re",
                             "-stream_loop", str(loops), "-i", str(clip), "-c", "copy",
                             "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
                            stdin=subprocess.DEVNULL)


def serve_http(clip: Path, port: int) -> subprocess.Popen:
    """FFmpeg as an HTTP server: the first client of http://127.0.0.1:port/live.ts gets
    ``clip`` as an MPEG-TS stream in real time. Returns once it listens."""
    process = subprocess.Popen([ffmpeg(), "-hide_banner", "-loglevel", "error", "-re", "-i",
                                str(clip), "-c", "copy", "-f", "mpegts", "-listen", "1",
                                f"http://127.0.0.1:{port}/live.ts"], stdin=subprocess.DEVNULL)
    wait_bound(port, tcp=True)
    return process


def stop(process: subprocess.Popen) -> None:
    """Stop a process this module started (SIGTERM, then SIGKILL)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
