"""Zero-shot CLIP with the candidate texts in the request: what ``clip_rank`` computes.

``clip_rank`` (a Python-backend model, ``model_repository/clip_rank/1/model.py``) takes
encoded images and N candidate texts, optionally with prompt templates, and answers per
image the probabilities over the candidates and their order. The encoders are the served
ones, called through BLS (business logic scripting), so Triton's dynamic batcher groups
this model's images and texts with every other client's; the text encoder's responses are
kept by Triton's response cache, so a candidate that comes with many images is encoded
once. This module holds what needs no server: checking a request against the limits,
the prompts to encode, the candidates' embeddings from the prompts' and the scores.

The recipe is open_clip's zero-shot classification (Radford et al. 2021;
``open_clip.zero_shot_classifier.build_zero_shot_classifier`` and its evaluation):

1. each candidate is put into every template (``template.format(candidate)``, candidate-
   major order); without templates the candidate text itself is the prompt;
2. each prompt is tokenized and encoded to a unit-norm embedding; a candidate's prompts'
   embeddings are averaged and the mean renormalised (prompt ensembling);
3. ``probabilities = softmax(logit_scale * image_embedding @ candidates.T)``, the model's
   own learned temperature (``exp(model.logit_scale)``, 100 for OpenAI's trained CLIP);
   models trained with a sigmoid loss (SigLIP: the model has ``logit_bias``) get
   ``sigmoid(logit_scale * cosine + logit_bias)`` per candidate instead, as
   ``clip_zero_shot`` (``export.clip.modules.ZeroShotHead``) scores them.

Plain numpy: importable and unit-tested without a server (tests/unit/test_clip_rank.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from tritonlens.serve.errors import RequestError
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES, decode_text, decode_texts

# Defaults of the limits (config parameters of clip_rank, see RankLimits). Every prompt is one
# BLS request to the text encoder (a cache hit or one row of a dynamic batch), so the bound
# on candidates x templates bounds one request's work: 2048 prompts of ViT-B-32 text are
# about 2 minutes of a 2-core CPU when none is cached. 80 templates are open_clip's ImageNet
# set (OPENAI_IMAGENET_TEMPLATES); for a fixed set of 1,000 classes x 80 templates, export them
# (``tritonlens export clip --labels``: clip_classify, the label embeddings as graph constants).
DEFAULT_MAX_CANDIDATES = 1000
DEFAULT_MAX_TEMPLATES = 100
DEFAULT_MAX_PROMPTS = 2048


@dataclass(frozen=True)
class RankLimits:
    """What one ``clip_rank`` request may hold (each a config parameter of the model).

    Attributes:
        max_images: images per request (the export writes the image models' max_batch_size).
        max_candidates: candidate texts per request.
        max_templates: prompt templates per request.
        max_prompts: candidates x templates (1 template when none are given).
        max_text_bytes: UTF-8 bytes of one candidate, template or prompt (CLIP reads only
            its first 77 tokens; see ``serve.texts``).
    """

    max_images: int
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    max_templates: int = DEFAULT_MAX_TEMPLATES
    max_prompts: int = DEFAULT_MAX_PROMPTS
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES

    @classmethod
    def from_spec(cls, spec) -> "RankLimits":
        """The limits from a ``serve.model_config.ModelSpec``'s parameters (``max_images``
        required, the others default to this module's constants)."""
        return cls(max_images=spec.integer("max_images"),
                   max_candidates=spec.integer("max_candidates", DEFAULT_MAX_CANDIDATES),
                   max_templates=spec.integer("max_templates", DEFAULT_MAX_TEMPLATES),
                   max_prompts=spec.integer("max_prompts", DEFAULT_MAX_PROMPTS),
                   max_text_bytes=spec.integer("max_text_bytes", DEFAULT_MAX_TEXT_BYTES))


@dataclass(frozen=True)
class RankRequest:
    """One checked ``clip_rank`` query.

    Attributes:
        images: M encoded images (JPEG, PNG or WebP bytes; decoded by ``clip_preprocess``).
        candidates: N candidate texts, in the request's order (the outputs' column order).
        templates: T prompt templates with ``{}``, or () for the candidates as they are.
        prompts: N x max(T, 1) texts to encode, candidate-major (open_clip's order).
    """

    images: list[bytes]
    candidates: list[str]
    templates: tuple[str, ...]
    prompts: list[str]


def query_rows(images: np.ndarray | None, texts: np.ndarray | None,
               templates: np.ndarray | None) -> list[tuple]:
    """Split one request's inputs into its queries: ``[(image [M], text [N], templates [T] or
    None), ...]``, one per row of the batch axis (Triton's ragged batching hands the model
    each request whole, [B, ...] with B queries).

    Triton itself refuses a request whose inputs are not [B, n] or whose numbers of rows
    differ ("input 'image' batch size does not match other inputs"), before the model.
    """
    given = [array for array in (images, texts, templates) if array is not None]
    count = given[0].shape[0] if given else 0
    return [tuple(None if array is None else array[b] for array in (images, texts, templates))
            for b in range(count)]


def _items(array: np.ndarray | None) -> list:
    """The elements of one query's row of a BYTES input; [] when the input was not sent."""
    if array is None:
        return []
    return list(array.reshape(-1))


def parse_request(images: np.ndarray | None, texts: np.ndarray | None,
                  templates: np.ndarray | None, limits: RankLimits) -> RankRequest:
    """Check one query (a row of a request, :func:`query_rows`) and build its prompts.

    Args:
        images: BYTES [M], each an encoded image.
        texts: BYTES [N], each a UTF-8 candidate text.
        templates: BYTES [T] UTF-8 prompt templates with ``{}`` for the candidate, or None
            (the optional input was not sent).
        limits: the model's :class:`RankLimits`.

    Raises:
        RequestError: naming the problem: no images or no candidates, more than a limit
            allows (named with its config parameter), an empty or over-long candidate,
            template or prompt, text that is not UTF-8, a template without ``{}`` or with
            other braces.
    """
    image_items = [bytes(item) for item in _items(images)]
    if not image_items:
        raise RequestError("no images: send one or more encoded images in input 'image' (BYTES [M])")
    if len(image_items) > limits.max_images:
        raise RequestError(f"{len(image_items)} images, over the limit of {limits.max_images} per "
                           "request (max_images): send them in several requests")
    text_items = _items(texts)
    if not text_items:
        raise RequestError("empty candidate list: send one or more candidate texts in input "
                           "'text' (BYTES [N])")
    if len(text_items) > limits.max_candidates:
        raise RequestError(f"{len(text_items)} candidate texts, over the limit of "
                           f"{limits.max_candidates} per request (max_candidates)")
    candidates = _decode("candidate", text_items, limits.max_text_bytes)
    template_items = _items(templates)
    if templates is not None and not template_items:
        raise RequestError("input 'templates' is empty: send one or more templates, or leave "
                           "the input out to use the candidates as they are")
    if len(template_items) > limits.max_templates:
        raise RequestError(f"{len(template_items)} templates, over the limit of "
                           f"{limits.max_templates} per request (max_templates)")
    template_texts = _decode("template", template_items, limits.max_text_bytes)
    for index, template in enumerate(template_texts):
        check_template(template, f"template {index}")
    count = len(candidates) * max(1, len(template_texts))
    if count > limits.max_prompts:
        raise RequestError(f"{len(candidates)} candidates x {max(1, len(template_texts))} templates "
                           f"= {count} prompts, over the limit of {limits.max_prompts} per request "
                           "(max_prompts): send fewer candidates or templates")
    prompts = build_prompts(candidates, template_texts)
    for index, prompt in enumerate(prompts if template_texts else ()):  # candidates: checked
        try:
            decode_text(prompt.encode("utf-8"), limits.max_text_bytes)
        except RequestError as err:
            raise RequestError(f"prompt {index} (candidate {index // len(template_texts)} in "
                               f"template {index % len(template_texts)}): {err}") from None
    return RankRequest(image_items, candidates, tuple(template_texts), prompts)


def _decode(what: str, items: list, max_bytes: int) -> list[str]:
    """UTF-8 texts named ``<what> <index>`` in errors; empty (blank) texts are refused."""
    try:
        texts = decode_texts(items, max_bytes)
    except RequestError as err:
        raise RequestError(str(err).replace("text ", f"{what} ", 1).replace(
            " of the request", "", 1)) from None
    for index, text in enumerate(texts):
        if not text.strip():
            raise RequestError(f"{what} {index} is empty")
    return texts


def check_template(template: str, name: str = "template") -> None:
    """Refuse a template that ``str.format`` with one argument cannot fill.

    Raises:
        RequestError: no ``{}``, or other fields / unmatched braces (``{{`` and ``}}`` are
            literal braces, as in ``str.format``).
    """
    if "{}" not in template:
        raise RequestError(f"{name} {template!r} has no '{{}}' for the candidate text")
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError) as err:
        raise RequestError(f"{name} {template!r} is not a one-field format string ({err}); "
                           "write literal braces as '{{' and '}}'") from None


