"""perf_analyzer: install it in its own tool environment, run it, parse its CSV.

Facts this module relies on (measured on this project's hosts, see the project notes on
local Triton):

* the newest perf_analyzer that runs on glibc 2.36 is the one inside
  ``tritonclient[all]==2.51.0`` (it lands in the venv's ``bin/``);
* tritonclient 2.51 pins numpy<2 and protobuf<5, which clash with the project's own
  environment, so it lives in a separate venv (default ``.tools/perf_analyzer``);
* the binary needs ``libb64.so.0d`` and ``libcudart.so.12``: both ship (under hashed names)
  in ``nvidia_pytriton.libs`` of the server wheel, so a ``lib/`` folder in the tool venv
  holds two symlinks to them and goes on ``LD_LIBRARY_PATH``.

Results come from perf_analyzer's own CSV report (``-f <csv>``), one row per concurrency
level, never from its screen output. Inputs are perf_analyzer ``--input-data`` JSON files
written by :func:`write_input_data` from real data.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tritonlens.client.base import API_KEY_HEADER, api_key_headers, find_api_key

PERF_ANALYZER_PACKAGES = ("tritonclient[all]==2.51.0", "setuptools<81")
PERF_ANALYZER_VERSION = "2.51.0"
DEFAULT_TOOLS_DIR = Path(".tools")


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer could not be installed, could not start, or a run failed."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """An installed perf_analyzer: the binary and the environment it runs with."""

    binary: Path
    lib_dir: Path

    def environment(self) -> dict[str, str]:
        """This process's environment plus the tool's ``lib/`` on LD_LIBRARY_PATH."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.lib_dir), env.get("LD_LIBRARY_PATH", "")) if p)
        return env

    def version(self) -> str:
        """The version line perf_analyzer prints, e.g. ``Perf Analyzer Version 2.51.0``."""
        proc = subprocess.run([str(self.binary), "--version"], env=self.environment(),
                              capture_output=True, text=True, timeout=60)
        text = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or "Version" not in text:
            raise PerfAnalyzerError(f"perf_analyzer does not run (exit {proc.returncode}): "
                                    f"{text[-800:]}")
        return text.splitlines()[-1].strip()


def _server_libs() -> Path:
    """``nvidia_pytriton.libs`` of the installed server wheel (holds libb64 and libcudart)."""
    from tritonlens.launcher.install import find_triton

    return find_triton().libs


def ensure_perf_analyzer(tools_dir: Path = DEFAULT_TOOLS_DIR,
                         log=lambda line: None) -> PerfAnalyzer:
    """Return a working perf_analyzer, installing it into ``<tools_dir>/perf_analyzer`` first
    if needed (a venv with ``tritonclient[all]==2.51.0`` from the package registries).

    Raises:
        PerfAnalyzerError: the install failed or the binary does not run. Never skipped
            silently: a benchmark without perf_analyzer is not a benchmark.
    """
    venv = Path(tools_dir).resolve() / "perf_analyzer"
    binary = venv / "bin" / "perf_analyzer"
    if not binary.exists():
        log(f"installing perf_analyzer {PERF_ANALYZER_VERSION} into {venv}")
        steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", *PERF_ANALYZER_PACKAGES]]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise PerfAnalyzerError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                                        f"{(proc.stdout + proc.stderr)[-2000:]}")
        if not binary.exists():
            raise PerfAnalyzerError(f"tritonclient[all]==2.51.0 installed but {binary} is missing")
    lib_dir = venv / "lib" / "tritonlens-libs"
    lib_dir.mkdir(parents=True, exist_ok=True)
    libs = _server_libs()
    for link, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        matches = sorted(libs.glob(pattern))
        if not matches:
            raise PerfAnalyzerError(f"{pattern} not found in {libs}: perf_analyzer needs it")
        target = lib_dir / link
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(matches[0])
    tool = PerfAnalyzer(binary=binary, lib_dir=lib_dir)
    tool.version()  # fails loudly if it cannot run
    return tool


# -- input data ---------------------------------------------------------------------------
def _tensor_json(value) -> dict:
    """One tensor in perf_analyzer's JSON: base64 of its raw bytes plus its shape.

    ``value`` is a numpy array (raw little-endian, row-major bytes) or a list of ``bytes``
    for a BYTES tensor, which Triton serialises as 4-byte little-endian length + content
    per element (perf_analyzer sends a ``b64`` field as the tensor's raw buffer).
    """
    if isinstance(value, (list, tuple)):
        raw = b"".join(struct.pack("<I", len(item)) + bytes(item) for item in value)
        shape = [len(value)]
    else:
        array = np.ascontiguousarray(value)
        raw, shape = array.tobytes(), list(array.shape)
    return {"b64": base64.b64encode(raw).decode("ascii"), "shape": shape}


