"""Run a real ``tritonserver`` on a model repository, from a pip-only host.

The server binary is the complete Triton 2.51 (release 24.10) that ships inside the
``nvidia-pytriton`` wheel; PyTriton's own Python API is not used. Facts this module relies
on (measured, see the project's notes on local Triton):

* the Python backend must be *copied* (not symlinked) into a backend directory of our own,
  together with the Python-backend stub built for the running ``major.minor``;
* a copied stub loses its ``$ORIGIN`` search path, so ``nvidia_pytriton.libs`` and the
  interpreter's ``LIBDIR`` go on ``LD_LIBRARY_PATH``;
* the stub finds its Python home through ``python3`` on ``PATH``: the running
  interpreter's ``bin/`` must come first, so that ``model.py`` files see this environment's
  site-packages (numpy, onnxruntime, torch, tritonlens);
* SIGINT to the server's PID stops it cleanly (about 3 s) and frees its ``/dev/shm`` regions;
  not so after faults (a dead stub: regions stay), so the launcher removes its own regions,
  which carry a per-start prefix (``--backend-config=<backend>,shm-region-prefix-name``);
* the server dies with the process that started it (``PR_SET_PDEATHSIG``, Linux), so a
  killed launcher does not leave an orphan holding the ports, memory and ``/dev/shm``;
* the shared-memory, model-repository, logging and trace APIs are restricted to callers that
  send the API key (``--http-restricted-api`` / ``--grpc-restricted-protocol``): a local
  client could otherwise register a stub's own ``/dev/shm`` region (SIGABRT of the server)
  or load a model whose ``model.py`` runs code as the server's user.

Besides the ``python`` backend, the backend directory holds tritonlens' Python-based
``onnxruntime`` and ``pytorch`` backends (``serve/backends/<name>/model.py``), so configs
that say ``backend: "onnxruntime"`` are served here unchanged, exactly as the NGC
container's native backends serve them.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tritonlens.serve.headers import API_KEY_ENV, API_KEY_HEADER, api_key_file

BACKENDS_SOURCE = Path(__file__).parent / "backends"
PYTHON_BASED_BACKENDS = ("onnxruntime", "pytorch")
# Triton's API groups that only callers with the API key may use (Triton's category names).
# inference, health, metadata, model-config and statistics stay open.
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")
SHM_DIR = Path("/dev/shm")
# Triton's response cache (``--cache-config local,size=<bytes>``, the ``local`` cache library
# that ships in the wheel's caches/ folder): models whose config enables ``response_cache``
# (the CLIP text encoder) answer a request equal to an earlier one from it. An entry is the
# response plus about 81 bytes (measured: 200 ViT-S-32 embeddings, 384 x FP32, filled 30.8% of
# 1 MiB by nv_cache_util), so 64 MiB holds about 31,000 ViT-B-32 text embeddings (512 x FP32);
# the least recently used entries are evicted beyond it. 0 turns the cache off.
DEFAULT_RESPONSE_CACHE_BYTES = 64 * 2**20
# Flags that configure the cache themselves: given through extra_args, they replace the default.
CACHE_FLAGS = ("--cache-config", "--response-cache-byte-size")


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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def check_port_free(host: str, port: int, name: str) -> None:
    """Raise :class:`ServerStartError` naming ``port`` if something listens on it.

    SO_REUSEADDR is set on the probe so that connections in TIME_WAIT (left by a server that
    just stopped) do not count as busy; a listening socket still does.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            raise ServerStartError(
                f"{name} port {port} on {host} is already in use (another tritonserver? "
                f"`ss -ltnp 'sport = :{port}'` shows the process); stop it, or choose other "
                "ports (0 = any free port)") from None


