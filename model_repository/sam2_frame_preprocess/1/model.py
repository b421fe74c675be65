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

from tritonlens.serve.errors import error_response
from tritonlens.serve.images import ImageError
from tritonlens.serve.model_config import read_model_config
from tritonlens.serve.sam2.frames import preprocess_frame
from tritonlens.serve.sam2.preprocess import one_item


class TritonPythonModel:
    def initialize(self, args):
        spec = read_model_config(args["model_config"])
        self.size = spec.integer("image_size")
        self.max_bytes = spec.integer("max_image_bytes", 64 << 20)
        self.max_pixels = spec.integer("max_image_pixels", 50_000_000)
        torch.set_num_threads(1)

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            try:
                pixels, size = preprocess_frame(one_item(data, "frame"), self.size,
                                                self.max_bytes, self.max_pixels)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("pixels", pixels), pb_utils.Tensor("orig_size", size)]))
            except ImageError as err:
                responses.append(error_response(pb_utils, f"sam2_frame_preprocess: {err}"))
        return responses