def write_input_data(path: Path, streams: list[list[dict]]) -> Path:
    """Write a perf_analyzer ``--input-data`` JSON file.

    Args:
        streams: one list of steps per data stream; a step maps input name to a numpy array
            (without the batch axis) or to a list of ``bytes`` (BYTES tensor). Stateless
            models use one stream whose steps perf_analyzer sends in turn; sequence models
            get one stream per sequence, each step one consecutive request (frame).
    """
    if not streams or not all(streams):
        raise ValueError("input data needs at least one non-empty stream")
    encoded = [[{name: _tensor_json(v) for name, v in step.items()} for step in stream]
               for stream in streams]
    data = encoded[0] if len(encoded) == 1 else encoded
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}))
    return path


# -- running ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """How perf_analyzer stabilises a measurement.

    Attributes:
        interval_ms: length of one time window (ms).
        stability_percent: allowed max/min spread over the last 3 windows (%).
        max_trials: windows tried before perf_analyzer gives up as unstable.
    """

    interval_ms: int = 4000
    stability_percent: int = 25
    max_trials: int = 8


@dataclass
class PerfPoint:
    """One perf_analyzer measurement at one concurrency (figures from its CSV).

    Latencies are client-side, in milliseconds; throughput in inferences per second.
    ``server_*_ms`` split the average latency as Triton reports it.
    """

    model: str
    protocol: str
    shared_memory: str
    concurrency: int
    throughput: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    avg_ms: float = 0.0
    server_queue_ms: float = 0.0
    server_compute_ms: float = 0.0
    sequence_length: int = 0
    error: str = ""
    resources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_csv(path: Path) -> list[dict[str, float]]:
    """Rows of perf_analyzer's ``-f`` CSV report as {column: number} (latencies in us)."""
    with open(path, newline="") as handle:
        return [{k.strip(): float(v) for k, v in row.items() if k and v not in (None, "")}
                for row in csv.DictReader(handle)]


def point_from_row(point: PerfPoint, row: dict[str, float]) -> PerfPoint:
    """Fill ``point`` from one CSV row (microseconds converted to milliseconds)."""
    us = 1e-3
    point.throughput = row["Inferences/Second"]
    point.p50_ms, point.p90_ms = row["p50 latency"] * us, row["p90 latency"] * us
    point.p95_ms, point.p99_ms = row["p95 latency"] * us, row["p99 latency"] * us
    point.avg_ms = row.get("Avg latency", 0.0) * us
    point.server_queue_ms = row.get("Server Queue", 0.0) * us
    point.server_compute_ms = sum(row.get(k, 0.0) for k in (
        "Server Compute Input", "Server Compute Infer", "Server Compute Output")) * us
    return point


def command(tool: PerfAnalyzer, model: str, url: str, protocol: str, concurrency: int,
            input_data: Path, csv_path: Path, measurement: Measurement,
            shared_memory: str = "none", sequence_length: int = 0,
            sequence_ids: int = 0) -> list[str]:
    """The perf_analyzer command line for one measurement point."""
    cmd = [str(tool.binary), "-m", model, "-u", url, "-i", protocol,
           "--input-data", str(input_data),
           "--concurrency-range", f"{concurrency}:{concurrency}",
           "--measurement-mode", "time_windows",
           "--measurement-interval", str(measurement.interval_ms),
           "--stability-percentage", str(measurement.stability_percent),
           "--max-trials", str(measurement.max_trials),
           "-f", str(csv_path), "--verbose-csv"]
    if shared_memory != "none":
        # outputs of these models are small; 1 MiB per output region is plenty
        cmd += ["--shared-memory", shared_memory, "--output-shared-memory-size", str(1 << 20)]
        # registering the regions is a restricted API on a `tritonlens serve` server: -H sends
        # the API key as an HTTP header / gRPC metadata
        for key, value in api_key_headers(find_api_key(url), protocol).items():
            cmd += ["-H", f"{key}:{value}"]
    if sequence_length:
        # --serial-sequences: at most one request in flight per sequence, as a video client
        # sends frames (a stateful tracker needs them in order). Variation 0: every sequence
        # is exactly the data stream's frames (the default varies lengths by 20%, which
        # skips or repeats frames of the real clip).
        cmd += ["--serial-sequences", "--sequence-length-variation", "0",
                "--sequence-length", str(sequence_length),
                "--sequence-id-range", f"1:{max(sequence_ids, concurrency) + 1}"]
    return cmd


