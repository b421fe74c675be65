"""The errors the host side raises while starting and running servers."""

from __future__ import annotations


class TritonNotFoundError(RuntimeError):
    """The ``tritonserver`` binary (from the ``nvidia-pytriton`` wheel) is not installed."""


class ServerStartError(RuntimeError):
    """``tritonserver`` exited or did not become live within the start-up timeout."""


class ModelLoadError(RuntimeError):
    """One or more models failed to load. ``failures`` maps model name to Triton's reason."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        lines = [f"{name}: {reason}" for name, reason in sorted(failures.items())]
        super().__init__("model(s) failed to load:\n  " + "\n  ".join(lines))


class ProxyNotFoundError(RuntimeError):
    """The ``nginx`` binary is not installed (``make setup`` installs it)."""
