"""The nginx config that ``tritonlens serve --replicas N`` writes (launcher/replicas.py and
launcher/templates/tritonlens.conf.template): what it routes on, its bounds, and that Debian's
nginx accepts it (``nginx -t``; `make setup` installs nginx)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tritonlens.launcher.nginx import DEFAULT_MAX_BODY_SIZE, ProxySettings, find_nginx, render_nginx_config
from tritonlens.launcher.process import free_ports
from tritonlens.launcher.replicas import ReplicaSet

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")

GRPC = ["127.0.0.1:9101", "127.0.0.1:9111"]
HTTP = ["127.0.0.1:9100", "127.0.0.1:9110"]


def render(tmp_path, **settings):
    return render_nginx_config(ProxySettings(**settings), GRPC, HTTP, tmp_path, tmp_path / "access.log")


def upstream(config: str, name: str) -> str:
    return re.search(r"upstream " + name + r" \{(.*?)\n    \}", config, re.S).group(1)


def test_both_fronts_hash_the_correlation_id_header(tmp_path):
    config = render(tmp_path, grpc_port=8001, http_port=8000)
    assert "@{" not in config
    for name, addresses in (("triton_grpc", GRPC), ("triton_http", HTTP)):
        block = upstream(config, name)
        assert "hash $http_x_correlation_id consistent;" in block
        servers = re.findall(r"server (\S+) max_fails=1 fail_timeout=10s;", block)
        assert servers == addresses
    assert re.search(r"listen 127\.0\.0\.1:8001 http2;\s+.*?grpc_pass grpc://triton_grpc;", config, re.S)
    assert re.search(r"listen 127\.0\.0\.1:8000;\s+.*?proxy_pass http://triton_http;", config, re.S)
    assert "proxy_http_version 1.1;" in config and 'proxy_set_header Connection "";' in config
    assert f"client_max_body_size {DEFAULT_MAX_BODY_SIZE};" in config
    # The access log names the replica and the correlation ID of every request.
    assert '"upstream":"$upstream_addr"' in config and '"correlation_id":"$http_x_correlation_id"' in config
    assert config.count("add_header x-tritonlens-replica $upstream_addr always;") == 2
    assert f"pid {tmp_path}/nginx.pid;" in config and "daemon off;" in config


def test_settings_reach_the_config(tmp_path):
    config = render(tmp_path, host="::1", grpc_port=7001, http_port=7000, max_body_size="8M",
                    workers="2", max_fails=3, fail_timeout_s=20, hash_header="X-Stream-Id")
    assert "listen [::1]:7001 http2;" in config and "listen [::1]:7000;" in config
    assert "client_max_body_size 8M;" in config and "worker_processes 2;" in config
    assert "hash $http_x_stream_id consistent;" in config
    assert "server 127.0.0.1:9101 max_fails=3 fail_timeout=20s;" in config


@pytest.mark.parametrize("settings, named", [
    ({"max_body_size": "64 MB"}, "max body size"),
    ({"max_body_size": "-1"}, "max body size"),
    ({"workers": "0"}, "workers"),
    ({"max_fails": 0}, "max_fails"),
    ({"hash_header": "x correlation"}, "hash header"),
])
def test_bad_settings_are_named(settings, named):
    with pytest.raises(ValueError, match=named):
        ProxySettings(**settings)


def test_replica_lists_must_match(tmp_path):
    with pytest.raises(ValueError, match="each replica"):
        render_nginx_config(ProxySettings(), GRPC, HTTP[:1], tmp_path, tmp_path / "a.log")
    with pytest.raises(ValueError, match="at least one"):
        render_nginx_config(ProxySettings(), [], [], tmp_path, tmp_path / "a.log")


@pytest.mark.parametrize("settings", [{}, {"max_body_size": "0", "workers": "1", "host": "::1"}])
@pytest.mark.tools("nginx")
def test_nginx_accepts_the_config(tmp_path, settings):
    """``nginx -t`` parses the rendered config (directives, upstream hash, http2, grpc_pass)."""
    config = tmp_path / "nginx.conf"
    config.write_text(render(tmp_path, grpc_port=18001, http_port=18000, **settings))
    check = subprocess.run([find_nginx(), "-t", "-p", str(tmp_path), "-c", str(config),
                            "-e", str(tmp_path / "error.log")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr


def test_metrics_port_of_replica_i_is_p_plus_i(tmp_path):
    """``--metrics-port P`` with ``--replicas N``: replica i serves metrics on P + i (0: free
    ports, chosen at start); the range must stay clear of the proxy's ports and below 65536."""
    proxy = ProxySettings(grpc_port=18001, http_port=18000)
    assert ReplicaSet(tmp_path, 3, proxy, metrics_port=19002).metrics_ports == [19002, 19003, 19004]
    assert ReplicaSet(tmp_path, 3, proxy).metrics_ports == []
    with pytest.raises(ValueError, match="include the proxy's port 18000"):
        ReplicaSet(tmp_path, 3, proxy, metrics_port=17999)
    with pytest.raises(ValueError, match="within 1..65535"):
        ReplicaSet(tmp_path, 2, proxy, metrics_port=65535)


def test_busy_replica_metrics_port_is_refused_before_any_start(tmp_path):
    """`tritonlens serve --replicas 2 --metrics-port P` with P + 1 taken names replica 1's
    port before starting anything (the repository is empty: nothing could load anyway)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        run = subprocess.run([TRITONLENS, "serve", "--repo", str(tmp_path), "--replicas", "2",
                              "--http-port", "0", "--grpc-port", "0", "--metrics-port", str(busy - 1)],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    output = " ".join((run.stdout + run.stderr).split())
    assert f"replica 1 metrics port {busy} on 127.0.0.1 is already in use" in output, output
    assert "starting" in output and "replica-0.log" not in output


def test_free_ports_are_distinct():
    ports = free_ports("127.0.0.1", 12, exclude={8000})
    assert len(set(ports)) == 12 and 8000 not in ports
