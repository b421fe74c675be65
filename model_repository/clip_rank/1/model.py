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
distinct prompts that the text cache (``serve.clip.rank.TextEmbeddingCache``, bounded by
``text_cache_bytes``) does not hold to ``tokenize_model`` then ``text_encoder_model`` in
chunks of ``text_batch``; what they return is kept. Everything is in flight at once
(``asyncio.gather``). One instance (export/clip/rank.py says why): a prompt is encoded once
however many requests carry it. The cache's lookups and size are Triton metrics
(``tritonlens_text_cache_lookups_total{outcome="hit"|"miss"}``, ``tritonlens_text_cache_bytes``).

Bad input fails only its request with INVALID_ARG (gRPC INVALID_ARGUMENT / HTTP 400) naming the
problem (``serve.clip.rank.query_rows`` and ``parse_request``; an image the preprocessing
refuses is named by ``clip_preprocess``'s message).
Config parameters: ``preprocess_model``, ``image_encoder_model``, ``image_encoder_output``,
``tokenize_model``, ``text_encoder_model``, ``text_encoder_output``, ``text_batch``,
``logit_scale``, optional ``logit_bias``, ``text_cache_bytes`` and the limits of
``serve.clip.rank.RankLimits``.
"""

import asyncio
import re

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonlens.serve import bls
from tritonlens.serve.clip.rank import (DEFAULT_TEXT_CACHE_BYTES, RankLimits, TextEmbeddingCache,
                                        candidate_embeddings, parse_request, query_rows,
                                        rank_scores, ranking)
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
        self.cache = TextEmbeddingCache(spec.integer("text_cache_bytes", DEFAULT_TEXT_CACHE_BYTES))
        # Triton's metrics endpoint shows the cache (custom metrics of the Python backend).
        # (a MetricFamily must outlive its Metric objects: both are kept on the model)
        labels = {"model": self.name}
        self.lookups_family = pb_utils.MetricFamily(
            name="tritonlens_text_cache_lookups_total", kind=pb_utils.MetricFamily.COUNTER,
            description="clip_rank's text-embedding cache: lookups by outcome (hit, miss)")
        self.hit_metric = self.lookups_family.Metric(labels={**labels, "outcome": "hit"})
        self.miss_metric = self.lookups_family.Metric(labels={**labels, "outcome": "miss"})
        self.bytes_family = pb_utils.MetricFamily(
            name="tritonlens_text_cache_bytes", kind=pb_utils.MetricFamily.GAUGE,
            description="clip_rank's text-embedding cache: bytes held")
        self.bytes_metric = self.bytes_family.Metric(labels=labels)

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
        """Distinct prompts -> {prompt: FP32 [D]}: the cached ones from the text cache, the
        others tokenized and encoded in chunks of the text models' batch size, then kept."""
        found = {p: self.cache.get(p) for p in prompts}
        missing = [p for p, embedding in found.items() if embedding is None]
        self.hit_metric.increment(len(prompts) - len(missing))
        self.miss_metric.increment(len(missing))

        async def encode(chunk):
            texts = np.array([p.encode() for p in chunk], np.object_).reshape(-1, 1)
            tokens = await bls.infer(pb_utils, self.tokenize_model, {"text": texts}, "token_ids")
            return await bls.infer(pb_utils, self.text_encoder, {"token_ids": tokens}, self.text_output)

        chunks = [missing[i:i + self.text_batch] for i in range(0, len(missing), self.text_batch)]
        for chunk, rows in zip(chunks, await asyncio.gather(*(encode(c) for c in chunks))):
            for prompt, row in zip(chunk, rows):
                found[prompt] = row
                self.cache.put(prompt, row)
        self.bytes_metric.set(self.cache.size_bytes)
        return found

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
