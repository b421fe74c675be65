"""clip_preprocess: encoded image bytes -> the UINT8 HWC pixels CLIP's image encoder takes.

Input  ``image``  BYTES [1] per batch item: a JPEG, PNG or WebP file's bytes.
Output ``pixels`` UINT8 [S, S, 3] (S = the model's image size, e.g. 224), RGB.

This reproduces open_clip's eval transform (``open_clip.transform.image_transform`` with
``is_train=False``) step for step, with Pillow only (no torch in this process):

1. ``Resize(S)`` of the shorter side (``resize_mode: shortest``; the longer side becomes
   ``int(S * long / short)``, torchvision's rule) or ``Resize((S, S))`` (``squash``), with
   Pillow's BICUBIC (or BILINEAR) filter, exactly the call torchvision makes on a PIL image;
   an image already at the target size is not resampled, as in torchvision;
2. ``CenterCrop(S)``: top = round((h - S) / 2), left = round((w - S) / 2);
3. ``convert("RGB")`` *after* resizing and cropping, as open_clip's ``MaybeConvertMode``;
4. ``ToTensor`` + ``Normalize`` happen inside ``clip_image_encoder``'s graph.

EXIF orientation is NOT applied, because open_clip does not apply it (``Image.open`` keeps
the stored orientation); set the config parameter ``apply_exif_orientation`` to "true" to
rotate photos as cameras meant them (then results differ from open_clip for such photos).

Bad input fails only its own request (gRPC INVALID_ARGUMENT / HTTP 400) with a message
naming the problem: empty bytes, bytes that are not a JPEG/PNG/WebP image, a corrupt or
truncated file, more than ``max_image_bytes`` bytes, more than ``max_image_pixels`` pixels
(a decompression bomb is refused before decoding), or a longer side more than
``max_image_aspect_ratio`` (default 100) times the shorter one, also refused from the
header: the shortest-side resize would otherwise build an S x (S * ratio) intermediate
(a 140-byte 20000x1 PNG cost 15.6 s and 4 GiB).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image

from tritonlens.serve.errors import error_response
from tritonlens.serve.images import DEFAULT_MAX_ASPECT_RATIO, ImageError, decode

FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def clip_transform(image: Image.Image, size: int, resize_mode: str, resample: int) -> np.ndarray:
    """open_clip's eval transform up to (not including) ToTensor: [size, size, 3] uint8."""
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


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.size = int(params["image_size"])
        self.resize_mode = params.get("resize_mode", "shortest")
        self.resample = FILTERS[params.get("interpolation", "bicubic")]
        self.max_bytes = int(params.get("max_image_bytes", 64 * 1024 * 1024))
        self.max_pixels = int(params.get("max_image_pixels", 50_000_000))
        self.exif = params.get("apply_exif_orientation", "false").lower() == "true"
        self.max_aspect_ratio = float(params.get("max_image_aspect_ratio",
                                                 DEFAULT_MAX_ASPECT_RATIO))

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            try:
                pixels = []
                for index, item in enumerate(images.reshape(-1)):
                    try:
                        image = decode(bytes(item), self.max_bytes, self.max_pixels, self.exif,
                                       self.max_aspect_ratio)
                        pixels.append(clip_transform(image, self.size, self.resize_mode,
                                                     self.resample))
                    except ImageError as err:
                        raise ImageError(f"image {index} of the request: {err}") from None
                out = pb_utils.Tensor("pixels", np.stack(pixels))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except ImageError as err:
                responses.append(error_response(pb_utils, f"clip_preprocess: {err}"))
        return responses
