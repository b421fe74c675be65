"""Where the Triton server comes from on a pip-only host, and the backend directory it needs.

The server binary is the complete Triton 2.51 (release 24.10) that ships inside the
``nvidia-pytriton`` wheel; PyTriton's own Python API is not used. Facts this module relies
on (measured, see the project's notes on local Triton):

* the Python backend must be *copied* (not symlinked) into a backend directory of our own,
  together with the Python-backend stub built for the running ``major.minor``;
* a copied stub loses its ``$ORIGIN`` search path, so ``nvidia_pytriton.libs`` and the
  interpreter's ``LIBDIR`` go on ``LD_LIBRARY_PATH``;
* the stub finds its Python home through ``python3`` on ``PATH``: the running
  interpreter's ``bin/`` must come first, so that ``model.py`` files see this environment's
  site-packages (numpy, onnxruntime, torch, tritonlens).

Besides the ``python`` backend, the backend directory holds tritonlens' Python-based
``onnxruntime`` and ``pytorch`` backends (``serve/backends/<name>/model.py``, stub-side
code), so configs that say ``backend: "onnxruntime"`` are served here unchanged, exactly as
the NGC container's native backends serve them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import tritonlens.serve
from tritonlens.launcher.errors import TritonNotFoundError

BACKENDS_SOURCE = Path(next(iter(tritonlens.serve.__path__))) / "backends"
PYTHON_BASED_BACKENDS = ("onnxruntime", "pytorch")


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the wheel's Triton live on this host."""

    binary: Path
    libs: Path  # nvidia_pytriton.libs: libtritonserver, libcudart, libb64 ...
    python_backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this interpreter's major.minor
    caches: Path


def find_triton() -> TritonInstall:
    """Locate the Triton server inside the installed ``nvidia-pytriton`` wheel.

    Raises:
        TritonNotFoundError: the wheel is missing or lacks a stub for this Python version.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotFoundError(
            "tritonserver not found: install the server wheel with "
            "`pip install nvidia-pytriton==0.7.0` (it ships Triton 2.51)"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    libs = root.parent.parent / "nvidia_pytriton.libs"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        libs=libs,
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / py / "triton_python_backend_stub",
        caches=root / "caches",
    )
    for path in (install.binary, install.libs, install.python_backend, install.stub):
        if not path.exists():
            raise TritonNotFoundError(f"incomplete Triton install, missing {path}")
    return install


def assemble_backend_directory(install: TritonInstall, dest: Path | None = None) -> Path:
    """Build a ``--backend-directory`` with the Python backend and the Python-based backends.

    Layout::

        <dest>/python/{libtriton_python.so, triton_python_backend_utils.py,
                       triton_python_backend_stub}
        <dest>/onnxruntime/model.py     # tritonlens' Python-based onnxruntime backend
        <dest>/pytorch/model.py         # tritonlens' Python-based pytorch backend

    Files are real copies: Triton refuses a backend library that resolves outside its
    backend directory. The directory is cached under ``~/.cache/tritonlens`` by a hash of
    its sources, so repeated starts do not copy again.
    """
    sources = [
        install.python_backend / "libtriton_python.so",
        install.python_backend / "triton_python_backend_utils.py",
        install.stub,
        *(BACKENDS_SOURCE / name / "model.py" for name in PYTHON_BASED_BACKENDS),
    ]
    if dest is None:
        digest = hashlib.sha256()
        for src in sources:
            digest.update(str(src).encode())
            digest.update(src.read_bytes() if src.suffix == ".py" else str(src.stat().st_mtime).encode())
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        dest = cache / "tritonlens" / "backends" / digest.hexdigest()[:16]
    if (dest / ".complete").exists():
        return dest
    (dest / "python").mkdir(parents=True, exist_ok=True)
    for src in sources[:3]:
        shutil.copy2(src, dest / "python" / src.name)
    for name in PYTHON_BASED_BACKENDS:
        (dest / name).mkdir(exist_ok=True)
        shutil.copy2(BACKENDS_SOURCE / name / "model.py", dest / name / "model.py")
    (dest / ".complete").touch()
    return dest


def server_environment(install: TritonInstall) -> dict[str, str]:
    """Environment for the server process: this interpreter's ``bin/`` first on PATH and
    the bundled libraries plus libpython's directory on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    libdirs = [str(install.libs), sysconfig.get_config_var("LIBDIR") or ""]
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
    # Keep each stub's numerical libraries from spawning one thread per core per instance;
    # the backends set their own intra-op thread counts from the model config.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
