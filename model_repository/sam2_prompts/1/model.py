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
Outputs ``checked_point_coords``, ``checked_point_labels`` (unchanged when valid),
        ``checked_mask_input`` (zeros when absent), ``checked_has_mask_input`` FP32 [1]
        (1 when a mask was given), ``checked_multimask_output`` BOOL [1].

Refused: no points; labels and points of different counts; a label other than 0-3; a
coordinate that is not finite or lies outside the image (0 <= x <= width,
0 <= y <= height); a box corner without its partner, more than one box, or a box that is
not the first two points (SAM 2 puts the box first: label 2 = (x0, y0), 3 = (x1, y1)).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

LABELS = {0: "background", 1: "foreground", 2: "box top-left", 3: "box bottom-right"}


class PromptError(ValueError):
    """A prompt SAM 2 cannot use; the message is sent back to the client."""


def check_prompts(coords: np.ndarray, labels: np.ndarray, orig_size: np.ndarray) -> None:
    """Raise PromptError with the reason when the prompts are unusable (module docstring)."""
    height, width = (int(v) for v in orig_size.reshape(-1)[:2])
    if height <= 0 or width <= 0:
        raise PromptError(f"orig_size must be a positive (height, width), not {orig_size.tolist()}")
    n = coords.shape[0]
    if n == 0:
        raise PromptError("no prompt: give at least one point (label 1 foreground, 0 background) "
                          "or a box (two corners labelled 2 and 3)")
    if labels.shape[0] != n:
        raise PromptError(f"{n} point(s) in point_coords but {labels.shape[0]} label(s) in "
                          "point_labels")
    bad = [int(v) for v in labels if int(v) not in LABELS]
    if bad:
        raise PromptError(f"point label {bad[0]} is not one of 0 (background), 1 (foreground), "
                          "2 and 3 (box corners)")
    for i, (x, y) in enumerate(coords.tolist()):
        if not (np.isfinite(x) and np.isfinite(y)):
            raise PromptError(f"point {i} has a non-finite coordinate ({x}, {y})")
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(f"point {i} ({x:g}, {y:g}) is outside the {width}x{height} image "
                              f"(x must be in [0, {width}], y in [0, {height}])")
    corners = [i for i, v in enumerate(labels.tolist()) if v in (2, 3)]
    if corners:
        if len(corners) == 1:
            raise PromptError(f"a lone box corner (label {int(labels[corners[0]])}): a box is "
                              "two points, label 2 (x0, y0) then label 3 (x1, y1)")
        if len(corners) > 2:
            raise PromptError("more than one box: SAM 2 takes one box per prompt")
        if corners != [0, 1] or labels[0] != 2 or labels[1] != 3:
            raise PromptError("the box must be the first two points: label 2 (x0, y0) then "
                              "label 3 (x1, y1), before any other point")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.mask_size = int(params["mask_input_size"])

    def _check(self, request):
        def get(name):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        coords, labels, orig_size = get("point_coords"), get("point_labels"), get("orig_size")
        check_prompts(coords, labels, orig_size)
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
            except PromptError as err:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"sam2_prompts: {err}")))
        return responses
