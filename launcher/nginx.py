"""nginx in front of several tritonserver replicas: its config and its process.

nginx routes on the :data:`~tritonlens.serve.headers.SEQUENCE_HEADER` header
(``x-correlation-id``), which tritonlens' clients send on every request of a sequence, with
``hash $http_x_correlation_id consistent``: every frame of a stream reaches the same
replica, and a replica that stops only moves its own streams. Requests without the header
(stateless models: CLIP, SAM 2 segment) are balanced round robin (nginx's hash falls back to
round robin on an empty key). gRPC goes through ``grpc_pass`` on an HTTP/2 port, HTTP
through ``proxy_pass`` with keep-alive connections.

The config comes from ``launcher/templates/tritonlens.conf.template``
(:func:`render_nginx_config`); nginx runs in the foreground with its own prefix, pid, temp
and log files in a folder of its own, and logs one JSON line per request with the replica
that served it (``upstream``) and the correlation ID. Each response names its replica in
the :data:`~tritonlens.serve.headers.REPLICA_HEADER` header.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import string
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tritonlens.launcher.admin import TritonAdmin
from tritonlens.launcher.errors import ProxyNotFoundError, ServerStartError
from tritonlens.launcher.process import check_port_free, die_with_parent, free_port
from tritonlens.serve.headers import SEQUENCE_HEADER

TEMPLATE = Path(__file__).parent / "templates" / "tritonlens.conf.template"
# nginx's size syntax: a number with an optional k/m/g suffix; 0 turns the check off.
_SIZE = re.compile(r"^\d+[kKmMgG]?$")
# The largest image the models accept is 64 MiB (serve/images.py), so a request of one such
# image passes and anything much larger is refused before a stub's /dev/shm region grows.
DEFAULT_MAX_BODY_SIZE = "64m"


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
        if not TritonAdmin(self.http_url).is_ready():
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
