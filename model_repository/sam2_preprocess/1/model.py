"""sam2_preprocess: encoded image bytes -> the FP32 input of SAM 2's image encoder.

Input   ``image``      BYTES [1]: one JPEG, PNG or WebP file's bytes (one image per request).
Outputs ``pixels``     FP32 [1, 3, S, S] (S = the exported image size, e.g. 1024);
        ``orig_size``  INT32 [2]: (height, width) of the decoded image in pixels.

This is sam2's own transform (``sam2.utils.transforms.SAM2Transforms``, what
``SAM2ImagePredictor.set_image`` applies to an RGB uint8 array), op for op in torch:

1. decode with Pillow and ``convert("RGB")`` (grey, palette and alpha images become RGB, as
   sam2's examples do with ``Image.open(path).convert("RGB")``); EXIF orientation is not
   applied (neither does sam2);
2. ``ToTensor``: CHW float32, divided by 255;
3. ``Resize((S, S))`` on the tensor: bilinear, ``align_corners=False``, antialiased
   (torchvision's tensor resize, which sam2 scripts); the aspect ratio is not kept;
4. ``Normalize`` with the ImageNet mean/std given in the config parameters ``pixel_mean``
   and ``pixel_std`` (0.485, 0.456, 0.406 / 0.229, 0.224, 0.225, as in SAM2Transforms).

Bad input fails only its own request (gRPC INVALID_ARGUMENT / HTTP 400) with a message
naming the problem: empty bytes, bytes that are not a JPEG/PNG/WebP image, a corrupt or
truncated file, more than ``max_image_bytes`` bytes, or more than ``max_image_pixels``
pixels (a decompression bomb is refused before decoding). No aspect-ratio bound: the image
goes straight to S x S (a 20000x1 PNG costs what a photo costs, 0.2 s at S = 1024, measured).
"""

import json

import numpy as np
import torch
import torch.nn.functional as F
import triton_python_backend_utils as pb_utils

from tritonlens.serve.errors import error_response
from tritonlens.serve.images import ImageError, decode

def sam2_transform(rgb: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [1, 3, size, size], as SAM2Transforms (module docstring)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)
    x = F.interpolate(x[None], size=[size, size], mode="bilinear", align_corners=False,
                      antialias=True)[0]
    x = x.sub(mean).div(std)
    return x[None].numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.size = int(params["image_size"])
        self.mean = torch.tensor([float(v) for v in params["pixel_mean"].split(",")]).view(3, 1, 1)
        self.std = torch.tensor([float(v) for v in params["pixel_std"].split(",")]).view(3, 1, 1)
        self.max_bytes = int(params.get("max_image_bytes", 64 * 1024 * 1024))
        self.max_pixels = int(params.get("max_image_pixels", 50_000_000))
        torch.set_num_threads(1)

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            try:
                if images.size != 1:
                    raise ImageError(f"send one image per request, not {images.size}")
                image = decode(bytes(images[0]), self.max_bytes, self.max_pixels)
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
                pixels = sam2_transform(rgb, self.size, self.mean, self.std)
                orig_size = np.array(rgb.shape[:2], dtype=np.int32)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("pixels", pixels), pb_utils.Tensor("orig_size", orig_size)]))
            except ImageError as err:
                responses.append(error_response(pb_utils, f"sam2_preprocess: {err}"))
        return responses
