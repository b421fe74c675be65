"""clip_rank: zero-shot CLIP with the candidate texts in the request (BLS over the served encoders).

One request holds B queries (B = 1 usually), each of M images and N candidate texts:

Inputs  ``image``     BYTES [B, M]  encoded images (JPEG, PNG, WebP), M <= ``max_images``
        ``text``      BYTES [B, N]  UTF-8 candidate texts, N <= ``max_candidates``
        ``templates`` BYTES [B, T]  optional prompt templates with ``{}`` for the candidate
                                    (``a photo of a {}.``), averaged as open_clip does
Outputs ``probabilities`` FP32 [B, M, N]  per image, over the candidates in the query's order
        ``ranking``       INT32 [B, M, N] per image, candidate indices, most probable first

The work is ``tritonlens.serve.clip.rank`` (checks, prompts, prompt ensembling, softmax of the
exported logit scale x cosine); this file sends the BLS requests (``serve.bls``). Triton's
dynamic batcher hands one ``execute`` every request that arrived meanwhile (ragged batching:
their M, N, T differ), and they are served together: each image alone to
``preprocess_model`` then ``image_encoder_model`` (``clip_preprocess``, ``clip_image_encoder``,
not the ``clip_embed_image`` ensemble, whose refusals reach BLS as INTERNAL; one request per
image spreads them over the preprocessing instances, as clients' single-image requests are), the batch's
distinct prompts to ``tokenize_model`` (chunks of ``text_batch``) and each prompt's token ids
alone to ``text_encoder_model``, whose response cache keys on them: a prompt already encoded is
answered from the cache, the others are batched by the text encoder's dynamic batcher with
every client's texts. Everything is in flight at once (``asyncio.gather``). One instance
(export/clip/rank.py says why): a prompt is encoded once however many requests carry it.

Bad input fails only its request with INVALID_ARG (gRPC INVALID_ARGUMENT / HTTP 400) naming the
problem (``serve.clip.rank.query_rows`` and ``parse_request``; an image the preprocessing
refuses is named by ``clip_preprocess``'s message).
Config parameters: ``preprocess_model``, ``image_encoder_model``, ``image_encoder_output``,
``tokenize_model``, ``text_encoder_model``, ``text_encoder_output``, ``text_batch``,
``logit_scale``, optional ``logit_bias`` and the limits of ``serve.clip.rank.RankLimits``.
"""

import asyncio
import re

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonlens.serve import bls
from tritonlens.serve.clip.rank import (RankLimits, candidate_embeddings, parse_request,
                                        query_rows, rank_scores, ranking)
from tritonlens.serve.errors import RequestError, input_array, response_for_exception
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

    async def _embed_image(self, index, image):
        """One image -> FP32 [D], sent alone so that the preprocessing instances and the
        encoder's dynamic batcher share the query's images with other clients' work."""
        data = np.array([[image]], dtype=np.object_)
        try:
            pixels = await bls.infer(pb_utils, self.preprocess_model, {"image": data}, "pixels",
                                     IMAGE_REFUSED)
        except RequestError as err:  # named by its place in this query, not in the BLS request
            raise RequestError(IMAGE_REFUSED.sub(f"image {index} of the request: ", str(err), 1)) from None
        return (await bls.infer(pb_utils, self.image_encoder, {"pixels": pixels}, self.image_output))[0]

    async def _embed_images(self, images):
        return np.stack(await asyncio.gather(*(self._embed_image(i, image)
                                               for i, image in enumerate(images))))

    async def _embed_prompts(self, prompts):
        """Distinct prompts -> {prompt: FP32 [D]}: tokenized in chunks, then each alone to the
        text encoder (its response cache keys on one prompt's token ids)."""
        chunks = [prompts[i:i + self.text_batch] for i in range(0, len(prompts), self.text_batch)]
        tokens = np.concatenate(await asyncio.gather(*(
            bls.infer(pb_utils, self.tokenize_model,
                      {"text": np.array([p.encode() for p in chunk], np.object_).reshape(-1, 1)},
                      "token_ids") for chunk in chunks)))
        rows = await asyncio.gather(*(
            bls.infer(pb_utils, self.text_encoder, {"token_ids": tokens[i:i + 1]}, self.text_output)
            for i in range(len(prompts))))
        return dict(zip(prompts, np.concatenate(rows)))

    async def _answer(self, queries, prompt_embeddings):
        images = await asyncio.gather(*(self._embed_images(q.images) for q in queries))
        embeddings = await prompt_embeddings
        probabilities = np.stack([
            rank_scores(image, candidate_embeddings(np.stack([embeddings[p] for p in q.prompts]),
                                                    len(q.candidates)),
                        self.logit_scale, self.logit_bias) for q, image in zip(queries, images)])
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("probabilities", probabilities),
            pb_utils.Tensor("ranking", np.stack([ranking(p) for p in probabilities]))])

    async def execute(self, requests):
        # Every request of the batch is checked, then served at once: one text-encoder
        # request per distinct prompt of the whole batch, every image request in flight.
        parsed = []
        for request in requests:
            try:
                parsed.append([parse_request(*row, self.limits) for row in query_rows(
                    input_array(pb_utils, request, "image"), input_array(pb_utils, request, "text"),
                    input_array(pb_utils, request, "templates"))])
            except Exception as err:  # refused alone
                parsed.append(err)
        prompts = list(dict.fromkeys(p for queries in parsed if isinstance(queries, list)
                                     for query in queries for p in query.prompts))
        prompt_embeddings = asyncio.ensure_future(self._embed_prompts(prompts)) if prompts else None

        async def respond(queries):
            try:
                if isinstance(queries, Exception):
                    raise queries
                return await self._answer(queries, prompt_embeddings)
            except Exception as err:  # one bad request must not fail the others
                return response_for_exception(pb_utils, self.name, err)

        return list(await asyncio.gather(*(respond(queries) for queries in parsed)))
