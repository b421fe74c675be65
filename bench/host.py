"""The host and software a benchmark ran on, recorded beside every result."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import psutil

PACKAGES = ("torch", "open_clip_torch", "onnxruntime", "numpy", "tritonclient", "nvidia-pytriton",
            "pillow")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_host() -> dict:
    """CPU, cores (logical / physical / usable by this process), memory (GB), OS, Python."""
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu": "none (CPU only)",
    }


def versions(perf_analyzer: str, tritonserver: str) -> dict:
    """Versions of the server, perf_analyzer and the Python packages that did the work."""
    found = {"tritonserver": tritonserver, "perf_analyzer": perf_analyzer}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
