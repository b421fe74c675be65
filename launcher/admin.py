"""One small client for the parts of Triton's v2 HTTP API that the host side uses.

Health (``/v2/health/live``, ``/v2/health/ready``), server metadata (``/v2``), the model
repository index and (re)loads (``/v2/repository/...``) and model configs
(``/v2/models/<name>/config``). The launcher, the stub monitor and the replica set all go
through it; inference goes through tritonclient, not here. The restricted APIs
(repository) need the API key header, which callers pass in ``headers``.

Protocol reference: Triton's HTTP/REST extensions (``docs/protocol/extension_*.md``) and
KServe's v2 inference protocol.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
from email.message import Message
import urllib.request


class TritonAdmin:
    """Triton's HTTP admin endpoints at ``http_url`` (``host:port``, no scheme).

    Args:
        http_url: the server's (or the proxy's) HTTP endpoint, e.g. ``127.0.0.1:8000``.
        headers: sent with every request (e.g. ``{API_KEY_HEADER: key}``).
        timeout: per request (s).

    Every method but :meth:`status` raises ``urllib.error.URLError`` (``HTTPError`` for a
    non-2xx answer) or ``OSError`` when the server cannot be reached.
    """

    def __init__(self, http_url: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
        self.http_url = http_url
        self.headers = dict(headers or {})
        self.timeout = timeout

    def request(self, path: str, body: bytes | None = None, timeout: float | None = None,
                headers: dict[str, str] | None = None) -> tuple[bytes, Message]:
        """GET ``path`` (POST when ``body`` is given) with ``headers`` added to the client's;
        returns (response body, response headers: case-insensitive ``.get``)."""
        request = urllib.request.Request(
            f"http://{self.http_url}{path}", data=body, method="POST" if body is not None else "GET",
            headers={"Content-Type": "application/json", **self.headers, **(headers or {})})
        with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
            return response.read(), response.headers

    def json(self, path: str, body: bytes | None = None, timeout: float | None = None):
        """:meth:`request`, its body parsed as JSON."""
        return json.loads(self.request(path, body, timeout)[0])

    def status(self, path: str, timeout: float = 5.0) -> int:
        """The HTTP status of GET ``path``; -1 when no HTTP server answers (refused, reset,
        timed out, or not HTTP/1.1, e.g. a gRPC port)."""
        try:
            self.request(path, timeout=timeout)
            return 200
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, OSError, http.client.HTTPException):  # not an HTTP server
            return -1

    def is_live(self) -> bool:
        return self.status("/v2/health/live") == 200

    def is_ready(self) -> bool:
        """True when the server answers ready (every loaded model ready)."""
        return self.status("/v2/health/ready") == 200

    def metadata(self) -> dict:
        """Server metadata (``GET /v2``): ``name``, ``version`` (e.g. "2.51.0"), ``extensions``."""
        return self.json("/v2")

    def repository_index(self) -> list[dict]:
        """The model repository index: ``[{name, version, state, reason}, ...]``."""
        return self.json("/v2/repository/index", b"{}")

    def model_config(self, model: str) -> dict:
        """The model's configuration as Triton serves it (JSON form of ``config.pbtxt``)."""
        return self.json(f"/v2/models/{model}/config")

    def load(self, model: str, config: dict | None = None, timeout: float | None = None) -> None:
        """Load (or reload) ``model``; with ``config``, that configuration replaces the file's."""
        body = {"parameters": {"config": json.dumps(config)}} if config is not None else {}
        self.request(f"/v2/repository/models/{model}/load", json.dumps(body).encode(), timeout)
