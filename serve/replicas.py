"""One model repository on N ``tritonserver`` replicas behind nginx (``tritonlens serve
--replicas N``).

Triton is single-node: a sequence's state (a SAM 2 tracker stream) lives in the one replica
that received its START. nginx routes on the :data:`~tritonlens.serve.headers.SEQUENCE_HEADER`
header (``x-correlation-id``), which tritonlens' clients send on every request of a
sequence, with ``hash $http_x_correlation_id consistent``: every frame of a stream reaches
the same replica, and a replica that stops only moves its own streams. Requests without the
header (stateless models: CLIP, SAM 2 segment) are balanced round robin (nginx's hash falls
back to round robin on an empty key). gRPC goes through ``grpc_pass`` on an HTTP/2 port,
HTTP through ``proxy_pass`` with keep-alive connections.

The proxy config comes from ``serve/nginx/tritonlens.conf.template`` (:func:`render_nginx_config`);
nginx runs in the foreground with its own prefix, pid, temp and log files in a folder of
its own, and logs one JSON line per request with the replica that served it
(``upstream``) and the correlation ID. Each response names its replica in the
:data:`~tritonlens.serve.headers.REPLICA_HEADER` header.

Facts this relies on (checked with Debian 12's nginx 1.22 and two tritonserver 2.51 on
loopback): without the header a stream's frames are spread over the replicas and Triton
answers "must specify the START flag"; after a replica dies, nginx marks it down
(``max_fails``/``fail_timeout``), its streams' next frames reach another replica, which does
not hold them, and new streams go to the live replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tritonlens.serve.headers import API_KEY_ENV, SEQUENCE_HEADER, api_key_file
from tritonlens.serve.launcher import (ModelLoadError, ServerStartError, TritonServer, _write_private,
                                       check_port_free, die_with_parent, free_port)

TEMPLATE = Path(__file__).parent / "nginx" / "tritonlens.conf.template"
# nginx's size syntax: a number with an optional k/m/g suffix; 0 turns the check off.
_SIZE = re.compile(r"^\d+[kKmMgG]?$")
# The largest image the models accept is 64 MiB (serve/images.py), so a request of one such
# image passes and anything much larger is refused before a stub's /dev/shm region grows.
DEFAULT_MAX_BODY_SIZE = "64m"


class ProxyNotFoundError(RuntimeError):
    """The ``nginx`` binary is not installed (``make setup`` installs it)."""


class _Template(string.Template):
    """``@{name}`` fields: nginx's own ``$variables`` and ``{ }`` blocks pass through."""

    delimiter = "@"


@dataclass(frozen=True)
class ProxySettings:
    """The nginx front of a replica set.

    Attributes:
        host: address the front ports bind to.
        grpc_port / http_port: the front's gRPC and HTTP ports (0: any free port); clients
            use these as they would a single server's 8001 / 8000.
        max_body_size: nginx ``client_max_body_size`` for both ports (nginx's size syntax,
            ``64m``; ``0`` turns the bound off): a larger request gets HTTP 413 from nginx.
        workers: nginx ``worker_processes`` (``auto``: one per core).
        max_fails / fail_timeout_s: a replica that fails ``max_fails`` connections within
            ``fail_timeout_s`` seconds is taken out for that long (nginx's passive health
            check), then tried again.
        hash_header: the header nginx hashes to pick a replica.
    """

    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    max_body_size: str = DEFAULT_MAX_BODY_SIZE
    workers: str = "auto"
    max_fails: int = 1
    fail_timeout_s: int = 10
    hash_header: str = SEQUENCE_HEADER

    def __post_init__(self):
        if not _SIZE.match(self.max_body_size):
            raise ValueError(f"max body size {self.max_body_size!r}: give a number of bytes with an "
                             "optional k, m or g suffix (nginx's size syntax), e.g. 64m; 0 = no bound")
        if self.workers != "auto" and not (self.workers.isdigit() and int(self.workers) > 0):
            raise ValueError(f"nginx workers must be 'auto' or a positive number, not {self.workers!r}")
        if self.max_fails < 1 or self.fail_timeout_s < 1:
            raise ValueError("max_fails and fail_timeout_s must be at least 1")
        if not re.fullmatch(r"[A-Za-z0-9-]+", self.hash_header):
            raise ValueError(f"hash header {self.hash_header!r}: letters, digits and '-' only")

    @property
    def hash_variable(self) -> str:
        """nginx's variable for :attr:`hash_header` (``http_x_correlation_id``)."""
        return "http_" + self.hash_header.lower().replace("-", "_")


