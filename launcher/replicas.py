"""One model repository on N ``tritonserver`` replicas behind nginx (``tritonlens serve
--replicas N``).

Triton is single-node: a sequence's state (a SAM 2 tracker stream) lives in the one replica
that received its START, so nginx (:mod:`~tritonlens.launcher.nginx`) sends every request
of a sequence to one replica by its correlation ID.

Facts this relies on (checked with Debian 12's nginx 1.22 and two tritonserver 2.51 on
loopback): without the header a stream's frames are spread over the replicas and Triton
answers "must specify the START flag"; after a replica dies, nginx marks it down
(``max_fails``/``fail_timeout``), its streams' next frames reach another replica, which does
not hold them, and new streams go to the live replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

from tritonlens.launcher.errors import ModelLoadError, ServerStartError
from tritonlens.launcher.nginx import NginxProxy, ProxySettings, find_nginx
from tritonlens.launcher.process import check_port_free, free_port, free_ports, write_private
from tritonlens.launcher.server import TritonServer
from tritonlens.serve.headers import API_KEY_ENV, api_key_file
from tritonlens.serve.parameters import MAX_STREAMS_PARAMETER


@dataclass
class Replica:
    """One replica: its index and server; ``exit_code`` once it is seen to have exited."""

    index: int
    server: TritonServer
    exit_code: int | None = field(default=None)


@contextlib.contextmanager
def _naming(replica: Replica):
    """Prefix a :class:`ServerStartError` or :class:`ModelLoadError` raised inside with
    ``replica <i> (log <path>): `` (same exception, same type and attributes)."""
    try:
        yield
    except (ServerStartError, ModelLoadError) as err:
        err.args = (f"replica {replica.index} (log {replica.server.log_file}): {err}", *err.args[1:])
        raise


class ReplicaSet:
    """N tritonserver replicas of one model repository behind nginx, as a context manager.

    Example::

        with ReplicaSet("model_repository", 2, ProxySettings(grpc_port=0, http_port=0)) as rs:
            print(rs.grpc_url)     # the proxy: every client talks to this one address

    ``start()`` launches every replica's process first (free loopback ports each), so that
    all of them load their models at the same time, then waits for each in turn until it is
    live, its models are loaded and it answers ready; then it starts nginx and checks both
    front ports answer ready through it. The processes are started from the calling thread:
    replicas and nginx die with this process (``PR_SET_PDEATHSIG``, Linux, when started from
    the main thread).

    Args:
        model_repository: the repository every replica serves.
        replicas: N, at least 1.
        proxy: the front's settings.
        log_dir: where ``replica-<i>.log``, ``access.log`` and nginx's ``error.log`` go;
            None: the run's temporary folder, removed by ``stop()``.
        api_key: one key for the restricted APIs of every replica (so it works through the
            proxy); default ``$TRITONLENS_API_KEY``, else random per start. Written to the
            API-key files of the front ports, as a single server's are.
        metrics_port: P: replica ``i`` serves Prometheus metrics on port ``P + i`` (127.0.0.1);
            0: a free port each. Checked free at start, before any replica starts.
        server_options: more :class:`TritonServer` arguments for every replica
            (``model_control_mode``, ``load_models``, ``startup_timeout`` ...).

    Raises:
        ValueError (from the constructor): fewer than 1 replica; metrics ports beyond 65535
            or on a front port.
        From ``start``: ProxyNotFoundError, ServerStartError (a port in use, a replica or
        nginx did not start or is not ready), ModelLoadError. A replica's error starts with
        ``replica <i> (log <path>):``; everything started is stopped before it is raised.
    """

    def __init__(self, model_repository: str | os.PathLike, replicas: int,
                 proxy: ProxySettings | None = None, *, log_dir: str | os.PathLike | None = None,
                 api_key: str | None = None, metrics_port: int = 0, **server_options):
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        if metrics_port < 0 or metrics_port + replicas - 1 > 65535:
            raise ValueError(f"metrics ports {metrics_port}..{metrics_port + replicas - 1}: "
                             "replica i uses --metrics-port + i, which must stay within 1..65535")
        self.model_repository = Path(model_repository)
        self.count = replicas
        proxy = proxy or ProxySettings()
        if not proxy.grpc_port or not proxy.http_port:
            proxy = dataclasses.replace(proxy, grpc_port=proxy.grpc_port or free_port(proxy.host),
                                        http_port=proxy.http_port or free_port(proxy.host))
        self.proxy = proxy
        self.metrics_ports = [metrics_port + i for i in range(replicas)] if metrics_port else []
        clash = set(self.metrics_ports) & {proxy.grpc_port, proxy.http_port}
        if clash:
            raise ValueError(f"metrics ports {metrics_port}..{metrics_port + replicas - 1} (replica i "
                             f"uses --metrics-port + i) include the proxy's port {min(clash)}")
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or secrets.token_urlsafe(24)
        self.server_options = server_options
        self._log_dir = Path(log_dir) if log_dir else None
        self.folder: Path | None = None  # the replicas' logs without log_dir, made by start()
        self.replicas: list[Replica] = []
        self.proxy_process: NginxProxy | None = None
        self._lock = threading.Lock()

    # -- endpoints -------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.proxy.host}:{self.proxy.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.proxy.host}:{self.proxy.http_port}"

    def url(self, protocol: str) -> str:
        """The proxy's endpoint for ``protocol`` (``grpc`` or ``http``)."""
        return self.grpc_url if protocol == "grpc" else self.http_url

    @property
    def log_dir(self) -> Path:
        return self._log_dir or self.folder

    @property
    def access_log(self) -> Path:
        return self.log_dir / "access.log"

    @property
    def nginx(self) -> subprocess.Popen | None:
        """The nginx master process (None before start)."""
        return self.proxy_process.process if self.proxy_process else None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "ReplicaSet":
        """Start the replicas and the proxy (see the class docstring)."""
        find_nginx()
        for name, port in (("proxy gRPC", self.proxy.grpc_port), ("proxy HTTP", self.proxy.http_port)):
            check_port_free(self.proxy.host, port, name)
        for index, port in enumerate(self.metrics_ports):
            check_port_free("127.0.0.1", port, f"replica {index} metrics")
        self.folder = Path(tempfile.mkdtemp(prefix="tritonlens-replicas-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Launch every process first (from this thread: PR_SET_PDEATHSIG follows the
            # forking thread), then wait for each: all replicas load their models at once.
            ports = iter(free_ports("127.0.0.1", self.count * (2 if self.metrics_ports else 3),
                                    exclude={self.proxy.grpc_port, self.proxy.http_port,
                                             *self.metrics_ports}))
            for index in range(self.count):
                http, grpc = next(ports), next(ports)
                metrics = self.metrics_ports[index] if self.metrics_ports else next(ports)
                server = TritonServer(self.model_repository, host="127.0.0.1", http_port=http,
                                      grpc_port=grpc, metrics_port=metrics, api_key=self.api_key,
                                      log_file=self.log_dir / f"replica-{index}.log",
                                      **self.server_options)
                self.replicas.append(Replica(index, server))
                with _naming(self.replicas[-1]):
                    server.launch()
            for replica in self.replicas:
                server = replica.server
                with _naming(replica):
                    server.wait_started()
                    if not server.is_ready():
                        raise ServerStartError(f"live but not ready (/v2/health/ready at "
                                               f"{server.http_url})")
            self.proxy_process = NginxProxy(
                self.proxy, [r.server.grpc_url for r in self.replicas],
                [r.server.http_url for r in self.replicas], self.log_dir).start()
            for port in (self.proxy.http_port, self.proxy.grpc_port):
                write_private(api_key_file(port), self.api_key)
        except BaseException:
            self.stop()
            raise
        return self

    def exited(self) -> list[Replica]:
        """Replicas whose server has exited since the last call (each reported once; its
        :attr:`Replica.exit_code` is set)."""
        newly = []
        with self._lock:
            for replica in self.replicas:
                process = replica.server.process
                if replica.exit_code is None and process is not None and process.poll() is not None:
                    replica.exit_code = process.returncode
                    newly.append(replica)
        return newly

    def live_replicas(self) -> list[Replica]:
        """Replicas whose server process is still running."""
        return [r for r in self.replicas if r.server.process is not None and r.server.process.poll() is None]

    def stream_slots(self) -> dict[str, int]:
        """Tracker model -> streams one replica holds (its ``max_streams`` parameter), read
        from replica 0; the set holds N times that."""
        slots = {}
        server = self.replicas[0].server
        for entry in server.repository_index():
            if entry.get("state") != "READY":
                continue
            try:
                config = server.admin.model_config(entry["name"])
            except (urllib.error.URLError, OSError, ValueError):
                continue
            value = config.get("parameters", {}).get(MAX_STREAMS_PARAMETER, {}).get("string_value")
            if value and value.isdigit():
                slots[entry["name"]] = int(value)
        return slots

    def stop(self) -> None:
        """Stop nginx (graceful, SIGQUIT; killed after 10 s), then every replica (Triton's
        clean shutdown, :meth:`TritonServer.stop`); remove the API-key files of the front
        ports and the temporary folder (with the logs, unless ``log_dir`` was given)."""
        if self.proxy_process is not None:
            self.proxy_process.stop()
        for replica in self.replicas:
            code = replica.server.stop()
            if replica.exit_code is None:
                replica.exit_code = code
        for port in (self.proxy.http_port, self.proxy.grpc_port):
            path = api_key_file(port)
            if path.exists() and path.read_text() == self.api_key:
                path.unlink(missing_ok=True)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "ReplicaSet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
