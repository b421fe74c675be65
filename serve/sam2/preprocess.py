"""What the ``sam2_preprocess`` model does: encoded image bytes -> the FP32 input of SAM 2's
image encoder, with sam2's own transform. Importable and testable without a server.

:func:`sam2_transform` is ``sam2.utils.transforms.SAM2Transforms`` (what
``SAM2ImagePredictor.set_image`` applies to an RGB uint8 array), op for op in torch:

1. ``ToTensor``: CHW float32, divided by 255;
2. ``Resize((S, S))`` on the tensor: bilinear, ``align_corners=False``, antialiased
   (torchvision's tensor resize, which sam2 scripts); the aspect ratio is not kept;
3. ``Normalize`` with the ImageNet mean/std (0.485, 0.456, 0.406 / 0.229, 0.224, 0.225, as in
   SAM2Transforms; the export writes them into the config as ``pixel_mean`` / ``pixel_std``).

The video path prepares frames differently (Pillow resize, as ``SAM2VideoPredictor`` loads
them): see :mod:`tritonlens.serve.sam2.frames`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tritonlens.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, decode
from tritonlens.serve.model_config import ModelSpec


def sam2_transform(rgb: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> float32 [1, 3, size, size], as SAM2Transforms (module docstring).

    ``mean`` and ``std`` are float32 [3, 1, 1] on the 0-1 scale.
    """
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)
    x = F.interpolate(x[None], size=[size, size], mode="bilinear", align_corners=False,
                      antialias=True)[0]
    x = x.sub(mean).div(std)
    return x[None].numpy()


def one_item(items: np.ndarray, what: str = "image") -> bytes:
    """The only element of a request's BYTES input (any shape), as bytes.

    Raises:
        ImageError: the input holds more or fewer than one element ("send one image per
            request, not 3").
    """
    items = items.reshape(-1)
    if items.size != 1:
        raise ImageError(f"send one {what} per request, not {items.size}")
    return bytes(items[0])


@dataclass(frozen=True)
class Sam2Preprocess:
    """One image's bytes -> (pixels, original size), with the bounds of
    :func:`tritonlens.serve.images.decode` (no aspect-ratio bound: the image goes straight
    to S x S, so an extreme ratio costs what a photo costs).

    Attributes:
        size: S in pixels. mean / std: the normalisation, 0-1 scale, per RGB channel.
        max_bytes / max_pixels: refusal bounds.
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_config(cls, spec: ModelSpec) -> "Sam2Preprocess":
        """The settings in ``sam2_preprocess``'s config parameters (``image_size``,
        ``pixel_mean``, ``pixel_std``, ``max_image_bytes``, ``max_image_pixels``).

        Raises:
            ConfigError: a required parameter is missing or malformed.
        """
        return cls(size=spec.integer("image_size"), mean=spec.numbers("pixel_mean"),
                   std=spec.numbers("pixel_std"),
                   max_bytes=spec.integer("max_image_bytes", DEFAULT_MAX_BYTES),
                   max_pixels=spec.integer("max_image_pixels", DEFAULT_MAX_PIXELS))

    def __call__(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """JPEG/PNG/WebP bytes -> (float32 [1, 3, S, S], int32 [2] (height, width)).

        Grey, palette and alpha images become RGB (``convert("RGB")``, as sam2's examples
        do); EXIF orientation is not applied (neither does sam2).

        Raises:
            ImageError: the image cannot be used (see ``decode``).
        """
        image = decode(data, self.max_bytes, self.max_pixels)
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (sam2_transform(rgb, self.size, mean, std),
                np.array(rgb.shape[:2], dtype=np.int32))