def render_nginx_config(settings: ProxySettings, grpc_upstreams: list[str], http_upstreams: list[str],
                        prefix: Path, access_log: Path, template: Path = TEMPLATE) -> str:
    """The nginx config for ``settings`` in front of replicas at ``host:port`` addresses.

    Args:
        grpc_upstreams / http_upstreams: each replica's gRPC and HTTP ``host:port``, in
            replica order (the same length, at least one).
        prefix: nginx's own folder (pid, error log, temp paths).
        access_log: where the per-request JSON lines go.

    Raises:
        ValueError: no replicas, or the two lists differ in length.
    """
    if not grpc_upstreams or len(grpc_upstreams) != len(http_upstreams):
        raise ValueError("give each replica's gRPC and HTTP address (at least one replica)")

    def servers(addresses: list[str]) -> str:
        return "\n".join(f"        server {address} max_fails={settings.max_fails} "
                         f"fail_timeout={settings.fail_timeout_s}s;" for address in addresses)

    return _Template(template.read_text()).substitute(
        workers=settings.workers, prefix=prefix, access_log=access_log,
        hash_header=settings.hash_header, hash_variable=settings.hash_variable,
        max_body_size=settings.max_body_size, listen_host=_listen_host(settings.host),
        grpc_port=settings.grpc_port, http_port=settings.http_port,
        grpc_servers=servers(grpc_upstreams), http_servers=servers(http_upstreams))


