"""tritonlens.serve: run a real tritonserver locally, and the Python-based backends.

``TritonServer`` and its errors are imported lazily (PEP 562): the Python-backend models
import ``tritonlens.serve.errors`` / ``.batching`` / ``.images`` inside Triton's stubs, and
those must not pull in the launcher.
"""

import importlib

_NAMES = {"ModelLoadError": "launcher", "ServerStartError": "launcher", "TritonServer": "launcher"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
