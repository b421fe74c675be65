"""sam2_frame_preprocess: one encoded video frame -> the image encoder's FP32 input.

Input   ``image``      BYTES [1]: one JPEG, PNG or WebP frame.
Outputs ``pixels``     FP32 [1, 3, S, S]; ``orig_size`` INT32 [2]: (height, width).

The frame is prepared exactly as ``SAM2VideoPredictor.init_state`` loads frames
(``tritonlens.serve.sam2.frames.frame_pixels``: Pillow RGB, Pillow resize to S x S,
/255, ImageNet mean/std), so served tracking equals the offline predictor on the same
JPEG bytes. (The image path's ``sam2_preprocess`` uses sam2's image transform, a torch
antialiased bilinear resize: slightly different pixels.) A frame that cannot be decoded
fails only its own request, as INVALID_ARG (gRPC INVALID_ARGUMENT / HTTP 400).
"""

import torch
import triton_python_backend_utils as pb_utils

from tritonlens.serve.errors import input_array, respond_each
from tritonlens.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from tritonlens.serve.model_config import read_model_config
from tritonlens.serve.sam2.frames import preprocess_frame
from tritonlens.serve.sam2.preprocess import one_item


class TritonPythonModel:
    def initialize(self, args):
        spec = read_model_config(args["model_config"])
        self.size = spec.integer("image_size")
        self.max_bytes = spec.integer("max_image_bytes", DEFAULT_MAX_BYTES)
        self.max_pixels = spec.integer("max_image_pixels", DEFAULT_MAX_PIXELS)
        torch.set_num_threads(1)

    def _handle(self, request):
        data = one_item(input_array(pb_utils, request, "image"), "frame")
        pixels, orig_size = preprocess_frame(data, self.size, self.max_bytes, self.max_pixels)
        return {"pixels": pixels, "orig_size": orig_size}

    def execute(self, requests):
        return respond_each(pb_utils, requests, "sam2_frame_preprocess", self._handle)
