"""sam2_prompts: check one request's prompts and fill in the optional inputs' defaults.

The prompt decoder is a graph (ONNX / TorchScript): it computes on whatever it is given and
cannot refuse a prompt with a message. This model stands in front of it in the ensembles
(``sam2_segment``, ``sam2_decode``) and refuses, with a one-line reason for that request
only, what SAM 2 would silently turn into a meaningless mask.

Inputs  ``point_coords``     FP32 [N, 2]: (x, y) in pixels of the original image;
        ``point_labels``     INT32 [N]: 1 foreground, 0 background, 2/3 box corners;
        ``orig_size``        INT32 [2]: (height, width) of the original image;
        ``multimask_output`` BOOL [1], optional, default true;
        ``mask_input``       FP32 [1, L, L], optional: low-res logits of an earlier answer.
Outputs ``checked_point_coords``, ``checked_point_labels`` (a box's corners first),
        ``checked_mask_input`` (zeros when absent), ``checked_has_mask_input`` FP32 [1]
        (1 when a mask was given), ``checked_multimask_output`` BOOL [1].

Prompts are checked by ``tritonlens.serve.sam2.prompts`` (one validator for the image and
video paths; its module docstring lists the rules and the limits, e.g. at most
``MAX_POINTS_PER_OBJECT`` points): refused are no points, mismatched counts, labels other
than 0-3, non-finite coordinates or ones outside the image, a lone or second box corner, a
box with x0 > x1 or y0 > y1, and too many points. A box given after clicks is moved first,
where SAM 2 puts it. Refusals are INVALID_ARG (``tritonlens.serve.errors``).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonlens.serve.errors import response_for_exception
from tritonlens.serve.sam2.prompts import PromptError, image_prompt


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.mask_size = int(params["mask_input_size"])

    def _check(self, request):
        def get(name):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        coords, labels = image_prompt(get("point_coords"), get("point_labels"),
                                      get("orig_size"))
        multimask = get("multimask_output")
        multimask = np.array([True]) if multimask is None else multimask.reshape(1).astype(bool)
        mask = get("mask_input")
        has_mask = np.array([0.0 if mask is None else 1.0], dtype=np.float32)
        if mask is None:
            mask = np.zeros((1, self.mask_size, self.mask_size), dtype=np.float32)
        elif not np.all(np.isfinite(mask)):
            raise PromptError("mask_input has non-finite values")
        return [pb_utils.Tensor("checked_point_coords", coords),
                pb_utils.Tensor("checked_point_labels", labels),
                pb_utils.Tensor("checked_mask_input", mask),
                pb_utils.Tensor("checked_has_mask_input", has_mask),
                pb_utils.Tensor("checked_multimask_output", multimask)]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._check(request)))
            except Exception as err:  # one bad request must not fail the others
                responses.append(response_for_exception(pb_utils, "sam2_prompts", err))
        return responses
