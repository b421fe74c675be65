"""The launcher's command line and exposed surface, without starting a server: restricted
APIs with the key, per-start /dev/shm prefixes, the exit timeout, busy-port detection, where
clients find the key, and the compose file's loopback ports (the real-server tests are in
tests/server/test_lifecycle.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from tests.helpers import command
from tritonlens.bench.perf_analyzer import redacted
from tritonlens.client.base import API_KEY_HEADER, api_key_file, api_key_headers, find_api_key
from tritonlens.launcher import ServerStartError, TritonServer
from tritonlens.launcher.flags import RESTRICTED_APIS
from tritonlens.launcher.install import PYTHON_BASED_BACKENDS
from tritonlens.launcher.process import check_port_free

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def test_restricted_apis_carry_the_key_on_both_protocols(tmp_path):
    cmd = command(TritonServer(tmp_path, api_key="k3y"))
    apis = "shared-memory,model-repository,logging,trace"
    assert f"--http-restricted-api={apis}:{API_KEY_HEADER}=k3y" in cmd
    assert f"--grpc-restricted-protocol={apis}:{API_KEY_HEADER}=k3y" in cmd
    assert not any(arg.startswith(("--http-restricted", "--grpc-restricted"))
                   for arg in command(TritonServer(tmp_path, restricted_apis=())))


def test_random_key_per_start_unless_given(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITONLENS_API_KEY", raising=False)
    first, second = TritonServer(tmp_path), TritonServer(tmp_path)
    assert first.api_key != second.api_key and len(first.api_key) >= 32
    monkeypatch.setenv("TRITONLENS_API_KEY", "from-env")
    assert TritonServer(tmp_path).api_key == "from-env"
    with pytest.raises(ValueError, match="must not contain"):
        TritonServer(tmp_path, api_key="a:b")


def test_every_python_backend_gets_this_starts_shm_prefix(tmp_path):
    server = TritonServer(tmp_path)
    cmd = command(server)
    prefixes = [arg.partition("shm-region-prefix-name=")[2] for arg in cmd if "shm-region-prefix" in arg]
    assert prefixes == [f"{server.shm_prefix}{name}_" for name in ("python", *PYTHON_BASED_BACKENDS)]
    assert TritonServer(tmp_path).shm_prefix != server.shm_prefix  # distinct per start
    assert "--exit-timeout-secs=15" in cmd


def test_busy_port_is_named():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"gRPC port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port, "gRPC")
    check_port_free("127.0.0.1", port, "gRPC")  # closed: free again


def test_clients_find_the_key_of_a_local_server(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TRITONLENS_API_KEY", raising=False)
    assert find_api_key("127.0.0.1:8001") is None
    api_key_file(8001).parent.mkdir(parents=True)
    api_key_file(8001).write_text("abc")
    assert find_api_key("127.0.0.1:8001") == "abc"
    monkeypatch.setenv("TRITONLENS_API_KEY", "env")
    assert find_api_key("127.0.0.1:8001") == "env"
    assert api_key_headers("abc", "http") == {"tritonlens-api-key": "abc"}
    # Triton's gRPC server checks restricted metadata under "triton-grpc-protocol-<key>"
    assert api_key_headers("abc", "grpc") == {"triton-grpc-protocol-tritonlens-api-key": "abc"}
    assert api_key_headers(None, "grpc") == {}


def test_perf_analyzer_logs_keep_no_key():
    assert redacted(["pa", "-H", "tritonlens-api-key:s3cret", "-m", "m"]) == \
        ["pa", "-H", "tritonlens-api-key:<redacted>", "-m", "m"]


def test_compose_binds_loopback_and_restricts_the_same_apis():
    service = yaml.safe_load(COMPOSE.read_text())["services"]["triton"]
    assert all(port.startswith("127.0.0.1:") for port in service["ports"]), service["ports"]
    flags = {arg.partition("=")[0]: arg.partition("=")[2] for arg in service["command"]}
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        apis, _, header = flags[flag].partition(":")
        assert apis.split(",") == list(RESTRICTED_APIS)
        assert header == f"{API_KEY_HEADER}=${{TRITONLENS_API_KEY}}"
    assert "${TRITONLENS_API_KEY:?" in service["environment"]["TRITONLENS_API_KEY"]
