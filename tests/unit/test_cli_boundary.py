"""client/options.run_at_boundary: whatever escapes a command is one line on stderr, exit 1;
and host_port: the URL forms users type."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from tritonlens.client.base import ServerUnreachableError, TritonLensError, host_port
from tritonlens.client.options import run_at_boundary


def raising(err: BaseException):
    def app():
        raise err
    return app


@pytest.mark.parametrize("err, phrase", [
    (ServerUnreachableError("no Triton server at x:1"), "error: no Triton server at x:1"),
    (FileNotFoundError(2, "No such file or directory", "/nonexistent/m.png"),
     "error: /nonexistent/m.png: No such file or directory"),
    (InferenceServerException("[StatusCode.UNAVAILABLE] restricted API"),
     "error: the Triton server answered: [StatusCode.UNAVAILABLE] restricted API"),
    (ValueError("multi\nline"), "error: unexpected ValueError: multi line (a tritonlens bug"),
])
def test_escaping_errors_are_one_line(capsys, err, phrase):
    with pytest.raises(SystemExit) as info:
        run_at_boundary(raising(err))
    assert info.value.code == 1
    stderr = capsys.readouterr().err
    assert " ".join(stderr.split()).startswith(phrase), stderr
    assert "Traceback" not in stderr


def test_exits_pass_through():
    with pytest.raises(SystemExit) as info:
        run_at_boundary(raising(SystemExit(2)))  # click's usage errors
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        run_at_boundary(raising(KeyboardInterrupt()))
    assert info.value.code == 130


@pytest.mark.parametrize("url, expected", [
    ("127.0.0.1:8000", "127.0.0.1:8000"), ("http://127.0.0.1:8000", "127.0.0.1:8000"),
    ("http://127.0.0.1:8000/", "127.0.0.1:8000"), ("grpc://host:8001", "host:8001"),
])
def test_host_port_accepts_what_users_type(url, expected):
    assert host_port(url, "http") == expected


@pytest.mark.parametrize("url, phrase", [
    ("https://host:8000", "TLS"), ("ftp://host:1", "give host:port"),
    ("host:8000/v2/models", "without a path"),
])
def test_host_port_refuses_with_the_fix(url, phrase):
    with pytest.raises(TritonLensError, match=phrase):
        host_port(url, "http")
