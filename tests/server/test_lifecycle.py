"""The server process's lifecycle and its exposed surface, against real tritonservers.

Each test starts its own small server (one Python-backend identity model, ~2-4 s): the
server dies with its launcher, busy ports are named, `tritonlens serve` stops on SIGINT /
SIGTERM / SIGHUP even when SIGINT was inherited ignored and says NOT ready when a model
failed, shutdown after a dead stub is bounded and leaves no /dev/shm region, and the
shared-memory / model-repository APIs need the API key while inference does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tritonlens.client.base import API_KEY_HEADER, TritonClient
from tritonlens.export.config import Tensor, model_config, write_model
from tritonlens.launcher import ServerStartError, TritonServer
from tritonlens.launcher.process import check_port_free, free_port

IDENTITY_PY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
'''
TRITONLENS = str(Path(sys.executable).parent / "tritonlens")


def identity_repo(path: Path, broken: bool = False) -> Path:
    """A repository with `identity` (FP32 [batch, 2] -> same), and `broken` if asked."""
    write_model(path, model_config("identity", "python", [Tensor("x", "fp32", (2,))],
                                   [Tensor("y", "fp32", (2,))], max_batch_size=2),
                {"model.py": IDENTITY_PY})
    if broken:
        write_model(path, model_config("broken", "python", [Tensor("x", "fp32", (2,))],
                                       [Tensor("y", "fp32", (2,))], max_batch_size=2),
                    {"model.py": "raise ImportError('deliberately broken')\n"})
    return path


def infer_identity(client: TritonClient) -> np.ndarray:
    x = np.array([[1.5, -2.0]], np.float32)
    return client.infer("identity", {"x": x}).as_numpy("y")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def start_serve(repo: Path, tmp_path: Path, ports: tuple[int, int, int],
                sigint_ignored: bool = False) -> subprocess.Popen:
    """`tritonlens serve` as a child; with ``sigint_ignored`` it inherits SIGINT ignored, as
    a background job of a non-interactive shell does (set by ``sh``'s trap, then exec: no
    preexec_fn, which can hang a child forked from this multi-threaded test process)."""
    http, grpc, metrics = ports
    command = [TRITONLENS, "serve", "--repo", str(repo), "--http-port", str(http), "--grpc-port",
               str(grpc), "--metrics-port", str(metrics), "--log-file", str(tmp_path / "server.log")]
    if sigint_ignored:
        command = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})


def read_until(proc: subprocess.Popen, text: str, timeout: float = 120.0) -> str:
    """stdout of ``proc`` up to the line containing ``text`` (or to its end)."""
    lines: list[str] = []
    done = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line)
            if text in line:
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    return "".join(lines)


def tritonserver_child(pid: int) -> psutil.Process:
    children = [c for c in psutil.Process(pid).children() if "tritonserver" in c.name()]
    assert children, "no tritonserver child"
    return children[0]


def test_server_dies_with_its_launcher(tmp_path):
    """SIGKILL of the process that started the server: the server is gone in seconds and
    its ports are free again (before: an orphan kept serving and held the ports)."""
    repo = identity_repo(tmp_path / "repo")
    http, grpc = free_port(), free_port()
    proc = start_serve(repo, tmp_path, (http, grpc, 0))
    try:
        out = read_until(proc, "Ctrl-C to stop")
        assert "ready" in out, out
        server_pid = tritonserver_child(proc.pid).pid
        proc.kill()
        proc.wait()
        assert wait_gone(server_pid, 15), "tritonserver outlived its killed launcher"
        for name, port in (("HTTP", http), ("gRPC", grpc)):
            check_port_free("127.0.0.1", port, name)
    finally:
        proc.kill()


def test_second_serve_on_busy_ports_names_the_port(tmp_path):
    repo = identity_repo(tmp_path / "repo")
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=tmp_path / "first.log") as first:
        with pytest.raises(ServerStartError, match=f"HTTP port {first.http_port} .* already in use"):
            TritonServer(repo, http_port=first.http_port, grpc_port=0, metrics_port=0).start()
        proc = start_serve(repo, tmp_path, (0, first.grpc_port, 0))
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert f"gRPC port {first.grpc_port}" in " ".join(out.split()) and "already in use" in out, out
        assert "Ctrl-C to stop" not in out  # before: "ready", from the first server's /v2/health/live
        assert infer_identity(TritonClient(first.grpc_url, "grpc"))[0, 0] == 1.5  # untouched


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_serve_stops_on_signals_even_with_sigint_inherited_ignored(tmp_path, signum):
    """A background job of a non-interactive shell inherits SIGINT ignored; `serve` handles
    SIGINT, SIGTERM and SIGHUP itself and stops the server (before: SIGINT did nothing)."""
    repo = identity_repo(tmp_path / "repo")
    proc = start_serve(repo, tmp_path, (0, 0, 0), sigint_ignored=True)
    try:
        out = read_until(proc, "Ctrl-C to stop")
        assert "ready" in out, out
        server_pid = tritonserver_child(proc.pid).pid
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=30)
        assert "tritonserver stopped" in rest, rest
        assert wait_gone(server_pid, 5)
    finally:
        proc.kill()


def test_serve_stops_on_sigterm_during_a_slow_start_up(tmp_path):
    """A supervisor's SIGTERM while models are still loading stops `serve` at once (before:
    it was held until every model had loaded, minutes for SAM 2 on a busy host)."""
    repo = identity_repo(tmp_path / "repo")
    write_model(repo, model_config("slow", "python", [Tensor("x", "fp32", (2,))],
                                   [Tensor("y", "fp32", (2,))], max_batch_size=2),
                {"model.py": "import time\n\nclass TritonPythonModel:\n"
                             "    def initialize(self, args):\n        time.sleep(300)\n"})
    proc = start_serve(repo, tmp_path, (0, 0, 0))
    try:
        read_until(proc, "starting tritonserver")
        deadline = time.monotonic() + 60
        while not [c for c in psutil.Process(proc.pid).children() if "tritonserver" in c.name()]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server_pid = tritonserver_child(proc.pid).pid
        time.sleep(2)  # the server is up and loading `slow`
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert time.monotonic() - started < 30, rest
        assert "tritonserver stopped" in rest and "Ctrl-C to stop" not in rest, rest
        assert wait_gone(server_pid, 5)
    finally:
        proc.kill()


def test_serve_says_not_ready_when_a_model_failed(tmp_path):
    """/v2/health/ready answers 400 while a model failed to load: no green "ready"."""
    repo = identity_repo(tmp_path / "repo", broken=True)
    proc = start_serve(repo, tmp_path, (0, 0, 0))
    try:
        out = read_until(proc, "Ctrl-C to stop")
        assert "NOT ready" in out and "failed to load: broken" in out, out
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()


def test_stop_after_a_dead_stub_is_bounded_and_cleans_shm(tmp_path):
    """A stub killed (OOM killer, crash) with a request in flight: before, SIGINT took ~31 s
    (Triton's 30 s exit timeout) and the stub's /dev/shm region stayed."""
    repo = identity_repo(tmp_path / "repo")
    server = TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                          log_file=tmp_path / "server.log").start()
    try:
        assert server.shm_regions(), "the Python backend's regions carry the server's prefix"
        stub = [c for c in psutil.Process(server.process.pid).children()
                if "triton_python_backend_stub" in c.name()][0]
        stub.kill()
        stub.wait(5)
        client = TritonClient(server.http_url, "http", timeout=60)

        def in_flight():
            try:
                infer_identity(client)
            except Exception:  # noqa: BLE001 - the stub is dead; only shutdown matters here
                pass

        threading.Thread(target=in_flight, daemon=True).start()
        time.sleep(2)
    finally:
        started = time.monotonic()
        server.stop()
        seconds = time.monotonic() - started
    assert seconds < server.exit_timeout + 10, f"stop took {seconds:.1f} s"
    assert server.shm_regions() == []


def test_restricted_apis_need_the_api_key(tmp_path):
    """Shared-memory registration and model loading are refused without the key (HTTP 403,
    gRPC UNAVAILABLE, "This API is restricted"); inference is open; with the key both work."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm
    from tritonclient.utils import InferenceServerException

    repo = identity_repo(tmp_path / "repo")
    key_env = os.environ.pop("TRITONLENS_API_KEY", None)
    try:
        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, api_key="s3cret-key",
                          model_control_mode="explicit", load_models=["identity"],
                          log_file=tmp_path / "server.log") as server:
            region = f"/tritonlens_test_{os.getpid()}"
            handle = shm.create_shared_memory_region("probe", region, 64)
            try:
                anonymous = [httpclient.InferenceServerClient(server.http_url),
                             grpcclient.InferenceServerClient(server.grpc_url)]
                for conn in anonymous:
                    for call in (lambda: conn.register_system_shared_memory("probe", region, 64),
                                 lambda: conn.load_model("identity"),
                                 lambda: conn.get_model_repository_index()):
                        with pytest.raises(InferenceServerException, match="restricted") as info:
                            call()
                        assert API_KEY_HEADER in str(info.value)
                    assert conn.is_model_ready("identity")
                wrong = TritonClient(server.http_url, "http", api_key="wrong")
                with pytest.raises(InferenceServerException, match="restricted"):
                    wrong.connection.load_model("identity")
                for protocol in ("http", "grpc"):
                    anyone = TritonClient(server.url(protocol), protocol)
                    anyone.api_key = None  # no key: inference stays open
                    assert infer_identity(anyone)[0, 1] == -2.0
                    owner = TritonClient(server.url(protocol), protocol)  # finds the key file
                    owner.connection.register_system_shared_memory("probe", region, 64)
                    owner.connection.unregister_system_shared_memory("probe")
                    owner.connection.load_model("identity")
                    assert infer_identity(owner)[0, 0] == 1.5
            finally:
                shm.destroy_shared_memory_region(handle)
    finally:
        if key_env is not None:
            os.environ["TRITONLENS_API_KEY"] = key_env


def test_stub_monitor_leaves_an_unloaded_model_unloaded(tmp_path):
    """Unloading a model ends its stubs too: the stub monitor must not take that for a crash
    and load the model again (it reloads only models the index reports READY)."""
    repo = identity_repo(tmp_path / "repo")
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=tmp_path / "server.log") as server:
        owner = TritonClient(server.http_url, "http")  # finds the API key file
        owner.connection.unload_model("identity")
        time.sleep(4 * server.stub_monitor.interval + 2)  # several polls after the stub ended
        states = {m["name"]: m.get("state") for m in server.repository_index()}
        assert states["identity"] != "READY", states
        assert server.stub_monitor.events == []
