"""What the ``clip_preprocess`` model does: encoded image bytes -> the UINT8 HWC pixels CLIP's
image encoder takes, identical to open_clip's eval transform. Pillow and numpy only (no torch
in the preprocessing stub's process); importable and testable without a server.

:func:`clip_transform` reproduces ``open_clip.transform.image_transform(size,
is_train=False, ...)`` up to (not including) ``ToTensor``, step for step:

1. ``Resize(S)`` of the shorter side (``resize_mode: shortest``; the longer side becomes
   ``int(S * long / short)``, torchvision's rule) or ``Resize((S, S))`` (``squash``), with
   Pillow's BICUBIC (or BILINEAR) filter, exactly the call torchvision makes on a PIL image;
   an image already at the target size is not resampled, as in torchvision;
2. ``CenterCrop(S)``: top = round((h - S) / 2), left = round((w - S) / 2);
3. ``convert("RGB")`` *after* resizing and cropping, as open_clip's ``MaybeConvertMode``;
4. ``ToTensor`` + ``Normalize`` happen inside ``clip_image_encoder``'s graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image

from tritonlens.serve.images import (DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_BYTES,
                                     DEFAULT_MAX_PIXELS, ImageError, decode)
from tritonlens.serve.clip import names
from tritonlens.serve.clip.names import DEFAULT_INTERPOLATION, DEFAULT_RESIZE_MODE, RESIZE_MODES
from tritonlens.serve.model_config import ConfigError, ModelSpec

# open_clip's ``interpolation`` names -> Pillow's resampling filters (torchvision's choice).
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}  # names.INTERPOLATIONS


def clip_transform(image: Image.Image, size: int, resize_mode: str = DEFAULT_RESIZE_MODE,
                   resample: int = Image.BICUBIC) -> np.ndarray:
    """open_clip's eval transform up to (not including) ToTensor (module docstring).

    Args:
        image: a decoded Pillow image, any mode (converted to RGB after the crop).
        size: S, the encoder's input size in pixels.
        resize_mode: ``shortest`` or ``squash`` (open_clip's ``resize_mode``).
        resample: a Pillow filter (:data:`FILTERS`).

    Returns:
        uint8 [S, S, 3], RGB.
    """
    width, height = image.size
    if resize_mode == "squash":
        target = (size, size)
    else:  # "shortest", torchvision's _compute_resized_output_size with an int size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        target = (new_short, new_long) if width <= height else (new_long, new_short)
    if target != (width, height):
        image = image.resize(target, resample)
    width, height = image.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class ClipPreprocess:
    """One request's images -> pixels, with the bounds of :func:`tritonlens.serve.images.decode`.

    Attributes:
        size: S in pixels. resize_mode / interpolation: open_clip's preprocess config.
        max_bytes / max_pixels / max_aspect_ratio: refusal bounds of each image.
        apply_exif_orientation: rotate photos as their EXIF tag says (open_clip does not).
        jpeg_draft: decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
            sides >= 2 S (``decode``'s ``draft``), so a large photo costs about what a
            2 S one does; pixels then differ from open_clip's full decode (a 12 MP photo:
            mean 0.2, max 3 levels of 255). False (the default) keeps exact parity.
    """

    size: int
    resize_mode: str = DEFAULT_RESIZE_MODE
    interpolation: str = DEFAULT_INTERPOLATION
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    apply_exif_orientation: bool = False
    jpeg_draft: bool = False

    @classmethod
    def from_config(cls, spec: ModelSpec) -> "ClipPreprocess":
        """The settings in ``clip_preprocess``'s config parameters (``image_size``,
        ``resize_mode``, ``interpolation``, ``max_image_bytes``, ``max_image_pixels``,
        ``max_image_aspect_ratio``, ``apply_exif_orientation``, ``jpeg_draft``).

        Raises:
            ConfigError: ``image_size`` missing, or an unknown resize mode or interpolation.
        """
        settings = cls(
            size=spec.integer(names.IMAGE_SIZE),
            resize_mode=spec.text(names.RESIZE_MODE, DEFAULT_RESIZE_MODE),
            interpolation=spec.text(names.INTERPOLATION, DEFAULT_INTERPOLATION),
            max_bytes=spec.integer("max_image_bytes", DEFAULT_MAX_BYTES),
            max_pixels=spec.integer("max_image_pixels", DEFAULT_MAX_PIXELS),
            max_aspect_ratio=spec.number("max_image_aspect_ratio", DEFAULT_MAX_ASPECT_RATIO),
            apply_exif_orientation=spec.flag(names.APPLY_EXIF_ORIENTATION, False),
            jpeg_draft=spec.flag(names.JPEG_DRAFT, False))
        if settings.resize_mode not in RESIZE_MODES or settings.interpolation not in FILTERS:
            raise ConfigError(f"{spec.name}: resize_mode {settings.resize_mode!r} / interpolation "
                              f"{settings.interpolation!r}: one of {', '.join(RESIZE_MODES)} / "
                              f"{', '.join(FILTERS)}")
        return settings

    def __call__(self, images: Iterable[bytes]) -> np.ndarray:
        """Encoded images (JPEG/PNG/WebP bytes) -> uint8 [N, S, S, 3].

        Raises:
            ImageError: the first image that cannot be used, as "image <index> of the
                request: <why>".
        """
        pixels = []
        draft = (2 * self.size, 2 * self.size) if self.jpeg_draft else None
        for index, data in enumerate(images):
            try:
                image = decode(data, self.max_bytes, self.max_pixels, self.apply_exif_orientation,
                               self.max_aspect_ratio, draft)
                pixels.append(clip_transform(image, self.size, self.resize_mode,
                                             FILTERS[self.interpolation]))
            except ImageError as err:
                raise ImageError(f"image {index} of the request: {err}") from None
        return np.stack(pixels)
