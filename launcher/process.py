"""Processes on this host: free ports, a child that dies with its parent, and the
server's log stream.

* the server dies with the process that started it (``PR_SET_PDEATHSIG``, Linux), so a
  killed launcher does not leave an orphan holding the ports, memory and ``/dev/shm``;
* tritonserver's messages about a missing CUDA driver are left out of the log on CPU hosts.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from pathlib import Path

from tritonlens.launcher.errors import ServerStartError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (directory 0700, file 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
