"""What every tritonlens client shares: a connection over gRPC or HTTP, and clear errors.

The model families' clients (``ClipClient``, ...) subclass :class:`TritonClient`. Any stock
Triton client can call the same models; this layer only adds typed results, concurrency
and one-line error messages.
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from tritonlens.serve.headers import (API_KEY_ENV, API_KEY_HEADER, REPLICA_HEADER,  # noqa: F401
                                      SEQUENCE_HEADER, api_key_file)

PROTOCOLS = ("grpc", "http")
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
# The restricted APIs of a server started by `tritonlens serve` (shared memory, model
# repository, logging, trace) need the API_KEY_HEADER header (tritonlens.serve.headers);
# Triton's gRPC server expects restricted metadata keys with the prefix
# "triton-grpc-protocol-" (Triton's kRestrictedProtocolHeaderTemplate).
GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"


def find_api_key(url: str) -> str | None:
    """The API key for the server at ``host:port``: ``$TRITONLENS_API_KEY``, else the key
    file a local ``tritonlens serve`` wrote for that port, else None."""
    if os.environ.get(API_KEY_ENV):
        return os.environ[API_KEY_ENV]
    port = url.rpartition(":")[2]
    path = api_key_file(int(port)) if port.isdigit() else None
    try:
        return path.read_text().strip() if path else None
    except OSError:
        return None


def api_key_headers(api_key: str | None, protocol: str) -> dict[str, str]:
    """The header (HTTP) or metadata (gRPC) carrying ``api_key``; empty without a key."""
    if not api_key:
        return {}
    return {(GRPC_RESTRICTED_PREFIX if protocol == "grpc" else "") + API_KEY_HEADER: api_key}


class _ApiKeyPlugin:
    """A tritonclient plugin that adds the API-key header to every call."""

    def __init__(self, headers: dict[str, str]):
        self.headers = headers

    def __call__(self, request) -> None:
        request.headers.update(self.headers)


class TritonLensError(RuntimeError):
    """A request could not be served; ``str(err)`` is a one-line reason for the user."""


class ServerUnreachableError(TritonLensError):
    """No Triton server answers at the URL."""


class ModelNotReadyError(TritonLensError):
    """The server answers but the model is not loaded (or does not exist)."""


# Triton 2.51's Python backend answers this for every request to an instance whose stub
# process died (launcher/health.py reloads such a model).
STUB_DIED = "is not healthy"


class InferenceError(TritonLensError):
    """The server refused or failed one request (bad input, model error).

    ``status`` is the protocol's status as tritonclient reports it: "StatusCode.INVALID_ARGUMENT"
    (gRPC) or "400" (HTTP) for a request the caller must fix; INTERNAL / "500" for a server
    failure; None when unknown.
    """

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


def _modules(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as module
    elif protocol == "http":
        import tritonclient.http as module
    else:
        raise ValueError(f"protocol must be grpc or http, not {protocol!r}")
    from tritonclient.utils import InferenceServerException
    return module, InferenceServerException


def host_port(url: str, protocol: str) -> str:
    """The ``host:port`` tritonclient takes, from what a user may type: ``http://`` and
    ``grpc://`` schemes and a trailing ``/`` are dropped (tritonclient refuses them, with a
    traceback from its ``__del__``).

    Raises:
        TritonLensError: an ``https://`` URL (TLS is not supported by this client), or a URL
            with a path.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() == "https":
            raise TritonLensError(f"--url {url}: TLS (https) is not supported by tritonlens' "
                                  "client; give host:port of a plain HTTP or gRPC endpoint")
        if scheme.lower() not in ("http", "grpc"):
            raise TritonLensError(f"--url {url}: give host:port (e.g. 127.0.0.1:8001)")
        text = rest
    text = text.rstrip("/")
    if "/" in text or not text:
        raise TritonLensError(f"--url {url}: give host:port (e.g. 127.0.0.1:8001 for {protocol}), "
                              "without a path")
    return text


