"""Video frames for the SAM 2 tracker: pre-processing as sam2's video loader does it.
(The synthetic clips of the demo and tests are client-side: ``tritonlens.client.sam2.video``.)

:func:`frame_pixels` is ``sam2.utils.misc._load_img_as_tensor`` followed by the mean/std
normalisation of ``load_video_frames_from_jpg_images``: Pillow ``convert("RGB")``, Pillow
``resize((S, S))`` (Pillow's default filter, bicubic), divide by 255 in float64, cast to
float32, subtract the ImageNet mean and divide by the std. It differs from the image
predictor's transform (torch bilinear antialiased resize, ``sam2_preprocess``), which is why
the video path has its own pre-processing model (``sam2_frame_preprocess``): served frames
equal what ``SAM2VideoPredictor.init_state`` loads from the same JPEG bytes.
"""

from __future__ import annotations

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