# Run as ``python -I -S -c DIE_WITH_PARENT <parent pid> <program> <args...>``: sets
# PR_SET_PDEATHSIG (SIGTERM, Triton's clean shutdown) on itself, then execs the program, which
# keeps it (it is not set-uid). A small exec wrapper instead of a ``preexec_fn``: Python code
# between fork and exec in a multi-threaded parent (a gRPC client's threads, for one) can hang
# the child before exec; without a preexec_fn, subprocess spawns with vfork/posix_spawn.
DIE_WITH_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
except (OSError, AttributeError):  # not Linux: run without the protection
    pass
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl took effect
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def die_with_parent(command: list[str]) -> list[str]:
    """``command`` wrapped so that the program gets SIGTERM when the *thread* that starts it
    dies (Linux ``prctl(PR_SET_PDEATHSIG)``; only the main thread should use it, which the
    caller checks). The process keeps its PID across the wrapper's exec."""
    return [sys.executable, "-I", "-S", "-c", DIE_WITH_PARENT, str(os.getpid()), *command]


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


# What tritonserver 2.51 (a CUDA build) logs on a host without a CUDA driver, whatever its
# flags: CudaBlockManager::Create's error at start-up (server.cc, unconditional), one
# "unable to create stream" error per ensemble (ensemble_scheduler.cc), and the warning that
# follows from --pinned-memory-pool-byte-size=0. None of it affects CPU serving.
NO_CUDA_DRIVER_LINES = re.compile(
    rb'"CudaDriverHelper has not been initialized\.'
    rb'|"unable to create stream for [^:]+: (CUDA driver version is insufficient|no CUDA-capable)'
    rb'|"failed to allocate pinned system memory: no pinned memory pool')
NO_CUDA_DRIVER_NOTE = (b"tritonlens: no CUDA driver on this host; tritonserver's messages about "
                       b"it (CudaDriverHelper, ensemble CUDA streams, pinned memory) are left "
                       b"out of this log\n")


