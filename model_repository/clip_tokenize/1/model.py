"""clip_tokenize: text -> CLIP token ids, with open_clip's own tokenizer.

Input  ``text``      BYTES [1] per batch item, UTF-8.
Output ``token_ids`` INT64 [L] (L = the model's context length, 77 for OpenAI-style CLIP):
start token, BPE tokens, end token, zero padding; text longer than L tokens is truncated,
exactly as ``open_clip.get_tokenizer(model_name)(texts)`` does.

Config parameters: ``model_name`` (an open_clip architecture name), ``context_length``.
"""

import json

import numpy as np
import open_clip
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.context_length = int(params["context_length"])
        self.tokenizer = open_clip.get_tokenizer(params["model_name"],
                                                 context_length=self.context_length)

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            try:
                decoded = [bytes(t).decode("utf-8") for t in texts]
                ids = self.tokenizer(decoded).numpy().astype(np.int64)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("token_ids", ids)]))
            except UnicodeDecodeError as err:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"clip_tokenize: text is not UTF-8: {err}")))
        return responses
