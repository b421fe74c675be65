"""Video for SAM 2's tracker on the client side: reading a video file or a folder of frames,
encoding a frame as JPEG before it is sent, and the synthetic clips (a camera move over a
real photo) that the demo, the tests and the benchmarks use.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from tritonlens.client.base import TritonLensError


def encode_frame(frame: np.ndarray | bytes, quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (bytes pass through)."""
    if isinstance(frame, (bytes, bytearray)):
        return bytes(frame)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video file (PyAV), a folder of images (sorted by name) or a live source
    (every frame, ``tritonlens.client.sam2.live``) into RGB frames.

    Raises:
        TritonLensError: the path does not exist, or PyAV cannot decode it (a live source:
            ``LiveSourceError`` when it cannot be opened or is lost).
    """
    from tritonlens.client.sam2.live import LiveSource, is_live

    if is_live(path):
        source = LiveSource(path, realtime=False)
        try:
            yield from (frame.rgb(source.size) for frame in source.frames())
        finally:
            source.close()
        return
    path = Path(path)
    if path.is_dir():
        for file in sorted(p for p in path.iterdir()
                           if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")):
            yield np.asarray(Image.open(file).convert("RGB"))
        return
    if not path.is_file():
        raise TritonLensError(f"no such video file or frame folder: {path}")
    try:
        import av
    except ImportError:
        raise TritonLensError("decoding video files needs PyAV: pip install 'tritonlens[video]'") from None
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as err:
        raise TritonLensError(f"cannot decode video {path}: {err}") from None


def pan_zoom_frames(photo: np.ndarray, count: int, size: tuple[int, int] = (240, 320),
                    zoom: float = 1.35) -> list[np.ndarray]:
    """A camera move over a real photo: ``count`` uint8 [H, W, 3] frames (``size`` = H, W)
    panning left to right while zooming in by ``zoom`` (crops resized with Pillow's
    bicubic filter). Used for the tests and the docs' demo clip."""
    h, w = photo.shape[:2]
    out_h, out_w = size
    frames = []
    image = Image.fromarray(photo)
    for i in range(count):
        f = i / max(1, count - 1)
        scale = 1.0 + (zoom - 1.0) * f
        crop_h = min(h, int(round(h / scale)))
        crop_w = min(w, int(round(crop_h * out_w / out_h)))
        x0 = int(round((w - crop_w) * (0.2 + 0.6 * f)))
        y0 = (h - crop_h) // 2
        crop = image.crop((x0, y0, x0 + crop_w, y0 + crop_h)).resize((out_w, out_h), Image.BICUBIC)
        frames.append(np.asarray(crop))
    return frames


def write_clip(path: str, frames: list[np.ndarray], fps: int = 12) -> None:
    """Encode uint8 [H, W, 3] frames (even H, W) to an H.264 mp4 with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_demo_clip(path: str, photo: str = "chelsea", count: int = 48, fps: int = 12) -> str:
    """The demo clip of docs/sam2-video.md: a pan/zoom over scikit-image's photo ``photo`` (a
    real photograph, e.g. ``chelsea``, the cat) as a 320x240 H.264 mp4 of ``count`` frames."""
    import skimage.data

    write_clip(path, pan_zoom_frames(getattr(skimage.data, photo)(), count), fps)
    return str(path)


if __name__ == "__main__":  # python -m tritonlens.client.sam2.video clip.mp4 [photo] [frames]
    import sys

    args = sys.argv[1:] or ["clip.mp4"]
    print(write_demo_clip(args[0], *(args[1:2] or ["chelsea"]), *(map(int, args[2:3]))))