def _listen_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def free_ports(host: str, count: int, exclude=()) -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now, none of them in ``exclude``.

    Every probe socket stays bound until all are chosen, so the kernel cannot hand out one
    port twice (servers launched together have not bound theirs yet).
    """
    held, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            held.append(sock)
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            if port not in exclude:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def find_nginx() -> str:
    """The ``nginx`` binary (on PATH, or Debian's /usr/sbin/nginx).

    Raises:
        ProxyNotFoundError: not installed.
    """
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise ProxyNotFoundError("nginx not found: `make setup` installs it (Debian/Ubuntu: "
                                 "`sudo apt-get install -y nginx`); `tritonlens serve --replicas N` "
                                 "runs it in front of the replicas")
    return found


def read_access_log(path: str | os.PathLike) -> list[dict]:
    """The proxy's access log as one dict per request: ``front`` (port), ``request``,
    ``status``, ``upstream`` (the replica's ``host:port``; ``"a, b"`` when nginx tried
    ``a`` first and it failed), ``correlation_id`` ("" without the header), ``request_time``
    and ``upstream_time`` (seconds, as nginx writes them)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class NginxProxy:
    """nginx in the foreground in front of given replicas (its own prefix folder).

    Args:
        settings: the front's ports (0: any free port) and bounds.
        grpc_upstreams / http_upstreams: each replica's gRPC and HTTP ``host:port``.
        log_dir: where ``access.log`` and ``error.log`` go (default: the prefix folder,
            removed by ``stop()``).
    """

    def __init__(self, settings: ProxySettings, grpc_upstreams: list[str], http_upstreams: list[str],
                 log_dir: str | os.PathLike | None = None):
        if not settings.grpc_port or not settings.http_port:
            settings = dataclasses.replace(settings, grpc_port=settings.grpc_port or free_port(settings.host),
                                           http_port=settings.http_port or free_port(settings.host))
        self.settings = settings
        self.grpc_upstreams, self.http_upstreams = list(grpc_upstreams), list(http_upstreams)
        self._log_dir = Path(log_dir) if log_dir else None
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.settings.host}:{self.settings.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.settings.host}:{self.settings.http_port}"

    @property
    def access_log(self) -> Path:
        return (self._log_dir or self.folder) / "access.log"

    @property
    def error_log(self) -> Path:
        return (self._log_dir or self.folder) / "error.log"

    def config(self) -> str:
        return render_nginx_config(self.settings, self.grpc_upstreams, self.http_upstreams,
                                   self.folder, self.access_log)

    def start(self, timeout: float = 30.0) -> "NginxProxy":
        """Check the config (``nginx -t``), start nginx, wait until both front ports answer
        Triton's ready through it.

        Raises:
            ProxyNotFoundError; ServerStartError: a front port in use, a refused config,
                nginx exited or did not answer within ``timeout`` seconds.
        """
        nginx = find_nginx()
        for name, port in (("proxy gRPC", self.settings.grpc_port), ("proxy HTTP", self.settings.http_port)):
            check_port_free(self.settings.host, port, name)
        self.folder = Path(tempfile.mkdtemp(prefix="tritonlens-nginx-"))
        # nginx's workers run as an unprivileged user when started as root: they must be
        # able to reach the temp paths inside.
        self.folder.chmod(0o755)
        if self._log_dir:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        config = self.folder / "nginx.conf"
        config.write_text(self.config())
        base = [nginx, "-p", str(self.folder), "-c", str(config), "-e", str(self.error_log)]
        check = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise ServerStartError(f"nginx refused its config {config}: {check.stderr.strip()}")
        self.process = subprocess.Popen(die_with_parent(base), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"nginx exited with code {self.process.returncode} at start: "
                                       + self.error_log_tail())
            if self.ready():
                return self
            time.sleep(0.1)
        raise ServerStartError(f"the proxy did not answer ready within {timeout:.0f} s: "
                               + self.error_log_tail())

    def ready(self) -> bool:
        """Both front ports answer Triton's ready through nginx."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=5) as resp:
                if resp.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
        import tritonclient.grpc as grpcclient

        try:
            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                return client.is_server_ready(client_timeout=5)
        except Exception:  # noqa: BLE001 - not up yet: refused, reset, 502
            return False

    def error_log_tail(self) -> str:
        if not self.error_log.exists():
            return "(no nginx error log)"
        return " | ".join(self.error_log.read_text(errors="replace").splitlines()[-5:])

    def stop(self) -> None:
        """Graceful stop (SIGQUIT), killed after 10 s; remove the prefix folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "NginxProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


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
                _write_private(api_key_file(port), self.api_key)
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
            url = f"http://{server.http_url}/v2/models/{entry['name']}/config"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    config = json.loads(resp.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            value = config.get("parameters", {}).get("max_streams", {}).get("string_value")
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


def serve_replicas(replica_set: ReplicaSet, echo=print) -> None:
    """Run ``replica_set`` until SIGINT, SIGTERM or SIGHUP (the ``tritonlens serve
    --replicas N`` loop), reporting each replica that exits; stops everything on the way out.

    A signal during start-up aborts it at once (a supervisor must not wait for every
    replica's models to load); afterwards it ends the loop. A replica that exits is reported
    (its streams are lost; nginx sends new requests to the others) and the rest go on
    serving; when no replica is left, or nginx exits, the run ends with an error.

    Args:
        echo: prints one line (rich markup allowed when it is a rich console's print).

    Raises:
        ServerStartError, ModelLoadError, ProxyNotFoundError: from start-up.
        RuntimeError: nginx or the last replica exited while serving.
    """
    stop = threading.Event()
    started = threading.Event()

    def on_signal(signum, frame):
        if not stop.is_set() and started.is_set():
            stop.set()
            return
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        echo(f"starting {replica_set.count} tritonserver replica(s) on {replica_set.model_repository} "
             f"and nginx in front ...")
        replica_set.start()
        for replica in replica_set.replicas:
            server = replica.server
            echo(f"  replica {replica.index}: gRPC {server.grpc_url}   HTTP {server.http_url}   "
                 f"metrics {server.metrics_url}   log {server.log_file}")
        for model, slots in sorted(replica_set.stream_slots().items()):
            echo(f"  {model}: {slots} stream slots per replica x {replica_set.count} = "
                 f"{slots * replica_set.count} (export sam2 --max-streams)")
        echo(f"[bold green]ready[/]  gRPC {replica_set.grpc_url}   HTTP {replica_set.http_url}   "
             f"(nginx: hash on {replica_set.proxy.hash_header}, request bodies up to "
             f"{replica_set.proxy.max_body_size}; access log {replica_set.access_log})")
        echo(f"API key for the restricted APIs: {api_key_file(replica_set.proxy.http_port)}\nCtrl-C to stop")
        started.set()
        while not stop.wait(0.5):
            for replica in replica_set.exited():
                server = replica.server
                echo(f"[bold red]replica {replica.index} exited[/] (code {replica.exit_code}; gRPC "
                     f"{server.grpc_url}, log {server.log_file}): the streams it held are lost, "
                     f"nginx sends new requests to the {len(replica_set.live_replicas())} live replica(s)")
            if not replica_set.live_replicas():
                raise RuntimeError("every replica has exited")
            if replica_set.nginx.poll() is not None:
                raise RuntimeError(f"nginx exited with code {replica_set.nginx.returncode}: "
                                   + replica_set.proxy_process.error_log_tail())
    except KeyboardInterrupt:
        pass
    finally:
        replica_set.stop()
        echo("replicas and nginx stopped")
