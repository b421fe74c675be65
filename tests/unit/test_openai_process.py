"""The OpenAI gateway's process and serve options, without starting anything: the key never
appears on a command line (other users can read those), the URLs the clients are given, and
the options of ``tritonlens serve``."""

from __future__ import annotations

import socket

import typer
from typer.testing import CliRunner

from tritonlens.client.cli import app
from tritonlens.launcher.openai_process import OpenAIGateway


def test_key_is_not_on_the_command_line():
    gateway = OpenAIGateway("127.0.0.1:8001", port=9000, models=["clip", "clip_int8"], api_key="s3cret-key")
    command = gateway.command()
    assert not any("s3cret-key" in arg for arg in command)
    assert command[-1] == "--require-key" and command.count("--model") == 2
    assert "key required" in gateway.describe() and "port-9000" in gateway.describe()
    open_gateway = OpenAIGateway("127.0.0.1:8001", port=9000)
    assert "--require-key" not in open_gateway.command() and "open, no key" in open_gateway.describe()


def test_urls():
    assert OpenAIGateway("t:1", port=9000).base_url == "http://127.0.0.1:9000/v1"
    assert OpenAIGateway("t:1", host="0.0.0.0", port=9000).url == "http://127.0.0.1:9000"
    assert OpenAIGateway("t:1", host="::1", port=9000).url == "http://[::1]:9000"
    assert OpenAIGateway("t:1", port=0).port > 0  # a free port, chosen at construction


def test_serve_options():
    serve = typer.main.get_command(app).commands["serve"]
    options = {opt: param for param in serve.params for opt in param.opts}
    assert options["--openai-port"].default is None  # no gateway unless asked for
    assert options["--openai-model"].multiple
    assert options["--openai-require-key"].is_flag and options["--openai-require-key"].default is False
    assert "--no-openai-require-key" not in {opt for p in serve.params for opt in p.secondary_opts}


def test_serve_refuses_a_clashing_or_busy_openai_port_before_starting(tmp_path):
    runner = CliRunner()
    clash = runner.invoke(app, ["serve", "--repo", str(tmp_path), "--openai-port", "8001"])
    assert clash.exit_code == 1 and "--openai-port 8001 is also one of Triton's ports" in clash.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = runner.invoke(app, ["serve", "--repo", str(tmp_path), "--http-port", "0", "--grpc-port", "0",
                                    "--metrics-port", "0", "--openai-port", str(port)])
    assert taken.exit_code == 1 and f"port {port} on 127.0.0.1 is already in use" in taken.output
