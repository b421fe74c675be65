"""clip_tokenize: text -> CLIP token ids, with open_clip's own tokenizer.

Input  ``text``      BYTES [1] per batch item, UTF-8, at most ``max_text_bytes`` bytes
                     (default 2048, ``tritonlens.serve.texts.DEFAULT_MAX_TEXT_BYTES``).
Output ``token_ids`` INT64 [L] (L = the model's context length, 77 for OpenAI-style CLIP):
start token, BPE tokens, end token, zero padding; text longer than L tokens is truncated,
exactly as ``open_clip.get_tokenizer(model_name)(texts)`` does.

A text over ``max_text_bytes`` or not UTF-8 fails its request with INVALID_ARG (gRPC
INVALID_ARGUMENT / HTTP 400) before any tokenizing: the bound keeps one text's work small
(open_clip cleans and BPE-encodes the whole text before truncating; see serve/texts.py).
A request holds at most ``max_batch_size`` texts (Triton refuses more).

Config parameters: ``model_name`` (an open_clip architecture name), ``context_length``,
``max_text_bytes`` (optional).
"""

import json

import numpy as np
import open_clip
import triton_python_backend_utils as pb_utils

from tritonlens.serve.errors import RequestError, error_response
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES, decode_text


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.context_length = int(params["context_length"])
        self.max_text_bytes = int(params.get("max_text_bytes", DEFAULT_MAX_TEXT_BYTES))
        self.tokenizer = open_clip.get_tokenizer(params["model_name"],
                                                 context_length=self.context_length)

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            try:
                decoded = []
                for index, text in enumerate(texts):
                    try:
                        decoded.append(decode_text(bytes(text), self.max_text_bytes))
                    except RequestError as err:
                        raise RequestError(f"text {index} of the request: {err}") from None
                ids = self.tokenizer(decoded).numpy().astype(np.int64)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("token_ids", ids)]))
            except RequestError as err:
                responses.append(error_response(pb_utils, f"clip_tokenize: {err}"))
        return responses
