"""clip_rank: zero-shot CLIP with the candidate texts in the request (BLS over the served encoders).

No batch axis (``max_batch_size: 0``); one request is M images and N candidates:

Inputs  ``image``     BYTES [M]  encoded images (JPEG, PNG, WebP), M <= ``max_images``
        ``text``      BYTES [N]  UTF-8 candidate texts, N <= ``max_candidates``
        ``templates`` BYTES [T]  optional prompt templates with ``{}`` for the candidate
                                 (e.g. ``a photo of a {}.``), averaged as open_clip does
Outputs ``probabilities`` FP32 [M, N]  per image, over the candidates in the request's order
        ``ranking``       INT32 [M, N] per image, candidate indices, most probable first

The work is ``tritonlens.serve.clip_rank`` (checks, prompts, prompt ensembling, softmax of the
exported logit scale x cosine); this file only sends the BLS requests (``serve.bls``): the
images to ``preprocess_model`` then ``image_encoder_model`` (``clip_preprocess``,
``clip_image_encoder``; one request each, not the ``clip_embed_image`` ensemble, whose errors
reach BLS as INTERNAL), the distinct prompts to
``tokenize_model`` (``clip_tokenize``, chunks of ``text_batch``), then each prompt's token ids
alone to ``text_encoder_model`` (``clip_text_encoder``), whose response cache keys on them, so
a prompt already encoded is answered from the cache and the others are batched by its dynamic
batcher with every client's texts. Everything is in flight at once (``asyncio.gather``).

Bad input fails only its request with INVALID_ARG (gRPC INVALID_ARGUMENT / HTTP 400) naming the
problem (``serve.clip_rank.parse_request``; an image the preprocessing refuses is named by
``clip_preprocess``'s message); a wrong rank of an input is refused by Triton itself.
Config parameters: ``preprocess_model``, ``image_encoder_model``, ``image_encoder_output``,
``tokenize_model``, ``text_encoder_model``, ``text_encoder_output``, ``text_batch``, ``logit_scale``, optional ``logit_bias`` and the
limits of ``serve.clip_rank.RankLimits``.
"""

import asyncio
import re

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonlens.serve import bls
from tritonlens.serve.clip_rank import (RankLimits, candidate_embeddings, parse_request,
                                        rank_scores, ranking)
from tritonlens.serve.errors import input_array, response_for_exception
from tritonlens.serve.model_config import read_model_config

# How clip_preprocess names an image it refuses (the error code is lost on the way, serve.bls).
IMAGE_REFUSED = re.compile(r"image \d+ of the request: ")


class TritonPythonModel:
    def initialize(self, args):
        spec = read_model_config(args["model_config"])
        self.name = spec.name
        self.limits = RankLimits.from_spec(spec)
        self.preprocess_model = spec.text("preprocess_model")
        self.image_encoder = spec.text("image_encoder_model")
        self.image_output = spec.text("image_encoder_output")
        self.tokenize_model = spec.text("tokenize_model")
        self.text_encoder = spec.text("text_encoder_model")
        self.text_output = spec.text("text_encoder_output")
        self.text_batch = spec.integer("text_batch")
        self.logit_scale = spec.number("logit_scale")
        bias = spec.text("logit_bias", "")
        self.logit_bias = float(bias) if bias else None

    async def _embed_images(self, images):
        data = np.array(images, dtype=np.object_).reshape(-1, 1)
        pixels = await bls.infer(pb_utils, self.preprocess_model, {"image": data}, "pixels",
                                IMAGE_REFUSED)
        return await bls.infer(pb_utils, self.image_encoder, {"pixels": pixels}, self.image_output)

    async def _embed_prompts(self, prompts):
        distinct = list(dict.fromkeys(prompts))
        chunks = [distinct[i:i + self.text_batch] for i in range(0, len(distinct), self.text_batch)]
        tokens = np.concatenate(await asyncio.gather(*(
            bls.infer(pb_utils, self.tokenize_model,
                      {"text": np.array([p.encode() for p in chunk], np.object_).reshape(-1, 1)},
                      "token_ids") for chunk in chunks)))
        rows = await asyncio.gather(*(
            bls.infer(pb_utils, self.text_encoder, {"token_ids": tokens[i:i + 1]}, self.text_output)
            for i in range(len(distinct))))
        embedding = dict(zip(distinct, np.concatenate(rows)))
        return np.stack([embedding[p] for p in prompts])

    async def _rank(self, request):
        rank = parse_request(input_array(pb_utils, request, "image"),
                             input_array(pb_utils, request, "text"),
                             input_array(pb_utils, request, "templates"), self.limits)
        images, prompts = await asyncio.gather(self._embed_images(rank.images),
                                               self._embed_prompts(rank.prompts))
        probabilities = rank_scores(images, candidate_embeddings(prompts, len(rank.candidates)),
                                    self.logit_scale, self.logit_bias)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("probabilities", probabilities),
            pb_utils.Tensor("ranking", ranking(probabilities))])

    async def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(await self._rank(request))
            except Exception as err:  # one bad request must not fail the others
                responses.append(response_for_exception(pb_utils, self.name, err))
        return responses
