"""tritonlens.launcher: the host side of serving. Starts and supervises ``tritonserver``
processes on this host (one server, or N replicas behind nginx) and talks to Triton's HTTP
admin API. Nothing here runs inside Triton's Python-backend stubs; that code is
``tritonlens.serve``.

Modules: ``install`` (the server binary from the nvidia-pytriton wheel and the backend
directory), ``process`` (ports, parent-death, the log stream), ``flags`` (which tritonserver
flags pass through), ``admin`` (Triton's HTTP admin API), ``server`` (:class:`TritonServer`),
``health`` (reload a model whose stub died), ``nginx`` and ``replicas`` (``--replicas N``),
``run`` (the run-until-signal loop of ``tritonlens serve``), ``openai_api``, ``openai_gateway``
and ``openai_process`` (the OpenAI-compatible embeddings gateway, ``--openai-port``).
"""

from tritonlens.launcher.errors import ModelLoadError, ProxyNotFoundError, ServerStartError, TritonNotFoundError
from tritonlens.launcher.server import TritonServer

__all__ = ["ModelLoadError", "ProxyNotFoundError", "ServerStartError", "TritonNotFoundError", "TritonServer"]
