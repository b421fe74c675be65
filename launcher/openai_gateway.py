"""An OpenAI-compatible embeddings gateway in front of Triton: ``POST /v1/embeddings`` and
``GET /v1/models`` for the clients that speak OpenAI's API (the ``openai`` package,
LangChain, LlamaIndex, vector databases).

    python -m tritonlens.launcher.openai_gateway --triton 127.0.0.1:8001 --port 9000
    tritonlens serve --openai-port 9000        # the same, started and stopped with the server

A Starlette ASGI app run by uvicorn, calling Triton through its asyncio gRPC client
(``tritonclient.grpc.aio``), one channel shared by every request. A model name in a request
is a CLIP export's prefix (``clip``): texts go to ``<prefix>_embed_text`` (BYTES [n, 1] UTF-8
-> FP32 [n, D]), images to ``<prefix>_embed_image`` (BYTES [n, 1] file bytes -> FP32 [n, D]),
in chunks of each model's ``max_batch_size``, all chunks in flight at once so that Triton's
dynamic batcher groups them with every other client's. The vectors are the models' own
(unit-norm); requests are parsed and answered by :mod:`tritonlens.launcher.openai_api`.

Errors: a request the API refuses, or an input a model refuses (Triton's INVALID_ARGUMENT:
a corrupt image, an over-long text), fails alone with HTTP 400 and OpenAI's error JSON naming
``input[i]``; Triton unreachable: 503. Remote image URLs are never fetched.

Open by default, like Triton's inference APIs. With ``--require-key`` every request needs
``Authorization: Bearer <key>``, the key taken from ``$TRITONLENS_API_KEY`` (the project's
API key: ``tritonlens serve`` passes its own, as given by ``--api-key`` or made per start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcaio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tritonlens.launcher.openai_api import (ApiError, check_authorization, embedding_response,
                                            model_entry, models_response, parse_embedding_request)
from tritonlens.serve.headers import API_KEY_ENV

# clip_preprocess / clip_tokenize name a refused item by its position in the Triton request.
_ITEM_IN_REQUEST = re.compile(r"(?:image|text) (\d+) of the request")
KINDS = ("text", "image")
# The same bound as the replicas' nginx (`serve --max-body-size 64m`) and one image's in
# clip_preprocess (serve.images.DEFAULT_MAX_BYTES).
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class EmbedModel:
    """One served ensemble of a CLIP export: ``<prefix>_embed_text`` or ``_embed_image``.

    Attributes:
        name: the Triton model name.
        input: its BYTES input (``text`` or ``image``), shape [n, 1].
        max_batch_size: the largest n it takes (its config; 0: no batching, n = 1 per call).
        dim: D of its FP32 ``embedding`` output.
    """

    name: str
    input: str
    max_batch_size: int
    dim: int


class TritonEmbedder:
    """The Triton side of the gateway: model lookup and chunked inference over one asyncio
    gRPC channel.

    Args:
        url: Triton's gRPC endpoint (``host:port``; nginx's with ``--replicas N``).
        models: the model names (CLIP export prefixes) the gateway serves.
    """

    def __init__(self, url: str, models: list[str]):
        self.url = url
        self.models = list(models)
        self.client: grpcaio.InferenceServerClient | None = None
        self._found: dict[tuple[str, str], EmbedModel] = {}

    async def open(self) -> None:
        self.client = grpcaio.InferenceServerClient(self.url)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def model(self, prefix: str, kind: str) -> EmbedModel | None:
        """The ``<prefix>_embed_<kind>`` model from Triton's model-config API (open without
        the API key), or None when Triton does not serve it. Found models are remembered; a
        missing one is asked for again next time (it may be loaded later).

        Raises:
            ApiError: 503 when Triton cannot be reached.
        """
        if (prefix, kind) in self._found:
            return self._found[(prefix, kind)]
        name = f"{prefix}_embed_{kind}"
        try:
            config = (await self.client.get_model_config(name, as_json=True, client_timeout=30))["config"]
        except grpcaio.InferenceServerException as err:
            if _is_unreachable(err):
                raise _unreachable(self.url, err) from None
            return None
        output = next(o for o in config["output"] if o["name"] == "embedding")
        found = EmbedModel(name, config["input"][0]["name"], int(config.get("max_batch_size", 0)),
                           int(output["dims"][-1]))
        self._found[(prefix, kind)] = found
        return found

    async def ready_models(self) -> list[str]:
        """The served models (prefixes) whose text or image ensemble Triton has ready."""
        ready = []
        for prefix in self.models:
            for kind in KINDS:
                try:
                    if await self.client.is_model_ready(f"{prefix}_embed_{kind}", client_timeout=30):
                        ready.append(prefix)
                        break
                except grpcaio.InferenceServerException as err:
                    raise _unreachable(self.url, err) from None
        return ready

    async def embed(self, model: EmbedModel, items: list[bytes], positions: list[int]) -> np.ndarray:
        """FP32 [n, D]: ``model``'s embeddings of ``items`` (n >= 1), in order, sent in
        chunks of its max_batch_size, all in flight at once.

        Args:
            positions: each item's index in the OpenAI request (for error messages).

        Raises:
            ApiError: 400 when Triton refuses an input (INVALID_ARGUMENT; the message names
                ``input[i]`` when Triton names the item), 503 unreachable, 502 otherwise.
        """
        step = max(1, model.max_batch_size)
        chunks = [(start, items[start:start + step]) for start in range(0, len(items), step)]
        results = await asyncio.gather(*(self._infer(model, start, chunk, positions)
                                         for start, chunk in chunks))
        return np.concatenate(results)

    async def _infer(self, model: EmbedModel, start: int, chunk: list[bytes],
                     positions: list[int]) -> np.ndarray:
        batch = np.array(chunk, dtype=np.object_).reshape(-1, 1)
        shape = list(batch.shape) if model.max_batch_size else [1]
        tensor = grpcaio.InferInput(model.input, shape, "BYTES")
        tensor.set_data_from_numpy(batch if model.max_batch_size else batch.reshape(1))
        try:
            result = await self.client.infer(model.name, [tensor],
                                             outputs=[grpcaio.InferRequestedOutput("embedding")])
        except grpcaio.InferenceServerException as err:
            raise self._refusal(err, model, start, len(chunk), positions) from None
        return result.as_numpy("embedding").reshape(len(chunk), -1)

    def _refusal(self, err, model: EmbedModel, start: int, count: int, positions: list[int]) -> ApiError:
        message = err.message() or str(err)
        if _is_unreachable(err):
            return _unreachable(self.url, err)
        if "INVALID_ARGUMENT" not in str(err.status()):
            return ApiError(502, f"Triton failed on {model.name}: {message}", code="triton_error")
        found = _ITEM_IN_REQUEST.search(message)
        if found and int(found.group(1)) < count:
            index = positions[start + int(found.group(1))]
            return ApiError(400, f"input[{index}]: {message}", f"input[{index}]", "invalid_value")
        where = ", ".join(f"input[{positions[i]}]" for i in range(start, start + count))
        return ApiError(400, f"{model.name} refused {where}: {message}", "input", "invalid_value")


def _is_unreachable(err) -> bool:
    return "UNAVAILABLE" in str(err.status()) or "DEADLINE_EXCEEDED" in str(err.status())


def _unreachable(url: str, err) -> ApiError:
    return ApiError(503, f"Triton at {url} is unavailable: {err.message() or err}", code="triton_unavailable")


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused as soon as it passes ``limit`` bytes.

    Raises:
        ApiError: 413 (``request_too_large``) naming the limit.
    """
    declared = request.headers.get("content-length", "")
    chunks, size = [], 0
    if not declared.isdigit() or int(declared) <= limit:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
    if size > limit or (declared.isdigit() and int(declared) > limit):
        raise ApiError(413, f"the request body is over the gateway's limit of {limit} bytes "
                            "(--max-body-bytes): send fewer or smaller images per request",
                       "input", "request_too_large")
    return b"".join(chunks)