def redacted(cmd: list[str]) -> list[str]:
    """``cmd`` with the value of every ``-H header:value`` replaced (logs keep no API key)."""
    return [f"{arg.partition(':')[0]}:<redacted>" if i and cmd[i - 1] == "-H" else arg
            for i, arg in enumerate(cmd)]


def _flag_value(args: list[str], *names: str) -> str | None:
    """The value of the last ``-x VALUE`` / ``--name=VALUE`` / ``--name VALUE`` in ``args``."""
    value = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    return value


def passthrough_command(tool: PerfAnalyzer, args: list[str]) -> list[str]:
    """perf_analyzer with the user's ``args`` unchanged, plus the API-key header when needed.

    Registering shared-memory regions (``--shared-memory system|cuda``) is a restricted API
    on a ``tritonlens serve`` server, so then ``-H tritonlens-api-key:<key>`` (gRPC: Triton's
    metadata prefix) is added with the key :func:`find_api_key` finds for the server's port,
    unless ``args`` already carry such a header. The server and protocol are read from
    ``-u``/``--url`` and ``-i``/``--protocol`` with perf_analyzer's own defaults
    (``localhost:8000``, HTTP; ``localhost:8001`` for gRPC).
    """
    cmd = [str(tool.binary), *args]
    shared_memory = _flag_value(args, "--shared-memory") or "none"
    has_key = any(API_KEY_HEADER + ":" in arg for arg in args)
    if shared_memory != "none" and not has_key:
        protocol = (_flag_value(args, "-i", "--protocol") or "http").lower()
        url = _flag_value(args, "-u", "--url") or f"localhost:{8001 if protocol == 'grpc' else 8000}"
        for key, value in api_key_headers(find_api_key(url), protocol).items():
            cmd += ["-H", f"{key}:{value}"]
    return cmd


# perf_analyzer errors that a longer window cures. The second one was seen on the sam2_track
# sequence ensemble at concurrency 4-8 with 800-5000 ms windows (few frames complete per
# window at ~1 s per frame); its exact cause inside perf_analyzer was not established.
RETRY_WITH_LONGER_WINDOW = ("stable measurement", "failed to find the requested model version")


def run_point(tool: PerfAnalyzer, point: PerfPoint, url: str, input_data: Path,
              work: Path, measurement: Measurement, timeout_s: float = 600.0,
              on_start=lambda proc: None) -> PerfPoint:
    """Run perf_analyzer for ``point`` (model, protocol, shared memory, concurrency) and fill
    it from the CSV. A failed run sets ``point.error`` (perf_analyzer's last lines) instead
    of raising, so one unstable point does not lose the rest of a sweep.

    ``on_start`` gets the ``subprocess.Popen`` (the resource monitor watches its CPU).
    """
    tag = f"{point.model}-{point.protocol}-{point.shared_memory}-c{point.concurrency}"
    point = _run_once(tool, point, url, input_data, work, tag, measurement, timeout_s, on_start)
    if point.error and any(text in point.error for text in RETRY_WITH_LONGER_WINDOW):
        # a noisy shared host, or too few completions per window: one retry with twice
        # the window, as perf_analyzer suggests
        point.error = ""
        longer = Measurement(2 * measurement.interval_ms, measurement.stability_percent,
                             measurement.max_trials)
        point = _run_once(tool, point, url, input_data, work, tag, longer, timeout_s, on_start)
    return point


def _run_once(tool, point, url, input_data, work, tag, measurement, timeout_s, on_start):
    csv_path, log_path = work / f"{tag}.csv", work / f"{tag}.log"
    work.mkdir(parents=True, exist_ok=True)
    csv_path.unlink(missing_ok=True)
    cmd = command(tool, point.model, url, point.protocol, point.concurrency, input_data,
                  csv_path, measurement, point.shared_memory, point.sequence_length)
    with open(log_path, "w") as log:
        log.write(" ".join(redacted(cmd)) + "\n\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=tool.environment(), stdout=log, stderr=subprocess.STDOUT)
        on_start(proc)
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -1
    rows = parse_csv(csv_path) if csv_path.exists() else []
    if code != 0 or not rows:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-4:]
        point.error = f"perf_analyzer exit {code}: " + " | ".join(line.strip() for line in tail)
        return point
    return point_from_row(point, rows[-1])