def build_prompts(candidates: list[str], templates: list[str] | tuple[str, ...]) -> list[str]:
    """The texts to encode, candidate-major: ``[t.format(c) for c in candidates for t in
    templates]`` (open_clip's ``build_zero_shot_classifier`` order); the candidates
    themselves without templates."""
    if not templates:
        return list(candidates)
    return [template.format(candidate) for candidate in candidates for template in templates]


def candidate_embeddings(prompt_embeddings: np.ndarray, n_candidates: int) -> np.ndarray:
    """FP32 [N, D]: each candidate's prompt embeddings averaged and renormalised.

    Args:
        prompt_embeddings: FP32 [N * T, D], unit-norm, candidate-major (see
            :func:`build_prompts`).
        n_candidates: N.

    ``open_clip.build_zero_shot_classifier``: ``reshape(N, T, D).mean(1)`` then divided by
    its norm (with T = 1, the unit-norm embedding itself).
    """
    grouped = prompt_embeddings.astype(np.float64).reshape(n_candidates, -1, prompt_embeddings.shape[-1])
    mean = grouped.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def rank_scores(image_embeddings: np.ndarray, candidates: np.ndarray, logit_scale: float,
                logit_bias: float | None = None) -> np.ndarray:
    """FP32 [M, N]: per image, the probabilities over the N candidates.

    Args:
        image_embeddings: FP32 [M, D], unit-norm (``clip_embed_image``'s output).
        candidates: FP32 [N, D], unit-norm (:func:`candidate_embeddings`).
        logit_scale: ``exp(model.logit_scale)`` as exported (the ``logit_scale`` parameter).
        logit_bias: SigLIP's ``logit_bias``, or None for CLIP's softmax.

    ``softmax(logit_scale * cosine)`` over the candidates (rows sum to 1), or with
    ``logit_bias`` an independent ``sigmoid(logit_scale * cosine + logit_bias)`` per
    candidate, as ``clip_zero_shot`` scores exported labels.
    """
    logits = logit_scale * (image_embeddings.astype(np.float64) @ candidates.astype(np.float64).T)
    if logit_bias is not None:
        return (1.0 / (1.0 + np.exp(-(logits + logit_bias)))).astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def ranking(probabilities: np.ndarray) -> np.ndarray:
    """INT32 [M, N]: per image, the candidates' indices from the most to the least
    probable (ties keep the request's order)."""
    return np.argsort(-probabilities, axis=1, kind="stable").astype(np.int32)


