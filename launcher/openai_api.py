"""The OpenAI embeddings API as tritonlens' gateway speaks it: requests, responses, errors.

Pure functions, no I/O, so that every refusal is unit-tested (tests/unit/test_openai_api.py);
the ASGI app that calls them is :mod:`tritonlens.launcher.openai_gateway`. The shapes follow
OpenAI's API reference for ``POST /v1/embeddings`` and ``GET /v1/models``:

* request: ``{"input": str | [str, ...], "model": str, "encoding_format": "float" | "base64",
  "dimensions": int?, "user": str?}``, plus ``"modality": "auto" | "text" | "image"`` (the
  field infinity's ``/embeddings`` has for the same purpose);
* response: ``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding":
  [float, ...] | "<base64>"}], "model": str, "usage": {"prompt_tokens", "total_tokens"}}``;
  base64 is the embedding's little-endian float32 bytes, what the ``openai`` package decodes
  (``numpy.frombuffer(base64.b64decode(s), dtype="float32")``);
* errors: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status.

Images travel in ``input`` beside texts: a ``data:image/<format>;base64,...`` URL, or the
base64 of a JPEG, PNG or WebP file (recognised by the file signature it decodes to:
:func:`tritonlens.serve.images.unwrap_base64`, the rule clip_preprocess itself applies).
Remote ``http(s)://`` image URLs are refused, never fetched: a server that fetched them would
send requests wherever its clients point it (server-side request forgery).
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass

import numpy as np

from tritonlens.serve.images import ImageError, signature_format, unwrap_base64

# OpenAI's own bound on inputs per request (its API reference: "must not exceed 2048").
MAX_INPUTS = 2048
MODALITIES = ("auto", "text", "image")
ENCODING_FORMATS = ("float", "base64")
# A whole string that is one http(s) URL (no whitespace): read as a remote image, refused.
REMOTE_URL = re.compile(r"(?i)https?://\S+")
# The start of a data URL (RFC 2397): "data:" then an optional media type, then ';' or ','.
# "data: the new oil" (a text) does not match.
DATA_URL = re.compile(r"(?i)data:([a-z0-9.+-]+/[a-z0-9.+-]+)?[;,]")


class ApiError(Exception):
    """A request refused with OpenAI's error JSON (:meth:`body`) and an HTTP ``status``.

    Attributes:
        status: 400 bad input, 401 missing or wrong key, 404 unknown model, 413 body too
            large, 502/503 Triton.
        message: what is wrong and how to fix it.
        param: the request field at fault (``input``, ``input[3]``, ``model`` ...), or None.
        code: OpenAI's machine-readable code (``invalid_api_key``, ``model_not_found`` ...).
        type: OpenAI's error type (``invalid_request_error`` for 4xx, ``api_error`` for 5xx).
    """

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = "invalid_request_error" if status < 500 else "api_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def bad_input(message: str, param: str | None = "input", code: str = "invalid_value") -> ApiError:
    """A 400 :class:`ApiError`."""
    return ApiError(400, message, param, code)


@dataclass
class EmbeddingRequest:
    """One parsed ``POST /v1/embeddings``.

    Attributes:
        model: the requested model (a CLIP export's prefix, e.g. ``clip``).
        items: the inputs in request order: ``("text", UTF-8 bytes)`` or ``("image", file bytes)``.
        encoding_format: ``float`` or ``base64``.
        dimensions: the requested embedding size, or None (checked against the model's by
            the gateway: CLIP's embeddings are not truncatable).
    """

    model: str
    items: list[tuple[str, bytes]]
    encoding_format: str = "float"
    dimensions: int | None = None

    def indices(self, kind: str) -> list[int]:
        """Positions in the request of the items of ``kind`` (``text`` or ``image``)."""
        return [i for i, (k, _) in enumerate(self.items) if k == kind]


def check_authorization(header: str | None, api_key: str | None) -> None:
    """Check ``Authorization: Bearer <key>`` against ``api_key`` (None: the gateway is open,
    any header or none is accepted). Constant-time comparison.

    Raises:
        ApiError: 401, ``invalid_api_key``: no header, not a Bearer token, or another key.
    """
    if api_key is None:
        return
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "no API key: this gateway requires 'Authorization: Bearer <key>' "
                            "(the key of `tritonlens serve --api-key`, or the file named when "
                            "the gateway started)", code="invalid_api_key")
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(401, "incorrect API key in 'Authorization: Bearer ...'", code="invalid_api_key")


def parse_item(value, index: int, modality: str) -> tuple[str, bytes]:
    """One element of ``input`` -> ``("text" | "image", bytes)``.

    ``auto``: a data URL is an image; a whole-string http(s) URL is refused; plain base64
    that decodes to a JPEG, PNG or WebP file is an image; anything else is text. ``text``:
    always text. ``image``: a data URL or plain base64 of an image file.

    Raises:
        ApiError: 400 naming ``input[index]``: not a string (token arrays are not supported:
            the tokenizer runs on the server), empty, a remote URL, a data URL that is not
            an image or not valid base64, or (``image``) not an image file's base64.
    """
    param = f"input[{index}]"
    if not isinstance(value, str):
        raise bad_input(f"{param} is a {type(value).__name__}: send strings (texts, or images as "
                        "data: URLs / base64); token arrays are not supported, the tokenizer runs "
                        "on the server", param)
    if not value:
        raise bad_input(f"{param} is an empty string", param)
    if modality == "text":
        return "text", value.encode("utf-8")
    stripped = value.strip()
    if REMOTE_URL.fullmatch(stripped):
        raise bad_input(f"{param} is a remote URL ({stripped[:80]}): this server does not fetch "
                        "URLs (that would let clients make it send requests anywhere: server-side "
                        "request forgery); send the image itself as 'data:image/<format>;base64,"
                        "<base64 of the file>'", param, "remote_url_not_fetched")
    is_data_url = DATA_URL.match(stripped) is not None
    if is_data_url:
        media_type = (DATA_URL.match(stripped).group(1) or "").lower()
        if media_type and not media_type.startswith("image/"):
            raise bad_input(f"{param} is a data URL of {media_type!r}, not of an image: "
                            "send 'data:image/<format>;base64,...'", param)
    if is_data_url or modality == "image":
        raw = stripped.encode("ascii", "replace")
    else:
        raw = value.encode("utf-8")
        if raw[:5].lower() == b"data:":  # "data: ..." in prose, not a data URL
            return "text", raw
    try:
        data = unwrap_base64(raw)
    except ImageError as err:
        raise bad_input(f"{param}: {err}", param) from None
    if is_data_url:
        return "image", data
    if data is not raw:  # plain base64 of a JPEG, PNG or WebP file
        return "image", data
    if modality == "image":
        if signature_format(raw):
            raise bad_input(f"{param} looks like raw image bytes in a JSON string: send the file "
                            "as base64 or a data URL", param)
        raise bad_input(f"{param} is not the base64 of a JPEG, PNG or WebP file (modality "
                        "'image'): send 'data:image/<format>;base64,<base64 of the file>'", param)
    return "text", raw


def parse_embedding_request(body) -> EmbeddingRequest:
    """A decoded JSON body of ``POST /v1/embeddings`` -> :class:`EmbeddingRequest`.

    Raises:
        ApiError: 400 naming the field: body not an object; ``model`` missing or not a
            string; ``input`` missing, empty, not a string or list, over :data:`MAX_INPUTS`
            items, or an item refused by :func:`parse_item`; ``encoding_format`` not in
            :data:`ENCODING_FORMATS`; ``modality`` not in :data:`MODALITIES`;
            ``dimensions`` not a positive integer.
    """
    if not isinstance(body, dict):
        raise bad_input("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_input("'model' is required: a model name from GET /v1/models", "model")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise bad_input(f"encoding_format {encoding_format!r} is not one of "
                        f"{', '.join(ENCODING_FORMATS)}", "encoding_format")
    modality = body.get("modality") or "auto"
    if modality not in MODALITIES:
        raise bad_input(f"modality {modality!r} is not one of {', '.join(MODALITIES)}", "modality")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                   or dimensions < 1):
        raise bad_input(f"dimensions must be a positive integer, not {dimensions!r}", "dimensions")
    if "input" not in body:
        raise bad_input("'input' is required: a string or a list of strings")
    values = body["input"]
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise bad_input(f"'input' must be a string or a list of strings, not {type(values).__name__}")
    if not values:
        raise bad_input("'input' is an empty list: send at least one text or image")
    if len(values) > MAX_INPUTS:
        raise bad_input(f"'input' has {len(values)} items, over the limit of {MAX_INPUTS} per request")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise bad_input("'input' is a token array: send strings; the tokenizer runs on the server")
    items = [parse_item(value, i, modality) for i, value in enumerate(values)]
    return EmbeddingRequest(model, items, encoding_format, dimensions)


def encode_embedding(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """One FP32 [D] embedding as OpenAI sends it: a list of floats (each float32 value
    exactly, as a JSON number), or base64 of its little-endian float32 bytes."""
    vector = np.asarray(vector, dtype="<f4")
    if encoding_format == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return vector.tolist()


def embedding_response(model: str, vectors: np.ndarray, encoding_format: str) -> dict:
    """OpenAI's embeddings response for FP32 [N, D] ``vectors`` in request order.

    ``usage`` counts inputs (one per text or image), not tokens: the tokenizer runs inside
    Triton (``<prefix>_tokenize``), whose ensemble returns no token counts.
    """
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode_embedding(v, encoding_format)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": len(vectors), "total_tokens": len(vectors)}}


def model_entry(model: str) -> dict:
    """One model as ``GET /v1/models`` lists it."""
    return {"id": model, "object": "model", "created": 0, "owned_by": "tritonlens"}


def models_response(models: list[str]) -> dict:
    """``GET /v1/models``: the models this gateway serves."""
    return {"object": "list", "data": [model_entry(m) for m in models]}
