"""The OpenAI-compatible gateway (:mod:`tritonlens.launcher.openai_gateway`) as a process
beside tritonserver: what ``tritonlens serve --openai-port P`` starts, tests and the
benchmark too.

A process of its own (not a thread of the launcher): uvicorn's event loop then has a core
and a GIL to itself, and its CPU time is measurable apart from the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tritonlens.launcher.errors import ServerStartError
from tritonlens.launcher.process import check_port_free, die_with_parent, free_port, write_private
from tritonlens.serve.headers import API_KEY_ENV, api_key_file


class OpenAIGateway:
    """``python -m tritonlens.launcher.openai_gateway`` in front of one Triton, as a context
    manager.

    Example::

        with OpenAIGateway(server.grpc_url, port=0) as gateway:
            openai.OpenAI(base_url=gateway.base_url, api_key="none").embeddings.create(
                model="clip", input=["a photo of a cat"])

    Args:
        triton_url: Triton's gRPC endpoint (``host:port``), or nginx's with ``--replicas N``.
        host: address the gateway binds to (127.0.0.1: this host only, as Triton's ports).
        port: its HTTP port (0: a free one, chosen at construction).
        models: the model names it serves: CLIP export prefixes (``clip``).
        api_key: None: open, like Triton's inference APIs; a key: every ``/v1`` request needs
            ``Authorization: Bearer <key>``; the key is written to :func:`api_key_file` of the
            port (mode 0600) while the gateway runs, and passed to it in the environment (not
            on its command line, which other users can read).
        max_body_bytes: the largest request body (None: the gateway's default, 64 MiB).
        log_file: where its output goes (None: this process's stderr).

    Raises (from ``start``):
        ServerStartError: the port is in use (named), or the gateway exited or did not answer
            ``GET /health`` within ``timeout`` seconds (with its exit code).
    """

    def __init__(self, triton_url: str, *, host: str = "127.0.0.1", port: int = 9000,
                 models: list[str] | tuple[str, ...] = ("clip",), api_key: str | None = None,
                 max_body_bytes: int | None = None, log_file: str | os.PathLike | None = None):
        self.triton_url, self.host = triton_url, host
        self.port = port or free_port(host)
        self.models, self.api_key = list(models), api_key
        self.max_body_bytes = max_body_bytes
        self.log_file = Path(log_file) if log_file else None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (loopback when bound to every address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What the ``openai`` package takes as ``base_url``: ``http://host:port/v1``."""
        return self.url + "/v1"

    def describe(self) -> str:
        """One line for the user: where the gateway answers, its models, whether it needs a key."""
        access = (f"key required (Authorization: Bearer, the API key; file {api_key_file(self.port)})"
                  if self.api_key else "open, no key")
        return f"OpenAI embeddings API: {self.base_url}   models: {', '.join(self.models)}   {access}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "tritonlens.launcher.openai_gateway", "--triton",
                   self.triton_url, "--host", self.host, "--port", str(self.port)]
        for model in self.models:
            command += ["--model", model]
        if self.max_body_bytes is not None:
            command += ["--max-body-bytes", str(self.max_body_bytes)]
        return command + (["--require-key"] if self.api_key else [])

    def start(self, timeout: float = 60.0) -> "OpenAIGateway":
        """Start the gateway and wait until ``GET /health`` answers 200 (see the class
        docstring for what is raised)."""
        check_port_free(self.host, self.port, "OpenAI gateway")
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        command = self.command()
        if threading.current_thread() is threading.main_thread():
            command = die_with_parent(command)
        sink = open(self.log_file, "ab") if self.log_file else None
        try:
            self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                            stdout=sink, stderr=subprocess.STDOUT if sink else None,
                                            start_new_session=True)
        finally:
            if sink:
                sink.close()
        try:
            if self.api_key:
                write_private(api_key_file(self.port), self.api_key)
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"the OpenAI gateway exited with code {self.process.returncode} "
                                       f"at start{f' (log {self.log_file})' if self.log_file else ''}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise ServerStartError(f"the OpenAI gateway on {self.url} did not answer /health within "
                               f"{timeout:.0f} s (Triton at {self.triton_url})")

    def poll(self) -> int | None:
        """None while the gateway runs, else its exit code."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> int | None:
        """SIGTERM (uvicorn finishes the requests in flight), killed after 10 s; remove the
        API-key file of the port. Returns the exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        path = api_key_file(self.port)
        if self.api_key and path.exists() and path.read_text() == self.api_key:
            path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> "OpenAIGateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
