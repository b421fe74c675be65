"""CPU use and peak RSS of the server, its Python-backend stubs and the load generator.

:class:`ResourceMonitor` samples a process tree with psutil in a background thread while a
measurement runs. The tritonserver process and its children (one
``triton_python_backend_stub`` per model instance) are the server side; perf_analyzer is
watched too, because on one host the client takes CPU from the server.
"""

from __future__ import annotations

import os
import threading
import time

import psutil

COUNTERS = ("requests", "executions", "queue_ns", "compute_input_ns", "compute_infer_ns",
            "compute_output_ns")


def process_label(proc: psutil.Process) -> str:
    """``tritonserver`` or ``stub:<model>`` for a Python-backend stub (its model path's
    folder name is the model name), else the process name."""
    try:
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if cmdline and cmdline[0].endswith("triton_python_backend_stub") and len(cmdline) > 1:
        parts = cmdline[1].rstrip("/").split("/")
        # .../<repo>/<model>/<version>/model.py
        return "stub:" + (parts[-3] if len(parts) >= 3 else cmdline[1])
    return proc.name()


def load_average() -> str:
    """The host's load average over 1 / 5 / 15 minutes, as "1.23/0.98/0.75"."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def model_stats(client, models) -> dict[str, dict]:
    """Triton's cumulative statistics of ``models`` (those the server reports), per model:
    ``requests`` and ``executions`` (counts); ``queue_ns`` (nanoseconds summed over
    requests); ``compute_input_ns`` / ``compute_infer_ns`` / ``compute_output_ns``
    (nanoseconds summed over executions, from ``batch_stats``: ``inference_stats`` count a
    batch's time once per request in it); ``batches`` ({batch size: executions}).

    ``client`` is a tritonlens client (its ``connection`` is a tritonclient one)."""
    out = {}
    for name in models:
        rows = client.connection.get_inference_statistics(name, as_json=True)["model_stats"]
        if not rows:
            continue
        infer = rows[0].get("inference_stats", {})
        batch_stats = rows[0].get("batch_stats", [])
        out[name] = {"requests": int(infer.get("success", {}).get("count", 0)),
                     "executions": int(rows[0].get("execution_count", 0)),
                     "queue_ns": int(infer.get("queue", {}).get("ns", 0)),
                     **{f"{k}_ns": sum(int(b.get(k, {}).get("ns", 0)) for b in batch_stats)
                        for k in ("compute_input", "compute_infer", "compute_output")},
                     "batches": {int(b["batch_size"]): int(b["compute_infer"]["count"])
                                 for b in batch_stats}}
    return out


def stats_delta(after: dict, before: dict) -> dict:
    """``after - before`` of two :func:`model_stats` snapshots (batch sizes that did not
    run in between dropped)."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        out[name] = {k: a[k] - b.get(k, 0) for k in COUNTERS}
        batches = {k: v - b.get("batches", {}).get(k, 0) for k, v in sorted(a["batches"].items())}
        out[name]["batches"] = {k: v for k, v in batches.items() if v}
    return out


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


class ResourceMonitor:
    """Samples ``server`` (and its children) and optionally a client process.

    Use as a context manager around one measurement::

        with ResourceMonitor(server_pid, interval_s=0.25) as mon:
            mon.watch_client(perf_analyzer_process)
            ...
        mon.summary()   # {"server_cpu_cores": 1.7, "server_peak_rss_mb": 812.0, ...}

    CPU use is in cores (CPU seconds / wall seconds: 2.0 = both cores of a 2-core host busy);
    ``other_cpu_cores`` is the rest of the host's busy CPU over the same span (other jobs);
    RSS in MB (2**20 bytes); per-process peaks are keyed by :func:`process_label`.
    """

    def __init__(self, server_pid: int, interval_s: float = 0.25):
        self.server = psutil.Process(server_pid)
        self.interval_s = interval_s
        self.client: psutil.Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._client_cpu = 0.0
        self.peak_total_mb = 0.0
        self.peak_by_process: dict[str, float] = {}
        self.started = self.ended = 0.0
        self._system_start = self._system_end = None

    def watch_client(self, popen) -> None:
        """Also account the CPU of the load generator (a ``subprocess.Popen``)."""
        try:
            self.client = psutil.Process(popen.pid)
        except psutil.NoSuchProcess:
            self.client = None

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.server, *self.server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _sample(self) -> None:
        total = 0.0
        for proc in self._tree():
            try:
                rss = proc.memory_info().rss / 2**20
                cpu = _cpu_seconds(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self._cpu_start.setdefault(proc.pid, cpu)
            self._cpu_last[proc.pid] = cpu
            total += rss
            label = process_label(proc)
            self.peak_by_process[label] = max(self.peak_by_process.get(label, 0.0), rss)
        self.peak_total_mb = max(self.peak_total_mb, total)
        if self.client is not None:
            try:
                self._client_cpu = _cpu_seconds(self.client)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    @staticmethod
    def _system_busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def __enter__(self) -> "ResourceMonitor":
        self._system_start = self._system_busy()
        self.started = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.ended = time.monotonic()
        self._system_end = self._system_busy()

    def summary(self) -> dict:
        """CPU cores used and peak RSS over the monitored span (see the class docstring)."""
        wall = max(self.ended - self.started, 1e-9)
        server_cpu = sum(self._cpu_last[p] - self._cpu_start[p] for p in self._cpu_last)
        system = (self._system_end or self._system_start) - self._system_start
        return {
            # everything else on the host (other users' jobs): > 0 means a contended measurement
            "other_cpu_cores": round(max(0.0, system - server_cpu - self._client_cpu) / wall, 3),
            "load_average_1min": round(psutil.getloadavg()[0], 2),
            "wall_s": round(wall, 2),
            "server_cpu_cores": round(server_cpu / wall, 3),
            "client_cpu_cores": round(self._client_cpu / wall, 3),
            "server_peak_rss_mb": round(self.peak_by_process.get("tritonserver", 0.0), 1),
            "stubs_peak_rss_mb": {k: round(v, 1) for k, v in sorted(self.peak_by_process.items())
                                  if k.startswith("stub:")},
            "total_peak_rss_mb": round(self.peak_total_mb, 1),
        }