def create_app(triton_url: str, models: list[str], api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """The ASGI app: ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{model}``
    and ``GET /health`` (the gateway is up and Triton answers; never needs the key).

    Args:
        triton_url: Triton's gRPC endpoint.
        models: served model names (CLIP export prefixes).
        api_key: the key every /v1 request must bring as ``Authorization: Bearer``; None: open.
        max_body_bytes: the largest request body (413 beyond).
    """
    embedder = TritonEmbedder(triton_url, models)

    def authorize(request: Request) -> None:
        check_authorization(request.headers.get("authorization"), api_key)

    async def embeddings(request: Request) -> JSONResponse:
        try:
            authorize(request)
            try:
                body = json.loads(await read_body(request, max_body_bytes))
            except ValueError as err:
                raise ApiError(400, f"the request body is not JSON: {err}", None, "invalid_json") from None
            parsed = parse_embedding_request(body)
            if parsed.model not in embedder.models:
                raise ApiError(404, f"model {parsed.model!r} is not served by this gateway; it "
                                    f"serves {', '.join(embedder.models)} (GET /v1/models)",
                               "model", "model_not_found")
            vectors: np.ndarray | None = None
            work = []
            for kind in KINDS:
                positions = parsed.indices(kind)
                if not positions:
                    continue
                model = await embedder.model(parsed.model, kind)
                if model is None:
                    raise ApiError(400, f"model {parsed.model!r} serves no {kind} embeddings "
                                        f"(Triton has no {parsed.model}_embed_{kind} ready)",
                                   f"input[{positions[0]}]", "unsupported_modality")
                if parsed.dimensions is not None and parsed.dimensions != model.dim:
                    raise ApiError(400, f"dimensions {parsed.dimensions}: {parsed.model}'s "
                                        f"embeddings have {model.dim} (CLIP embeddings cannot be "
                                        "shortened)", "dimensions")
                work.append((positions, embedder.embed(model, [parsed.items[i][1] for i in positions],
                                                       positions)))
            results = await asyncio.gather(*(job for _, job in work))
            for (positions, _), rows in zip(work, results):
                if vectors is None:
                    vectors = np.empty((len(parsed.items), rows.shape[1]), np.float32)
                vectors[positions] = rows
            return JSONResponse(embedding_response(parsed.model, vectors, parsed.encoding_format))
        except ApiError as err:
            return error_response(err)

    async def list_models(request: Request) -> JSONResponse:
        try:
            authorize(request)
            return JSONResponse(models_response(await embedder.ready_models()))
        except ApiError as err:
            return error_response(err)

    async def get_model(request: Request) -> JSONResponse:
        try:
            authorize(request)
            name = request.path_params["model"]
            if name not in await embedder.ready_models():
                raise ApiError(404, f"model {name!r} is not served by this gateway (GET /v1/models)",
                               "model", "model_not_found")
            return JSONResponse(model_entry(name))
        except ApiError as err:
            return error_response(err)

    async def health(request: Request) -> JSONResponse:
        try:
            live = await embedder.client.is_server_live(client_timeout=5)
        except grpcaio.InferenceServerException:
            live = False
        return JSONResponse({"status": "ok" if live else "triton unreachable", "triton": triton_url},
                            status_code=200 if live else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app):  # the gRPC channel belongs to uvicorn's event loop
        await embedder.open()
        yield
        await embedder.close()

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/v1/models", list_models, methods=["GET"]),
                             Route("/v1/models/{model}", get_model, methods=["GET"]),
                             Route("/health", health, methods=["GET"])],
                     lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    """``python -m tritonlens.launcher.openai_gateway``: run the gateway until SIGINT/SIGTERM."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triton", required=True, help="Triton's gRPC endpoint, host:port")
    parser.add_argument("--host", default="127.0.0.1", help="address the gateway binds to")
    parser.add_argument("--port", type=int, default=9000, help="the gateway's HTTP port")
    parser.add_argument("--model", action="append", dest="models",
                        help="a served model name, a CLIP export's prefix (repeatable; default clip)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="the largest request body in bytes (413 beyond)")
    parser.add_argument("--require-key", action="store_true",
                        help=f"require 'Authorization: Bearer <${API_KEY_ENV}>' on every /v1 request")
    args = parser.parse_args(argv)
    api_key = os.environ.get(API_KEY_ENV) if args.require_key else None
    if args.require_key and not api_key:
        sys.exit(f"--require-key needs the key in ${API_KEY_ENV}")
    app = create_app(args.triton, args.models or ["clip"], api_key, args.max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
