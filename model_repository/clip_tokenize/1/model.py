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
ViT-L-14, RN50, ...) are tokenized by ``tritonlens.serve.clip.tokenizer.ClipTokenizer``, the
same tokens without importing torch (this stub then holds 56 MB PSS instead of 516 MB). Models
whose open_clip config names a Hugging Face tokenizer (SigLIP, SigLIP 2, CLIPA, MetaCLIP 2)
have ``tokenizer: huggingface``: ``tritonlens.serve.clip.hf_tokenizer.HFClipTokenizer`` runs
the ``tokenizer.json`` the exporter wrote beside this file (from ``--tokenizer DIR``), again
without torch and without reaching a model hub. Other models (``tokenizer_kwargs`` on
open_clip's BPE) keep ``open_clip.get_tokenizer`` and with it torch.

Config parameters: ``model_name`` (an open_clip architecture name), ``context_length``,
``max_text_bytes`` (optional), ``tokenizer``, ``clean``, ``strip_token_id`` (Hugging Face
tokenizers, see serve/clip/hf_tokenizer.py).
"""

import triton_python_backend_utils as pb_utils

from tritonlens.serve.clip.hf_tokenizer import hf_tokenizer_from_config
from tritonlens.serve.clip.names import HUGGINGFACE, TOKENIZER
from tritonlens.serve.clip.tokenizer import tokenizer_for
from tritonlens.serve.errors import input_array, respond_each
from tritonlens.serve.model_config import read_model_config
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES, decode_texts


class TritonPythonModel:
    def initialize(self, args):
        spec = read_model_config(args["model_config"])
        self.max_text_bytes = spec.integer("max_text_bytes", DEFAULT_MAX_TEXT_BYTES)
        if spec.text(TOKENIZER, "") == HUGGINGFACE:
            version_dir = f"{args['model_repository']}/{args['model_version']}"
            self.tokenizer = hf_tokenizer_from_config(spec.parameters, version_dir)
        else:
            self.tokenizer = tokenizer_for(spec.text("model_name"), spec.integer("context_length"))

    def _handle(self, request):
        texts = decode_texts(input_array(pb_utils, request, "text").reshape(-1), self.max_text_bytes)
        return {"token_ids": self.tokenizer(texts)}

    def execute(self, requests):
        return respond_each(pb_utils, requests, "clip_tokenize", self._handle)
