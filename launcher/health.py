"""Health of the Python-backend stubs: notice a dead one and reload its model.

Every model instance served through the Python backend (tritonlens' Python models and its
Python-based ``onnxruntime``/``pytorch`` backends alike) runs in its own stub process, a
child of ``tritonserver`` whose command line is (Triton 2.51, read from ``ps``)::

    triton_python_backend_stub <repo>/<model>/<version>/<file> <shm region> <shm size>
        <shm growth> <server pid> <backend dir> <ipc timeout> <instance name> <runtime>

Measured on Triton 2.51 (the ``nvidia-pytriton`` 0.7.0 wheel): after ``kill -9`` of one
stub, the server never restarts it (the restart code left the Python backend in 2022), never
reaps it (it stays a zombie child until shutdown), and keeps sending that instance its share
of the requests, which fail with "Stub process '<instance>' is not healthy"; meanwhile
``/v2/health/ready``, ``/v2/models/<model>/ready`` and the repository index all say READY.
Shutdown then hangs 30 s on unloading the dead instance. Loading the model again through
the repository API *with a config* (``POST /v2/repository/models/<model>/load``,
``{"parameters": {"config": ...}}``) replaces every instance with fresh stubs (a load
without a config is a no-op for an unchanged model); requests succeed again and shutdown
takes seconds. That needs ``--model-control-mode=explicit`` (the launcher uses
``explicit`` with ``--load-model=*`` in place of ``none``).

:class:`StubMonitor` polls the server's children (``interval`` s), remembers each stub's
model and instance while it is alive, and reloads the model of any stub that has been a
zombie for two polls in a row (a stub that Triton itself stops is reaped at once, so it is
never mistaken for a dead one). The reloaded config carries two parameters that any client
can read (``get_model_config``), so a stream whose state died can be told so:

* ``tritonlens.stub_restarts``: how many times the monitor reloaded this model;
* ``tritonlens.stub_restart``: which instance died, when (UTC), and that the model was
  reloaded, for messages and ``tritonlens status``.

When the reload itself fails, Triton marks the model UNAVAILABLE, so ``/v2/health/ready``
answers not-ready and a supervisor or Kubernetes probe replaces the server.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from tritonlens.launcher.admin import TritonAdmin
from tritonlens.serve.parameters import STUB_RESTARTS_PARAMETER, STUB_RESTART_PARAMETER

log = logging.getLogger(__name__)

STUB_EXECUTABLE = "triton_python_backend_stub"
# A stub's instance name is argv[8] of its command line (module docstring, Triton 2.51).
_INSTANCE_ARG = 8


@dataclass(frozen=True)
class Stub:
    """One Python-backend stub process: its PID, model and model instance name."""

    pid: int
    model: str
    instance: str


@dataclass
class StubEvent:
    """A dead stub the monitor acted on. Times are ``time.time()`` seconds."""

    stub: Stub
    died_at: float
    reloaded_at: float | None = None
    error: str = ""


def stub_of(cmdline: list[str], repository: Path) -> Stub | None:
    """The model and instance named by a stub's command line, or None for another process.

    ``cmdline[1]`` is ``<repository>/<model>/<version>/<file>``; ``cmdline[8]`` the instance
    name (e.g. ``clip_image_encoder_0_1``).
    """
    if len(cmdline) <= _INSTANCE_ARG or Path(cmdline[0]).name != STUB_EXECUTABLE:
        return None
    try:
        model = Path(cmdline[1]).resolve().relative_to(repository.resolve()).parts[0]
    except ValueError:
        return None
    return Stub(pid=0, model=model, instance=cmdline[_INSTANCE_ARG])


class StubMonitor:
    """Watch a running ``tritonserver``'s stubs and reload the model of a dead one.

    Args:
        server_pid: the ``tritonserver`` process.
        repository: its model repository (stubs name their model file inside it).
        http_url: ``host:port`` of its HTTP endpoint (the repository API).
        headers: extra HTTP headers for the repository API (e.g. a restricted-API key).
        interval: seconds between polls; a dead stub is acted on within two polls.
        load_timeout: seconds a reload may take (s).

    ``events`` lists every dead stub seen, with when its model was reloaded or why not.
    """

    def __init__(self, server_pid: int, repository: str | Path, http_url: str, *,
                 headers: dict[str, str] | None = None, interval: float = 0.5,
                 load_timeout: float = 300.0):
        self.server = psutil.Process(server_pid)
        self.repository = Path(repository)
        self.http_url = http_url
        self.headers = dict(headers or {})
        self.admin = TritonAdmin(http_url, self.headers)
        self.interval = interval
        self.load_timeout = load_timeout
        self.events: list[StubEvent] = []
        self._known: dict[int, Stub] = {}  # live stubs seen, by PID
        self._suspect: set[int] = set()  # zombies seen once
        self._handled: set[int] = set()  # zombies already acted on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- observing ---------------------------------------------------------------------
    def poll(self) -> list[Stub]:
        """One look at the server's children; returns stubs newly found dead (zombie for
        two polls in a row) and not yet acted on."""
        dead, zombies = [], set()
        try:
            children = self.server.children()
        except psutil.Error:
            return []
        for child in children:
            try:
                status = child.status()
                if status != psutil.STATUS_ZOMBIE:
                    if child.pid not in self._known:
                        stub = stub_of(child.cmdline(), self.repository)
                        if stub:
                            self._known[child.pid] = Stub(child.pid, stub.model, stub.instance)
                    continue
            except psutil.Error:
                continue
            if child.pid in self._known and child.pid not in self._handled:
                zombies.add(child.pid)
                if child.pid in self._suspect:
                    dead.append(self._known[child.pid])
        self._suspect = zombies
        alive = {c.pid for c in children}
        self._known = {pid: s for pid, s in self._known.items() if pid in alive}
        return dead

    def stubs(self) -> list[Stub]:
        """The stubs seen alive at the last poll (run :meth:`poll` first)."""
        return [s for pid, s in self._known.items() if pid not in self._handled]

    # -- acting ------------------------------------------------------------------------
    def reload(self, model: str, dead: list[Stub]) -> None:
        """Load ``model`` again with its own config plus the restart parameters (module
        docstring), which replaces all its instances with fresh stubs.

        Raises:
            urllib.error.URLError / HTTPError: the server refused or failed the load; the
                model is then UNAVAILABLE (not ready).
        """
        config = self.admin.model_config(model)
        params = config.setdefault("parameters", {})
        count = int(params.get(STUB_RESTARTS_PARAMETER, {}).get("string_value", "0") or 0) + 1
        when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        params[STUB_RESTARTS_PARAMETER] = {"string_value": str(count)}
        params[STUB_RESTART_PARAMETER] = {"string_value": (
            f"stub of {', '.join(s.instance for s in dead)} died at {when}; model reloaded "
            "(state held by that model, e.g. video streams, was lost)")}
        self.admin.load(model, config, timeout=self.load_timeout)

    def _ready_models(self) -> set[str]:
        """Names of the models the repository index reports READY (empty if unreadable)."""
        try:
            index = self.admin.repository_index()
        except (urllib.error.URLError, OSError, ValueError):
            return set()
        return {m["name"] for m in index if m.get("state") == "READY"}

    def check(self) -> list[StubEvent]:
        """Poll once and reload the model of every dead stub; returns the new events."""
        by_model: dict[str, list[Stub]] = {}
        for stub in self.poll():
            self._handled.add(stub.pid)
            by_model.setdefault(stub.model, []).append(stub)
        if by_model:
            # A stub also ends when its model is unloaded (repository API, shutdown): that
            # is no fault, and reloading would undo the unload. Only a READY model whose
            # stub died is reloaded.
            ready = self._ready_models()
            for model in [m for m in by_model if m not in ready]:
                log.info("stub of %s ended while the model is not READY (unloaded?): left alone",
                         model)
                del by_model[model]
        new = []
        for model, dead in by_model.items():
            events = [StubEvent(stub, time.time()) for stub in dead]
            log.warning("Python-backend stub of %s (pid %s) died; reloading model %s",
                        ", ".join(s.instance for s in dead), ", ".join(str(s.pid) for s in dead),
                        model)
            try:
                self.reload(model, dead)
                for event in events:
                    event.reloaded_at = time.time()
                log.warning("model %s reloaded after its stub died", model)
            except (urllib.error.URLError, OSError, ValueError) as err:
                detail = err.read().decode(errors="replace") if isinstance(err, urllib.error.HTTPError) else ""
                for event in events:
                    event.error = f"{err} {detail}".strip()
                log.error("reloading model %s after its stub died failed: %s %s", model, err, detail)
            new += events
        self.events += new
        return new

    # -- thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the monitor must outlive one bad poll
                log.exception("stub monitor poll failed")

    def start(self) -> "StubMonitor":
        """Poll in a daemon thread until :meth:`stop`."""
        self.poll()
        self._thread = threading.Thread(target=self._run, name="tritonlens-stub-monitor",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (a reload in progress is not waited for beyond 2 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
