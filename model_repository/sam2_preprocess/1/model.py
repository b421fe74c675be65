"""sam2_preprocess: encoded image bytes -> the FP32 input of SAM 2's image encoder.

Input   ``image``      BYTES [1]: one JPEG, PNG or WebP file's bytes (one image per request).
Outputs ``pixels``     FP32 [1, 3, S, S] (S = the exported image size, e.g. 1024);
        ``orig_size``  INT32 [2]: (height, width) of the decoded image in pixels.

This is sam2's own transform (``sam2.utils.transforms.SAM2Transforms``, what
``SAM2ImagePredictor.set_image`` applies to an RGB uint8 array): decode with Pillow,
``convert("RGB")``, then ``tritonlens.serve.sam2.preprocess.sam2_transform`` (ToTensor,
antialiased bilinear resize to S x S, Normalize with the config's ``pixel_mean`` and
``pixel_std``; its module docstring gives the steps; unit-tested against sam2). This file
only reads the config and the tensors.

Bad input fails only its own request (gRPC INVALID_ARGUMENT / HTTP 400) with a message
naming the problem: empty bytes, bytes that are not a JPEG/PNG/WebP image, a corrupt or
truncated file, more than ``max_image_bytes`` bytes, or more than ``max_image_pixels``
pixels (a decompression bomb is refused before decoding). No aspect-ratio bound: the image
goes straight to S x S (a 20000x1 PNG costs what a photo costs, 0.2 s at S = 1024, measured).
"""

import torch
import triton_python_backend_utils as pb_utils

from tritonlens.serve.errors import input_array, respond_each
from tritonlens.serve.model_config import read_model_config
from tritonlens.serve.sam2.preprocess import Sam2Preprocess, one_item


class TritonPythonModel:
    def initialize(self, args):
        self.preprocess = Sam2Preprocess.from_config(read_model_config(args["model_config"]))
        torch.set_num_threads(1)

    def _handle(self, request):
        pixels, orig_size = self.preprocess(one_item(input_array(pb_utils, request, "image")))
        return {"pixels": pixels, "orig_size": orig_size}

    def execute(self, requests):
        return respond_each(pb_utils, requests, "sam2_preprocess", self._handle)
