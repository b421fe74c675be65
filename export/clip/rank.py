"""Write ``clip_rank``: zero-shot CLIP with the candidate texts in the request.

``clip_rank`` is a Python-backend model (``model_repository/clip_rank/1/model.py``) that
calls the served ``clip_preprocess``, ``clip_image_encoder``, ``clip_tokenize`` and
``clip_text_encoder`` through BLS; ``tritonlens.serve.clip.rank`` holds what it computes
(open_clip's zero-shot recipe) and its text-embedding cache, which keeps each prompt's
embedding whatever other candidates came with it (``text_cache_bytes``; why not Triton's
response cache: ``serve.clip.rank.TextEmbeddingCache``). An ensemble cannot express it: the
number of prompts per request varies.
"""

from __future__ import annotations

from pathlib import Path

from tritonlens.export.config import Tensor, model_config, write_model
from tritonlens.export.repository import python_model_source
from tritonlens.serve.clip.rank import (DEFAULT_MAX_CANDIDATES, DEFAULT_MAX_PROMPTS, DEFAULT_MAX_TEMPLATES,
                                        DEFAULT_TEXT_CACHE_BYTES)
from tritonlens.serve.parameters import (FAMILY_PARAMETER, MODEL_NAME_PARAMETER, PROFILE_PARAMETER,
                                         WEIGHTS_PARAMETER)
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES

# One clip_rank instance (a stub of about 45 MB: numpy, no torch, no onnxruntime), with dynamic
# batching: while it waits on the encoders, the requests that arrive queue up and come to its
# next execute() together, which serves them all at once (their images in flight together,
# so the encoders' dynamic batchers group them) and sends each distinct prompt of the batch
# once. With two instances, two requests carrying the same new label could both miss the
# cache and encode it twice (nothing merges concurrent misses); measured on
# the 2-core host, 4 instances without batching gave up to 4 x 27 text-encoder inferences for
# 27 labels, this gives exactly 27.
# The export's common parameters that clip_rank's config records too (status shows them).
RECORDED_PARAMETERS = (FAMILY_PARAMETER, MODEL_NAME_PARAMETER, WEIGHTS_PARAMETER, PROFILE_PARAMETER)


def write_rank_model(repo: Path, prefix: str, *, max_queries: int, image_batch: int, text_batch: int,
                     encoder_output: str, logit_scale: float, logit_bias: float | None,
                     parameters: dict[str, str]) -> Path:
    """Write ``<prefix>_rank`` (config and model.py) into ``repo``; returns its folder.

    Args:
        prefix: the export's model-name prefix (``clip``): it calls ``<prefix>_preprocess``,
            ``<prefix>_image_encoder``, ``<prefix>_tokenize`` and ``<prefix>_text_encoder``.
        max_queries: the model's max_batch_size: queries (rows) Triton hands one execute.
        image_batch: ``max_images`` per query (the image models' max_batch_size).
        text_batch: prompts per BLS request to the tokenizer (its max_batch_size).
        encoder_output: the image and text encoders' output name (``embedding``,
            ``embedding__0`` for TorchScript).
        logit_scale: ``exp(model.logit_scale)`` (100 for OpenAI's trained CLIP), written with
            ``repr`` so the float is exact.
        logit_bias: SigLIP's bias (sigmoid scores), or None (softmax).
        parameters: the export's common parameters (family, weights, ...).
    """
    name = f"{prefix}_rank"
    params = {key: parameters[key] for key in RECORDED_PARAMETERS if key in parameters}
    params.update({
        "preprocess_model": f"{prefix}_preprocess", "image_encoder_model": f"{prefix}_image_encoder",
        "image_encoder_output": encoder_output, "tokenize_model": f"{prefix}_tokenize",
        "text_encoder_model": f"{prefix}_text_encoder",
        "text_encoder_output": encoder_output, "text_batch": str(text_batch),
        "logit_scale": repr(float(logit_scale)),
        "max_images": str(image_batch), "max_candidates": str(DEFAULT_MAX_CANDIDATES),
        "max_templates": str(DEFAULT_MAX_TEMPLATES), "max_prompts": str(DEFAULT_MAX_PROMPTS),
        "max_text_bytes": str(DEFAULT_MAX_TEXT_BYTES),
        "text_cache_bytes": str(DEFAULT_TEXT_CACHE_BYTES)})
    if logit_bias is not None:
        params["logit_bias"] = repr(float(logit_bias))
    config = model_config(
        name, "python",
        [Tensor("image", "bytes", (-1,)), Tensor("text", "bytes", (-1,)),
         Tensor("templates", "bytes", (-1,), optional=True)],
        [Tensor("probabilities", "fp32", (-1, -1)), Tensor("ranking", "int32", (-1, -1))],
        max_batch_size=max_queries, parameters=params)
    for tensor in config.input:  # each request's M, N and T are its own
        tensor.allow_ragged_batch = True
    return write_model(repo, config, {"model.py": python_model_source("clip_rank")})

