"""Video frames for the SAM 2 tracker: pre-processing as sam2's video loader does it, and a
real clip made from a real photo (no video ships with the project's dependencies).

:func:`frame_pixels` is ``sam2.utils.misc._load_img_as_tensor`` followed by the mean/std
normalisation of ``load_video_frames_from_jpg_images``: Pillow ``convert("RGB")``, Pillow
``resize((S, S))`` (Pillow's default filter, bicubic), divide by 255 in float64, cast to
float32, subtract the ImageNet mean and divide by the std. It differs from the image
predictor's transform (torch bilinear antialiased resize, ``sam2_preprocess``), which is why
the video path has its own pre-processing model (``sam2_frame_preprocess``): served frames
equal what ``SAM2VideoPredictor.init_state`` loads from the same JPEG bytes.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from tritonlens.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, decode

# load_video_frames' defaults (sam2/utils/misc.py): ImageNet mean and std.
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)


class FrameError(ImageError):
    """An encoded frame that cannot be decoded; the message is meant for the client."""


def decode_frame(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Encoded JPEG/PNG/WebP bytes -> an RGB PIL image (``tritonlens.serve.images.decode``).

    Raises:
        FrameError: empty, too many bytes, too many pixels (checked before decoding), not an
            image, truncated or corrupt.
    """
    try:
        return decode(data, max_bytes, max_pixels).convert("RGB")
    except ImageError as err:
        raise FrameError(str(err)) from None


def frame_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> fp32 [3, size, size], exactly as SAM2VideoPredictor loads a frame
    (module docstring)."""
    array = np.array(image.convert("RGB").resize((size, size))) / 255.0
    x = torch.from_numpy(array).permute(2, 0, 1).to(torch.float32)
    mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
    x -= mean
    x /= std
    return x


def preprocess_frame(data: bytes, size: int, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """What ``sam2_frame_preprocess`` does with one frame: JPEG/PNG/WebP bytes ->
    (float32 [1, 3, size, size] as :func:`frame_pixels`, int32 [2] (height, width)).

    Raises:
        FrameError: as :func:`decode_frame`.
    """
    image = decode_frame(data, max_bytes, max_pixels)
    return (frame_pixels(image, size)[None].numpy(),
            np.array([image.height, image.width], dtype=np.int32))


def pan_zoom_frames(photo: np.ndarray, count: int, size: tuple[int, int] = (240, 320),
                    zoom: float = 1.35) -> list[np.ndarray]:
    """A camera move over a real photo: ``count`` uint8 [H, W, 3] frames (``size`` = H, W)
    panning left to right while zooming in by ``zoom`` (crops resized with Pillow's
    bicubic filter). Used for the tests and the README demo clip."""
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


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


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
    """The README's demo clip: a pan/zoom over scikit-image's photo ``photo`` (a real
    photograph, e.g. ``chelsea``, the cat) as a 320x240 H.264 mp4 of ``count`` frames."""
    import skimage.data

    write_clip(path, pan_zoom_frames(getattr(skimage.data, photo)(), count), fps)
    return str(path)


if __name__ == "__main__":  # python -m tritonlens.serve.sam2.frames clip.mp4 [photo] [frames]
    import sys

    args = sys.argv[1:] or ["clip.mp4"]
    print(write_demo_clip(args[0], *(args[1:2] or ["chelsea"]), *(map(int, args[2:3]))))
