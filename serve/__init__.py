"""tritonlens.serve: run a real tritonserver locally, and the Python-based backends."""

from tritonlens.serve.launcher import ModelLoadError, ServerStartError, TritonServer

__all__ = ["ModelLoadError", "ServerStartError", "TritonServer"]
