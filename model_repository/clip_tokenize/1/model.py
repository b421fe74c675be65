"""clip_tokenize: text -> CLIP token ids, exactly as open_clip's tokenizer gives them.

Input  ``text``      BYTES [1] per batch item, UTF-8, at most ``max_text_bytes`` bytes
                     (default 2048, ``tritonlens.serve.texts.DEFAULT_MAX_TEXT_BYTES``).
Output ``token_ids`` INT64 [L] (L = the model's context length, 77 for OpenAI-style CLIP):
start token, BPE tokens, end token, zero padding; text longer than L tokens is truncated,
exactly as ``open_clip.get_tokenizer(model_name)(texts)`` does.

A text over ``max_text_bytes`` or not UTF-8 fails its request with INVALID_ARG (gRPC
INVALID_ARGUMENT / HTTP 400) before any tokenizing: the bound keeps one text's work small
(open_clip cleans and BPE-encodes the whole text before truncating; see serve/texts.py).
A request holds at most ``max_batch_size`` texts (Triton refuses more).

Models that use open_clip's ``SimpleTokenizer`` (OpenAI-style CLIP: ViT-B-32, ViT-S-32,
ViT-L-14, RN50, ...) are tokenized by ``tritonlens.serve.clip_tokenizer.ClipTokenizer``, the
same tokens without importing torch (this stub then holds 56 MB PSS instead of 516 MB). Models
whose open_clip config names another tokenizer (Hugging Face, SigLIP, ``tokenizer_kwargs``)
keep ``open_clip.get_tokenizer`` and with it torch.

Config parameters: ``model_name`` (an open_clip architecture name), ``context_length``,
``max_text_bytes`` (optional).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonlens.serve.clip_tokenizer import ClipTokenizer, uses_simple_tokenizer
from tritonlens.serve.errors import RequestError, error_response
from tritonlens.serve.model_config import read_model_config
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES, decode_text


def open_clip_tokenizer(model_name: str, context_length: int):
    """open_clip's own tokenizer for models ClipTokenizer does not cover (imports torch):
    texts -> INT64 numpy [N, context_length]."""
    import open_clip

    tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
    return lambda texts: tokenizer(texts).numpy().astype(np.int64)


class TritonPythonModel:
    def initialize(self, args):
        spec = read_model_config(args["model_config"])
        self.context_length = spec.integer("context_length")
        self.max_text_bytes = spec.integer("max_text_bytes", DEFAULT_MAX_TEXT_BYTES)
        model_name = spec.text("model_name")
        if uses_simple_tokenizer(model_name):
            self.tokenizer = ClipTokenizer(self.context_length)
        else:
            self.tokenizer = open_clip_tokenizer(model_name, self.context_length)

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
                ids = self.tokenizer(decoded)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("token_ids", ids)]))
            except RequestError as err:
                responses.append(error_response(pb_utils, f"clip_tokenize: {err}"))
        return responses