def forward_log(source, sink, close_sink: bool = False) -> None:
    """Copy tritonserver's output from ``source`` to ``sink`` line by line until it closes,
    leaving out :data:`NO_CUDA_DRIVER_LINES` (one :data:`NO_CUDA_DRIVER_NOTE` says so);
    then close ``source`` (and ``sink`` with ``close_sink``)."""
    noted = False
    for line in iter(source.readline, b""):
        if NO_CUDA_DRIVER_LINES.search(line):
            if noted:
                continue
            line, noted = NO_CUDA_DRIVER_NOTE, True
        try:
            sink.write(line)
            sink.flush()
        except (OSError, ValueError):  # the sink was closed (stop): keep draining the pipe
            pass
    source.close()
    if close_sink:
        sink.close()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (directory 0700, file 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class TritonServer:
    """A ``tritonserver`` process on a model repository, as a context manager.

    Example::

        with TritonServer("model_repository", http_port=0, grpc_port=0) as server:
            print(server.grpc_url)   # "127.0.0.1:41235"

    Ports given as 0 are chosen free at start. ``start()`` waits until the server is live
    and every model reached a final state; if any model is UNAVAILABLE it raises
    :class:`ModelLoadError` naming each one with Triton's reason (unless
    ``require_all_models=False``; the server then keeps serving the others). ``start()`` is
    :meth:`launch` (start the process, return at once) then :meth:`wait_started`, so that
    several servers can load at the same time.

    Args:
        model_repository: the repository directory (``config.pbtxt`` per model).
        host: address every endpoint binds to.
        http_port / grpc_port / metrics_port: Triton's ports (defaults 8000/8001/8002).
        model_control_mode: ``none`` (load everything), ``poll`` or ``explicit``.
        load_models: with ``explicit``, the models to load at start (``--load-model``).
        log_verbose: Triton's ``--log-verbose`` level (0 = off).
        log_file: where the server's stdout/stderr go; None inherits this process's.
        startup_timeout: seconds from the launch for the server to become live (s).
        api_key: the value of the ``tritonlens-api-key`` header that the restricted APIs
            (:data:`RESTRICTED_APIS`) require; default ``$TRITONLENS_API_KEY``, else a random
            key per start. It is written to :func:`api_key_file` (mode 0600) for each port
            while the server runs, where tritonlens' clients find it.
        restricted_apis: Triton API groups to restrict (empty: none, Triton's default).
        exit_timeout: Triton's ``--exit-timeout-secs``: how long shutdown waits for in-flight
            inferences and model unloads (s; Triton's default is 30). 15: unloading the full
            test repository (CLIP, SAM 2, three trackers) took more than 5 s on a busy 2-core
            host, and a server that hits the timeout exits 1. ``stop()`` kills the process
            group when the server is still there ``exit_timeout + 15`` s after SIGINT.
        extra_args: more ``tritonserver`` flags, passed through unchanged (``--flag=value``
            or ``--flag value``); ``--exit-timeout-secs`` replaces ``exit_timeout``. Flags the
            launcher sets itself are refused (:func:`check_extra_args`).
        watch_stubs: run :class:`~tritonlens.serve.health.StubMonitor` (not in ``poll``
            mode): a model whose Python-backend stub died is reloaded within seconds.
        response_cache_bytes: size of Triton's response cache in bytes
            (:data:`DEFAULT_RESPONSE_CACHE_BYTES`; 0: no cache); a ``--cache-config`` in
            ``extra_args`` replaces it.

    Start it from the main thread: the server gets SIGTERM when the thread that started it
    dies (``PR_SET_PDEATHSIG``); from another thread that protection is skipped, with a
    warning. After the server exits, ``stop()`` removes the ``/dev/shm`` regions whose names
    carry this start's prefix (:attr:`shm_prefix`), never another server's.

    Raises (from ``start``):
        ServerStartError: a port is in use (named), or the server exited / was not live.
        ModelLoadError: a model is UNAVAILABLE and ``require_all_models``.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        model_control_mode: str = "none",
        load_models: tuple[str, ...] | list[str] = (),
        log_verbose: int = 0,
        log_file: str | os.PathLike | None = None,
        startup_timeout: float = 300.0,
        require_all_models: bool = True,
        api_key: str | None = None,
        restricted_apis: tuple[str, ...] | list[str] = RESTRICTED_APIS,
        exit_timeout: int = 15,
        extra_args: tuple[str, ...] | list[str] = (),
        watch_stubs: bool = True,
        response_cache_bytes: int = DEFAULT_RESPONSE_CACHE_BYTES,
    ):
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} does not exist; "
                                    "run `tritonlens export ...` first")
        if model_control_mode not in ("none", "poll", "explicit"):
            raise ValueError(f"model_control_mode must be none, poll or explicit, not {model_control_mode!r}")
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.model_control_mode = model_control_mode
        self.load_models = list(load_models)
        self.log_verbose = log_verbose
        self.log_file = Path(log_file) if log_file else None
        self.startup_timeout = startup_timeout
        self.require_all_models = require_all_models
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or secrets.token_urlsafe(24)
        if any(c in self.api_key for c in ":=, \t\n"):
            raise ValueError("the API key must not contain ':', '=', ',' or whitespace")
        self.restricted_apis = list(restricted_apis)
        self.exit_timeout = exit_timeout
        self.shm_prefix = f"tritonlens_{os.getpid()}_{secrets.token_hex(4)}_"
        self.extra_args = check_extra_args(extra_args)
        for arg in self.extra_args:  # the launcher's own stop waits as long as the server
            if arg.startswith("--exit-timeout-secs="):
                self.exit_timeout = int(arg.split("=", 1)[1])
        if response_cache_bytes < 0:
            raise ValueError(f"response_cache_bytes must be 0 (no cache) or more, not {response_cache_bytes}")
        self.response_cache_bytes = response_cache_bytes
        self.process: subprocess.Popen | None = None
        # time.monotonic() (s) when launch() started the process / wait_started() returned
        self.launched_at: float | None = None
        self.started_at: float | None = None
        self._log_handle = None
        self._log_thread: threading.Thread | None = None
        self.watch_stubs = watch_stubs  # serve/health.py: reload a model whose stub died
        self._explicit_all = watch_stubs and model_control_mode == "none"
        self.stub_monitor = None

    # -- endpoints -------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def url(self, protocol: str) -> str:
        """The endpoint for ``protocol`` (``grpc`` or ``http``)."""
        return self.grpc_url if protocol == "grpc" else self.http_url

    # -- lifecycle -------------------------------------------------------------------
    def command(self, install: TritonInstall, backend_dir: Path) -> list[str]:
        """The full ``tritonserver`` command line."""
        cmd = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--cache-directory={install.caches}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--strict-readiness=true",
            "--exit-on-error=false",
            f"--exit-timeout-secs={self.exit_timeout}",
            # With watch_stubs, "none" runs as explicit + --load-model=* (same models) so that
            # serve/health.py can reload a model whose stub died; "none" refuses loads.
            f"--model-control-mode={'explicit' if self._explicit_all else self.model_control_mode}",
            f"--log-verbose={self.log_verbose}",
        ]
        cmd += [f"--backend-config={name},shm-region-prefix-name={self.shm_prefix}{name}_"
                for name in ("python", *PYTHON_BASED_BACKENDS)]
        if self.restricted_apis:
            apis = ",".join(self.restricted_apis)
            cmd += [f"--http-restricted-api={apis}:{API_KEY_HEADER}={self.api_key}",
                    f"--grpc-restricted-protocol={apis}:{API_KEY_HEADER}={self.api_key}"]
        if self.response_cache_bytes and not any(arg.split("=", 1)[0] in CACHE_FLAGS
                                                 for arg in self.extra_args):
            cmd.append(f"--cache-config=local,size={self.response_cache_bytes}")
        cmd += [f"--load-model={name}" for name in self.load_models]
        cmd += ["--load-model=*"] if self._explicit_all else []
        return cmd + self.extra_args

    def start(self) -> "TritonServer":
        """Start the server and wait for it: :meth:`launch`, then :meth:`wait_started` (see
        the class docstring for what is raised)."""
        self.launch(_stacklevel=3)
        self.wait_started()
        return self

    def launch(self, *, _stacklevel: int = 2) -> "TritonServer":
        """Start the ``tritonserver`` process and return at once, without waiting for it.

        Checks the ports, opens the log, starts the process (wrapped by
        :func:`die_with_parent` on the main thread), the thread that forwards its output
        (:func:`forward_log`, without the no-CUDA-driver lines) and writes the API-key files.
        :meth:`wait_started` finishes the start; several servers launched one after the other
        load their models at the same time (:class:`~tritonlens.serve.replicas.ReplicaSet`).
        Call it from the thread that keeps running while the server does (the main thread):
        ``PR_SET_PDEATHSIG`` follows the thread that forks.

        Raises:
            TritonNotFoundError; ServerStartError: a port is in use (named). The process is
                stopped again if a later step fails.
        """
        install = find_triton()
        backend_dir = assemble_backend_directory(install)
        for name, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port),
                           ("metrics", self.metrics_port)):
            check_port_free(self.host, port, name)
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = open(self.log_file, "ab")
        command = self.command(install, backend_dir)
        if threading.current_thread() is threading.main_thread():
            command = die_with_parent(command)
        else:
            warnings.warn("TritonServer started from a thread other than the main thread: the "
                          "server will not be stopped if this process dies", stacklevel=_stacklevel)
        self.launched_at = time.monotonic()
        try:
            self.process = subprocess.Popen(
                command, env=server_environment(install), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it cleanly
            )
        except BaseException:
            if self._log_handle:
                self._log_handle.close()
                self._log_handle = None
            raise
        # without a log file: this process's standard output (a duplicate of fd 1, closed at stop)
        sink = self._log_handle or os.fdopen(os.dup(1), "wb")
        self._log_thread = threading.Thread(target=forward_log, name="tritonserver-log",
                                            daemon=True, args=(self.process.stdout, sink,
                                                               sink is not self._log_handle))
        self._log_thread.start()
        try:
            for port in (self.http_port, self.grpc_port):
                _write_private(api_key_file(port), self.api_key)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_started(self) -> "TritonServer":
        """Wait until the :meth:`launch`-ed server is live and every model reached a final
        state, within ``startup_timeout`` seconds of the launch; then start the stub monitor
        (``watch_stubs``). On any error the server is stopped before it is raised.

        Raises:
            RuntimeError: not launched.
            ServerStartError: the server exited, or was not live in time (the log's last
                lines with a ``log_file``).
            ModelLoadError: a model is UNAVAILABLE and ``require_all_models``.
        """
        if self.process is None:
            raise RuntimeError("TritonServer.wait_started() before launch()")
        try:
            self._wait_live()
            failures = self.model_failures()
            if failures and self.require_all_models:
                raise ModelLoadError(failures)
            if self.watch_stubs and self.model_control_mode != "poll":
                from tritonlens.serve.health import StubMonitor
                self.stub_monitor = StubMonitor(self.process.pid, self.model_repository, self.http_url,
                                                headers={API_KEY_HEADER: self.api_key}).start()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.monotonic()
        return self

    def _wait_live(self) -> None:
        deadline = self.launched_at + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {self.process.returncode} during start-up"
                    + self._log_hint())
            if self._http_status("/v2/health/live") == 200:
                return
            time.sleep(0.2)
        raise ServerStartError(f"tritonserver was not live after {self.startup_timeout:.0f} s"
                               + self._log_hint())

    def _log_hint(self) -> str:
        if not self.log_file or not self.log_file.exists():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-15:]
        return "; last log lines:\n  " + "\n  ".join(tail)

    def _http_status(self, path: str, data: bytes | None = None) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", data=data, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, OSError):
            return -1

    def repository_index(self) -> list[dict]:
        """Triton's model repository index: ``[{name, version, state, reason}, ...]``."""
        req = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}",
                                     method="POST", headers={API_KEY_HEADER: self.api_key})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def metadata(self) -> dict:
        """Triton's server metadata (``GET /v2``): ``name``, ``version`` (the running
        server's own, e.g. "2.51.0") and ``extensions``."""
        with urllib.request.urlopen(f"http://{self.http_url}/v2", timeout=10) as resp:
            return json.loads(resp.read())

    def model_failures(self) -> dict[str, str]:
        """Models whose state is UNAVAILABLE, mapped to Triton's reason."""
        return {m["name"]: m.get("reason", "") for m in self.repository_index()
                if m.get("state") == "UNAVAILABLE"}

    def is_ready(self) -> bool:
        """True when the server answers ready (every loaded model ready)."""
        return self._http_status("/v2/health/ready") == 200

    def shm_regions(self) -> list[Path]:
        """This server's Python-backend regions in ``/dev/shm`` (named ``shm_prefix...``)."""
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop with SIGINT (Triton's clean shutdown); SIGKILL to the process group (server
        and stubs) after ``timeout`` seconds (default ``exit_timeout + 15``). Then remove
        this server's ``/dev/shm`` regions and API-key files.

        Returns the server's exit code, or None if it was not running.
        """
        if self.process is None:
            return None
        if self.stub_monitor is not None:
            self.stub_monitor.stop()
        code = self.process.poll()
        if code is None:
            self.process.send_signal(signal.SIGINT)
            try:
                code = self.process.wait(self.exit_timeout + 15 if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait()
        for region in self.shm_regions():
            region.unlink(missing_ok=True)
        for port in (self.http_port, self.grpc_port):
            path = api_key_file(port)
            if path.exists() and path.read_text() == self.api_key:
                path.unlink(missing_ok=True)
        if self._log_thread is not None:
            self._log_thread.join(5)  # its last lines; a stub that outlives the server holds the pipe
            self._log_thread = None
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None
        return code

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