# Bytes ``clip_rank`` keeps of text embeddings when its config does not say (64 MiB: about
# 32,000 ViT-B-32 prompts, 512 x FP32 each plus the prompt and the entry's bookkeeping).
DEFAULT_TEXT_CACHE_BYTES = 64 * 2**20
# What one entry costs besides the embedding and the prompt's UTF-8 bytes (the OrderedDict
# slot, the key object and the array header), rounded up from sys.getsizeof on CPython 3.11.
ENTRY_OVERHEAD_BYTES = 200


class TextEmbeddingCache:
    """Prompt text -> its text embedding (FP32 [D]), kept by ``clip_rank`` across requests so
    that a label sent with 1,000 images is encoded once; least recently used entries are
    evicted beyond ``max_bytes``.

    Why not Triton's response cache on the text encoder: Triton 2.51 caches a Python-backend
    model's *error* responses too, as empty ones, so a second identical bad request to the
    encoder (token ids outside the vocabulary) got an empty success instead of its error
    (measured). This cache only ever holds embeddings the encoder returned.

    Attributes:
        hits / misses: lookups answered / not answered since the model loaded.
        evictions: entries dropped to stay within ``max_bytes``.
        size_bytes: what the entries hold now (embeddings, prompts, bookkeeping).
    """

    def __init__(self, max_bytes: int = DEFAULT_TEXT_CACHE_BYTES):
        if max_bytes < 0:
            raise ValueError(f"text cache size must be 0 (off) or more bytes, not {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self.hits = self.misses = self.evictions = self.size_bytes = 0

    @staticmethod
    def entry_bytes(prompt: str, embedding: np.ndarray) -> int:
        return embedding.nbytes + len(prompt.encode()) + ENTRY_OVERHEAD_BYTES

    def get(self, prompt: str) -> np.ndarray | None:
        """The cached embedding of ``prompt`` (counted as a hit), else None (a miss)."""
        embedding = self._entries.get(prompt)
        if embedding is None:
            self.misses += 1
            return None
        self._entries.move_to_end(prompt)
        self.hits += 1
        return embedding

    def put(self, prompt: str, embedding: np.ndarray) -> None:
        """Keep ``embedding`` (FP32 [D], copied) for ``prompt``, evicting the least recently
        used entries beyond ``max_bytes``; an entry larger than the whole cache is not kept."""
        size = self.entry_bytes(prompt, embedding)
        if size > self.max_bytes:
            return
        if prompt in self._entries:
            self.size_bytes -= self.entry_bytes(prompt, self._entries.pop(prompt))
        self._entries[prompt] = np.array(embedding, dtype=np.float32, copy=True)
        self.size_bytes += size
        while self.size_bytes > self.max_bytes:
            old_prompt, old = self._entries.popitem(last=False)
            self.size_bytes -= self.entry_bytes(old_prompt, old)
            self.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)
