"""timm_preprocess: encoded image bytes -> the UINT8 HWC pixels timm_model takes.

Input  ``image``  BYTES [1] per batch item: a JPEG, PNG or WebP file's bytes.
Output ``pixels`` UINT8 [H, W, 3], RGB (H x W = the model's input size).

timm's eval transform (``resolve_data_config`` + ``create_transform``, is_training=False)
up to ``ToTensor``, with Pillow only: ``tritonlens_timm.transform.EvalTransform``, built
from this model's config parameters (height, width, crop_pct, crop_mode, interpolation).
Decoding and its limits are tritonlens' (``tritonlens.serve.images.decode``): a bad image
fails only its own request (gRPC INVALID_ARGUMENT / HTTP 400) with the reason.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonlens.serve.errors import error_response
from tritonlens.serve.images import (DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS,
                                     ImageError, decode)
from tritonlens.serve.model_config import read_model_config
from tritonlens_timm.transform import EvalTransform


class TritonPythonModel:
    def initialize(self, args):
        self.spec = read_model_config(args["model_config"])
        self.transform = EvalTransform.from_parameters(self.spec.parameters)
        self.max_bytes = self.spec.integer("max_image_bytes", DEFAULT_MAX_BYTES)
        self.max_pixels = self.spec.integer("max_image_pixels", DEFAULT_MAX_PIXELS)
        self.max_aspect_ratio = self.spec.number("max_image_aspect_ratio", DEFAULT_MAX_ASPECT_RATIO)

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            try:
                pixels = []
                for index, item in enumerate(images.reshape(-1)):
                    try:
                        image = decode(bytes(item), self.max_bytes, self.max_pixels, False,
                                       self.max_aspect_ratio)
                    except ImageError as err:
                        raise ImageError(f"image {index} of the request: {err}") from None
                    pixels.append(self.transform(image))
                out = pb_utils.Tensor("pixels", np.stack(pixels))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except ImageError as err:
                responses.append(error_response(pb_utils, f"{self.spec.name}: {err}"))
        return responses
