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

Prompts are checked and the defaults filled by ``tritonlens.serve.sam2.prompts.decoder_prompt``
(one validator for the image and video paths; the module docstring of
``tritonlens.serve.sam2.prompts`` lists the rules and the limits, e.g. at most
``MAX_POINTS_PER_OBJECT`` points): refused are no points, mismatched counts, labels other
than 0-3, non-finite coordinates or ones outside the image, a lone or second box corner, a
box with x0 > x1 or y0 > y1, and too many points. A box given after clicks is moved first,
where SAM 2 puts it. Refusals are INVALID_ARG (``tritonlens.serve.errors``).
"""

import triton_python_backend_utils as pb_utils

from tritonlens.serve.errors import input_array, respond_each
from tritonlens.serve.model_config import read_model_config
from tritonlens.serve.sam2.prompts import decoder_prompt

INPUTS = ("point_coords", "point_labels", "orig_size", "multimask_output", "mask_input")


class TritonPythonModel:
    def initialize(self, args):
        self.mask_size = read_model_config(args["model_config"]).integer("mask_input_size")

    def _handle(self, request):
        given = [input_array(pb_utils, request, name) for name in INPUTS]
        return decoder_prompt(*given, self.mask_size)

    def execute(self, requests):
        return respond_each(pb_utils, requests, "sam2_prompts", self._handle)
