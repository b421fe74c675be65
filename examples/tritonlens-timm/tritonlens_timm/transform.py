"""timm's eval transform with Pillow and numpy only (no torch in the preprocessing stub).

``timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))`` applied to
``Image.open(path).convert("RGB")`` (how timm's readers and model cards load an image) is,
for ``is_training=False`` (``transforms_imagenet_eval``):

1. ``convert("RGB")`` first;
2. resize with the config's ``interpolation`` (Pillow's filter of that name, the call
   torchvision makes on a PIL image) to ``scale = floor(size / crop_pct)`` per side:
   ``crop_mode="center"`` with a square scale resizes the shorter side to it (torchvision's
   ``Resize(int)``: the longer side becomes ``int(scale * long / short)``), with a
   non-square scale keeps the aspect ratio so that the image covers it (timm's
   ``ResizeKeepRatio``, each side ``round(side / min(ratio_h, ratio_w))``);
   ``crop_mode="squash"`` resizes to exactly scale x scale; an image already at the target
   size is not resampled (torchvision);
3. ``CenterCrop(size)``: zero padding first where the image is smaller, then top =
   round((h - H) / 2), left = round((w - W) / 2) (torchvision);
4. ``ToTensor`` and ``Normalize(mean, std)`` run inside ``timm_model``'s graph.

``crop_mode="border"`` (letterboxing), ``crop_border_pixels`` and NaFlex are not supported;
the export refuses models that use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# timm's interpolation names (str_to_interp_mode) -> the Pillow filters torchvision uses.
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
CROP_MODES = ("center", "squash")
DEFAULT_CROP_PCT = 0.875  # timm.data.constants.DEFAULT_CROP_PCT, used when crop_pct is None


@dataclass(frozen=True)
class EvalTransform:
    """timm's eval transform up to (not including) ``ToTensor``: RGB UINT8 [height, width, 3].

    Attributes:
        height, width: the model's input size (``input_size[1:]`` of its data config).
        crop_pct: the share of the resized image the crop keeps (0.875 by default).
        crop_mode: ``center`` or ``squash`` (:data:`CROP_MODES`).
        interpolation: a key of :data:`RESAMPLE`.
    """

    height: int
    width: int
    crop_pct: float = DEFAULT_CROP_PCT
    crop_mode: str = "center"
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode {self.crop_mode!r} is not supported "
                             f"(supported: {', '.join(CROP_MODES)})")
        if self.interpolation not in RESAMPLE:
            raise ValueError(f"interpolation {self.interpolation!r} is not supported "
                             f"(supported: {', '.join(RESAMPLE)})")
        if self.height < 1 or self.width < 1 or not self.crop_pct > 0:
            raise ValueError(f"bad size {self.height}x{self.width} or crop_pct {self.crop_pct}")

    @classmethod
    def from_data_config(cls, config: dict) -> "EvalTransform":
        """From ``timm.data.resolve_data_config``'s dict (input_size, crop_pct, ...).

        Raises:
            ValueError: a crop mode or interpolation this transform does not reproduce.
        """
        _, height, width = config["input_size"]
        return cls(int(height), int(width), float(config.get("crop_pct") or DEFAULT_CROP_PCT),
                   config.get("crop_mode") or "center", config.get("interpolation", "bilinear"))

    def parameters(self) -> dict[str, str]:
        """As string parameters of ``timm_preprocess``'s config (read by :meth:`from_parameters`)."""
        return {"height": str(self.height), "width": str(self.width),
                "crop_pct": repr(self.crop_pct), "crop_mode": self.crop_mode,
                "interpolation": self.interpolation}

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> "EvalTransform":
        return cls(int(params["height"]), int(params["width"]), float(params["crop_pct"]),
                   params["crop_mode"], params["interpolation"])

    def resize_target(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) an image of this size is resized to, before the crop."""
        scale_h = math.floor(self.height / self.crop_pct)
        scale_w = math.floor(self.width / self.crop_pct)
        if self.crop_mode == "squash":
            return scale_w, scale_h
        if scale_h == scale_w:  # torchvision's _compute_resized_output_size with an int size
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = scale_h, int(scale_h * long / short)
            return (new_short, new_long) if width <= height else (new_long, new_short)
        ratio = min(height / scale_h, width / scale_w)  # ResizeKeepRatio, longest=0
        return round(width / ratio), round(height / ratio)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB UINT8 [height, width, 3] of a decoded Pillow image (any mode)."""
        image = image.convert("RGB")
        target = self.resize_target(*image.size)
        if target != image.size:
            image = image.resize(target, RESAMPLE[self.interpolation])
        width, height = image.size
        if self.width > width or self.height > height:  # torchvision pads before cropping
            left, top = max(self.width - width, 0) // 2, max(self.height - height, 0) // 2
            padded = Image.new("RGB", (max(width, self.width), max(height, self.height)))
            padded.paste(image, (left, top))
            image = padded
            width, height = image.size
        top = int(round((height - self.height) / 2.0))
        left = int(round((width - self.width) / 2.0))
        image = image.crop((left, top, left + self.width, top + self.height))
        return np.asarray(image, dtype=np.uint8)
