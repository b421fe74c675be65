"""The run-until-signal loop of ``tritonlens serve`` (one server, or ``--replicas N``).

SIGINT (also when inherited ignored, as in background jobs), SIGTERM (supervisors,
Kubernetes) and SIGHUP (a closed terminal) all stop the run: during start-up at once (a
supervisor must not wait minutes for models to load), afterwards once the loop sees the
request. Either way ``stop`` runs and cleans up.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

from tritonlens.launcher.openai_process import OpenAIGateway
from tritonlens.launcher.replicas import ReplicaSet
from tritonlens.serve.headers import api_key_file


def run_until_signal(start: Callable[[], None], poll: Callable[[], None], stop: Callable[[], None],
                     interval: float = 0.5) -> None:
    """Call ``start()``, then ``poll()`` every ``interval`` seconds until a signal; ``stop()``
    always runs on the way out.

    A signal during ``start()`` raises KeyboardInterrupt inside it (the start is abandoned);
    afterwards it ends the loop. ``poll`` ends the run with an error by raising.

    Raises:
        Whatever ``start`` or ``poll`` raise (after ``stop()`` ran).
    """
    requested = threading.Event()
    started = threading.Event()

    def on_signal(signum, frame):
        if not requested.is_set() and started.is_set():
            requested.set()
            return
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        start()
        started.set()
        while not requested.wait(interval):
            poll()
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def serve_replicas(replica_set: ReplicaSet, echo=print, gateway: OpenAIGateway | None = None) -> None:
    """Run ``replica_set`` until SIGINT, SIGTERM or SIGHUP (the ``tritonlens serve
    --replicas N`` loop), reporting each replica that exits; stops everything on the way out.

    A replica that exits is reported (its streams are lost; nginx sends new requests to the
    others) and the rest go on serving; when no replica is left, or nginx exits, the run
    ends with an error.

    Args:
        echo: prints one line (rich markup allowed when it is a rich console's print).
        gateway: an OpenAI gateway in front of the proxy, started once the replicas are
            ready and stopped first (``--openai-port``); its exit ends the run.

    Raises:
        ServerStartError, ModelLoadError, ProxyNotFoundError: from start-up.
        RuntimeError: nginx or the last replica exited while serving.
    """
    def start() -> None:
        echo(f"starting {replica_set.count} tritonserver replica(s) on {replica_set.model_repository} "
             f"and nginx in front ...")
        replica_set.start()
        if gateway is not None:
            gateway.start()
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
        if gateway is not None:
            echo(gateway.describe())
        echo(f"API key for the restricted APIs: {api_key_file(replica_set.proxy.http_port)}\nCtrl-C to stop")

    def poll() -> None:
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
        if gateway is not None and gateway.poll() is not None:
            raise RuntimeError(f"the OpenAI gateway exited with code {gateway.poll()}")

    def stop() -> None:
        if gateway is not None:
            gateway.stop()
        replica_set.stop()
        echo("replicas and nginx stopped")

    run_until_signal(start, poll, stop)