def answers_http(url: str, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` answers an HTTP/1.1 request (any status): an HTTP endpoint."""
    from tritonlens.launcher.admin import TritonAdmin

    return TritonAdmin(url).status("/v2/health/live", timeout=timeout) != -1


def one_line(err: Exception) -> str:
    """Triton's error text without status-code noise, on one line."""
    text = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    text = str(text).replace("[request id: <id_unknown>] ", "")
    return " ".join(text.split())


class TritonClient:
    """A connection to one Triton server.

    Safe to share between threads: each thread gets its own tritonclient connection.

    Args:
        url: ``host:port`` of the server's gRPC or HTTP endpoint (defaults: 8001 / 8000).
        protocol: ``grpc`` or ``http``.
        timeout: seconds to wait for one request (network timeout).
        api_key: sent as the ``tritonlens-api-key`` header on every call (the restricted
            shared-memory / model-repository / logging / trace APIs need it); default
            :func:`find_api_key` for ``url``.
        sequence_header: the header that carries a request's correlation ID (``sequence_id``)
            besides the request body, for proxies that route a sequence to one replica;
            None sends none.
    """

    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout: float = 120.0,
                 api_key: str | None = None, sequence_header: str | None = SEQUENCE_HEADER):
        self.protocol = protocol
        self.module, self._exception = _modules(protocol)
        self.url = host_port(url, protocol) if url else DEFAULT_URLS[protocol]
        self.timeout = timeout
        self.api_key = api_key or find_api_key(self.url)
        self.sequence_header = sequence_header
        self._local = threading.local()
        self._max_batch_sizes: dict[str, int] = {}  # model -> max_batch_size, see max_batch_size()

    @property
    def connection(self):
        """This thread's tritonclient ``InferenceServerClient``."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.protocol == "grpc":
                conn = self.module.InferenceServerClient(self.url)
            else:
                conn = self.module.InferenceServerClient(
                    self.url, connection_timeout=self.timeout, network_timeout=self.timeout)
            headers = api_key_headers(self.api_key, self.protocol)
            if headers:
                conn.register_plugin(_ApiKeyPlugin(headers))
            self._local.conn = conn
        return conn

    def check_ready(self, *models: str) -> None:
        """Raise a clear error unless the server is live and every model is ready.

        Raises:
            ServerUnreachableError, ModelNotReadyError.
        """
        try:
            live = self.connection.is_server_live()
        except Exception as err:  # noqa: BLE001 - connection errors come in many types
            raise self._unreachable(err) from None
        if not live:
            raise ServerUnreachableError(f"Triton server at {self.url} is not live")
        try:  # Triton's metrics port answers 200 to every path, with no JSON
            self.connection.get_server_metadata()
        except Exception as err:  # noqa: BLE001
            raise self._unreachable(err) from None
        for model in models:
            try:
                ready = self.connection.is_model_ready(model)
            except Exception as err:  # noqa: BLE001 - e.g. a non-JSON answer from another port
                raise self._unreachable(err) from None
            if not ready:
                raise ModelNotReadyError(self._not_ready_reason(model))

    def _unreachable(self, err: Exception) -> ServerUnreachableError:
        """The one-line error for a server that does not answer as Triton on this protocol."""
        message = one_line(err)
        other = "http" if self.protocol == "grpc" else "grpc"
        if self.protocol == "grpc" and answers_http(self.url):
            return ServerUnreachableError(
                f"{self.url} speaks HTTP/1.x, not gRPC: use --protocol http for Triton's HTTP "
                "port, or the gRPC port (8001 by default)")
        if self.protocol == "http" and "expected http/" in message.lower():
            return ServerUnreachableError(
                f"{self.url} does not speak HTTP/1.1 (is it the gRPC port?): use --protocol grpc "
                "for Triton's gRPC port, or the HTTP port (8000 by default)")
        if isinstance(err, ValueError) or "decode" in message.lower():  # e.g. JSONDecodeError
            return ServerUnreachableError(
                f"{self.url} answers, but not as Triton's {self.protocol} endpoint (is it the "
                f"metrics port, or the {other} port?): {message}")
        return ServerUnreachableError(
            f"no Triton server at {self.url} ({self.protocol}): {message}; start one with "
            "`tritonlens serve`")

    def _not_ready_reason(self, model: str) -> str:
        """Why ``model`` is not ready: not in the repository, or there but not loaded."""
        try:
            index = self.connection.get_model_repository_index(
                **({"as_json": True} if self.protocol == "grpc" else {}))
        except Exception as err:  # noqa: BLE001 - e.g. a restricted API without its key
            return (f"model {model!r} is not ready on {self.url}, and the server's repository "
                    f"index cannot be read to say why ({one_line(err)}): check the server log "
                    "or `tritonlens status` on the server's host")
        entries = index.get("models", []) if isinstance(index, dict) else index
        entry = next((m for m in entries if m.get("name") == model), None)
        if entry is None:
            return (f"model {model!r} is not in the repository of the server at {self.url}: "
                    "export it with `tritonlens export ...`, then check `tritonlens status`")
        why = ", ".join(filter(None, (entry.get("state"), entry.get("reason"))))
        return (f"model {model!r} is in the repository of the server at {self.url} but not "
                f"loaded{f' ({why})' if why else ''}: load it (with explicit model control: "
                f"`tritonlens serve --load-model {model}`){', fixing that reason' if why else ''}")

    def model_parameter(self, model: str, key: str, default: str = "unknown") -> str:
        """A string parameter of a served model's config (e.g. ``tritonlens.weights``)."""
        config = self.connection.get_model_config(model)
        if self.protocol == "grpc":
            params = config.config.parameters
            return params[key].string_value if key in params else default
        return config.get("parameters", {}).get(key, {}).get("string_value", default)

    def max_batch_size(self, model: str) -> int:
        """The served ``model``'s ``max_batch_size`` (its config.pbtxt, as the server reports
        it through get_model_config); 0 means the model does not batch. Read once per client
        and model, then cached.

        Raises:
            ServerUnreachableError, ModelNotReadyError (the server does not know the model).
        """
        cache = self._max_batch_sizes
        if model not in cache:
            try:
                config = self.connection.get_model_config(model)
            except self._exception as err:
                message = one_line(err)
                if "failed to connect" in message.lower() or "unavailable" in message.lower():
                    raise self._unreachable(err) from None
                raise ModelNotReadyError(f"{model}: {message}") from None
            except (ConnectionError, OSError, ValueError) as err:
                raise self._unreachable(err) from None
            cache[model] = int(config.config.max_batch_size if self.protocol == "grpc"
                               else config.get("max_batch_size", 0))
        return cache[model]

    def infer(self, model: str, inputs: dict[str, np.ndarray],
              outputs: Sequence[str] = (), class_count: int = 0, **kwargs):
        """Send one request; returns tritonclient's result (``as_numpy(name)``).

        Args:
            inputs: input name -> array; numpy dtype decides the Triton type (object or
                bytes arrays are sent as BYTES).
            outputs: output names to request (all when empty).
            class_count: with > 0, ask Triton's classification extension for the top
                ``class_count`` entries ("score:index:label") of every requested output.
            kwargs: passed to tritonclient's ``infer`` (sequence_id, sequence_start, ...).
                A non-zero ``sequence_id`` is also sent in the :attr:`sequence_header`
                header (merged into ``headers``; a caller's own value of it wins).

        Raises:
            ServerUnreachableError, InferenceError.
        """
        from tritonclient.utils import np_to_triton_dtype

        infer_inputs = []
        for name, array in inputs.items():
            dtype = "BYTES" if array.dtype == np.object_ or array.dtype.kind == "S" else \
                np_to_triton_dtype(array.dtype)
            item = self.module.InferInput(name, list(array.shape), dtype)
            item.set_data_from_numpy(array)
            infer_inputs.append(item)
        requested = [self.module.InferRequestedOutput(name, class_count=class_count)
                     for name in outputs] or None
        sequence_id = kwargs.get("sequence_id")
        if self.sequence_header and sequence_id not in (None, 0, ""):
            kwargs["headers"] = {self.sequence_header: str(sequence_id), **(kwargs.get("headers") or {})}
        try:
            if self.protocol == "grpc":
                kwargs.setdefault("client_timeout", self.timeout)
            return self.connection.infer(model, infer_inputs, outputs=requested, **kwargs)
        except self._exception as err:
            message = one_line(err)
            if "failed to connect" in message.lower() or "unavailable" in message.lower():
                raise self._unreachable(err) from None
            status = err.status() if callable(getattr(err, "status", None)) else None
            if STUB_DIED in message:
                message += (" (the model's Python-backend process died: `tritonlens serve` "
                            "reloads the model within seconds, and state it held, such as a "
                            "tracker's streams, is lost; retry, and start streams again)")
            raise InferenceError(f"{model}: {message}", None if status is None else str(status)) \
                from None
        except (ConnectionError, OSError, ValueError) as err:
            raise self._unreachable(err) from None
