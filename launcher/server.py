"""Run a real ``tritonserver`` on a model repository, from a pip-only host.

:class:`TritonServer` puts together the pieces of this component: the install and backend
directory (:mod:`~tritonlens.launcher.install`), the process that dies with its parent and
its log (:mod:`~tritonlens.launcher.process`), the flag policy
(:mod:`~tritonlens.launcher.flags`) and Triton's HTTP admin API
(:mod:`~tritonlens.launcher.admin`). Facts it relies on (see the project's notes on local
Triton):

* SIGINT to the server's PID stops it cleanly (about 3 s) and frees its ``/dev/shm`` regions;
  not so after faults (a dead stub: regions stay), so the launcher removes its own regions,
  which carry a per-start prefix (``--backend-config=<backend>,shm-region-prefix-name``);
* the shared-memory, model-repository, logging and trace APIs are restricted to callers that
  send the API key (``--http-restricted-api`` / ``--grpc-restricted-protocol``): a local
  client could otherwise register a stub's own ``/dev/shm`` region (SIGABRT of the server)
  or load a model whose ``model.py`` runs code as the server's user.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

from tritonlens.launcher.admin import TritonAdmin
from tritonlens.launcher.errors import ModelLoadError, ServerStartError
from tritonlens.launcher.flags import CACHE_FLAGS, RESTRICTED_APIS, check_extra_args
from tritonlens.launcher.install import (PYTHON_BASED_BACKENDS, TritonInstall, assemble_backend_directory,
                                         find_triton, server_environment)
from tritonlens.launcher.process import (check_port_free, die_with_parent, forward_log, free_port,
                                         write_private)
from tritonlens.serve.headers import API_KEY_ENV, API_KEY_HEADER, api_key_file

SHM_DIR = Path("/dev/shm")
# Triton's response cache (``--cache-config local,size=<bytes>``, the ``local`` cache library
# that ships in the wheel's caches/ folder): models whose config enables ``response_cache``
# answer a request equal to an earlier one from it. An entry is the response plus about 81
# bytes (measured: 200 ViT-S-32 embeddings, 384 x FP32, filled 30.8% of 1 MiB by
# nv_cache_util). Off by default: no tritonlens export enables it, because Triton 2.51 also
# caches a Python-backend model's error responses, as empty successes (a second identical
# bad request then gets no output and no error; measured on the text encoder). clip_rank
# keeps its own text-embedding cache (serve.clip.rank.TextEmbeddingCache).
DEFAULT_RESPONSE_CACHE_BYTES = 0


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
        watch_stubs: run :class:`~tritonlens.launcher.health.StubMonitor` (not in ``poll``
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
        self.watch_stubs = watch_stubs  # launcher/health.py: reload a model whose stub died
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
            # launcher/health.py can reload a model whose stub died; "none" refuses loads.
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
        load their models at the same time (:class:`~tritonlens.launcher.replicas.ReplicaSet`).
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
                write_private(api_key_file(port), self.api_key)
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
                from tritonlens.launcher.health import StubMonitor
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
            if self.admin.is_live():
                return
            time.sleep(0.2)
        raise ServerStartError(f"tritonserver was not live after {self.startup_timeout:.0f} s"
                               + self._log_hint())

    def _log_hint(self) -> str:
        if not self.log_file or not self.log_file.exists():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-15:]
        return "; last log lines:\n  " + "\n  ".join(tail)

    @property
    def admin(self) -> TritonAdmin:
        """Triton's HTTP admin API of this server (with the API key for the restricted APIs)."""
        return TritonAdmin(self.http_url, headers={API_KEY_HEADER: self.api_key})

    def repository_index(self) -> list[dict]:
        """Triton's model repository index: ``[{name, version, state, reason}, ...]``."""
        return self.admin.repository_index()

    def metadata(self) -> dict:
        """Triton's server metadata (``GET /v2``): ``name``, ``version`` (the running
        server's own, e.g. "2.51.0") and ``extensions``."""
        return self.admin.metadata()

    def model_failures(self) -> dict[str, str]:
        """Models whose state is UNAVAILABLE, mapped to Triton's reason."""
        return {m["name"]: m.get("reason", "") for m in self.repository_index()
                if m.get("state") == "UNAVAILABLE"}

    def is_ready(self) -> bool:
        """True when the server answers ready (every loaded model ready)."""
        return self.admin.is_ready()

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
