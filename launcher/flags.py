"""Which tritonserver flags the launcher sets itself, and which pass through.

``tritonlens serve -- --flag=value`` hands flags to tritonserver unchanged, except those an
option of ``tritonlens serve`` sets (the user is told which option) and those that cannot
change (the user is told why).
"""

from __future__ import annotations

# Triton's API groups that only callers with the API key may use (Triton's category names).
# inference, health, metadata, model-config and statistics stay open.
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")
# tritonserver flags that configure the response cache themselves: passed through, they replace
# the launcher's ``--cache-config`` (``TritonServer(response_cache_bytes=...)``).
CACHE_FLAGS = ("--cache-config", "--response-cache-byte-size")


# tritonserver flags the launcher sets itself: those an option sets (-> that option of
# `tritonlens serve` / TritonServer), and those that cannot change (-> why).
OPTION_FLAGS = {
    "--model-repository": "--repo", "--model-store": "--repo",
    "--http-port": "--http-port", "--grpc-port": "--grpc-port", "--metrics-port": "--metrics-port",
    "--http-address": "--host", "--grpc-address": "--host", "--metrics-address": "--host",
    "--model-control-mode": "--model-control-mode", "--load-model": "--load-model",
    "--log-verbose": "--log-verbose", "--log-file": "--log-file",
    "--http-restricted-api": "--api-key", "--grpc-restricted-protocol": "--api-key",
}
FIXED_FLAGS = {
    "--backend-directory": "tritonlens assembles the backend directory (the Python backend "
                           "and its Python-based onnxruntime/pytorch backends)",
    "--strict-readiness": "readiness checks rely on strict readiness",
    "--exit-on-error": "one model failing to load must not stop the others",
}


def check_extra_args(args) -> list[str]:
    """``args`` as a list of tritonserver flags, ``--flag value`` pairs joined to
    ``--flag=value``.

    Raises:
        ValueError: an argument that is not a ``--flag``; a flag in :data:`OPTION_FLAGS`
            (named, with the option that sets it) or :data:`FIXED_FLAGS`; a ``--backend-config`` of the Python
            backends' ``shm-region-prefix-name`` (the launcher's per-start prefix, which
            lets it remove only its own ``/dev/shm`` regions).
    """
    args, joined = list(args), []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"tritonserver flag expected, got {arg!r} (flags are --name=value)")
        if "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("--"):
            arg, i = f"{arg}={args[i + 1]}", i + 1
        name = arg.split("=", 1)[0]
        if name in OPTION_FLAGS:
            raise ValueError(f"tritonserver flag {name} is set by tritonlens itself: "
                             f"use its {OPTION_FLAGS[name]} option")
        if name in FIXED_FLAGS:
            raise ValueError(f"tritonserver flag {name} is set by tritonlens itself and cannot "
                             f"be passed through ({FIXED_FLAGS[name]})")
        if name == "--backend-config" and "shm-region-prefix-name" in arg:
            raise ValueError("--backend-config=...,shm-region-prefix-name is set by tritonlens "
                             "itself (a per-start prefix, so only this server's /dev/shm "
                             "regions are removed at stop)")
        joined.append(arg)
        i += 1
    return joined
