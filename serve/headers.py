"""What a tritonlens server and its clients agree on: the headers and the API key.

* The API key that guards the restricted APIs (shared memory, model repository, logging,
  trace): its header, its environment variable and where a running ``tritonlens serve``
  keeps it. The launcher writes it; tritonlens' clients (``tritonlens.client.base``) read it.
* The headers of several replicas behind a proxy (``tritonlens.launcher.replicas``, host side): every
  request of a sequence carries its correlation ID in :data:`SEQUENCE_HEADER` (Triton reads
  it from the request body; the proxy routes on the header, so all frames of a stream reach
  the replica that holds its state), and the proxy names the replica that served each
  response in :data:`REPLICA_HEADER`.
"""

from __future__ import annotations

import os
from pathlib import Path

# The restricted APIs of a server started by `tritonlens serve` need this header (gRPC:
# metadata with Triton's prefix "triton-grpc-protocol-", see tritonlens.client.base).
API_KEY_HEADER = "tritonlens-api-key"
API_KEY_ENV = "TRITONLENS_API_KEY"
SEQUENCE_HEADER = "x-correlation-id"
REPLICA_HEADER = "x-tritonlens-replica"


def api_key_file(port: int) -> Path:
    """Where a local ``tritonlens serve`` keeps the API key of the server on ``port``
    (``$XDG_CACHE_HOME/tritonlens/api-keys/port-<port>``, mode 0600, while it runs)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "tritonlens" / "api-keys" / f"port-{port}"
