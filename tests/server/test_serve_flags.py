"""``tritonlens serve`` on the real server: further tritonserver flags pass through after
``--``, and the start-up log of a host without a CUDA driver holds no CUDA-driver error
lines. (Flags tritonlens sets itself are refused: tests/unit/test_serve_passthrough.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tritonlens.launcher.process import NO_CUDA_DRIVER_NOTE, free_port

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")
CUDA_ERROR = re.compile(r"^E\d{4} .*(CUDA|Cuda|cuda)", re.MULTILINE)


def cuda_driver_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None


def test_start_up_log_has_no_cuda_driver_errors(server):
    if cuda_driver_present():
        pytest.skip("this host has a CUDA driver: the lines in question do not occur")
    log = server.log_file.read_text()
    assert "successfully loaded 'clip_classify'" in log  # the log is the real server's
    assert not CUDA_ERROR.search(log), CUDA_ERROR.findall(log)
    assert '"unable to create stream' not in log and '"CudaDriverHelper has not' not in log
    assert log.count(NO_CUDA_DRIVER_NOTE.decode().strip()) == 1


def test_further_tritonserver_flags_pass_through(repo, tmp_path):
    """summary_latencies=true (a --metrics-config) makes Triton export latency summaries;
    without the flag passed through there is no nv_inference_request_summary_us."""
    http, metrics = free_port(), free_port()
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [TRITONLENS, "serve", "--repo", str(repo), "--http-port", str(http), "--grpc-port", "0",
         "--metrics-port", str(metrics), "--model-control-mode", "explicit",
         "--load-model", "clip_tokenize", "--log-file", str(log),
         "--", "--metrics-config", "summary_latencies=true", "--cache-config", "local,size=1000000",
         "--exit-timeout-secs", "60"],
        stdout=(tmp_path / "serve.out").open("w"), stderr=subprocess.STDOUT, text=True)
    try:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        deadline = time.monotonic() + 300
        while not re.search(r"^ready\s", (tmp_path / "serve.out").read_text(), re.MULTILINE):
            assert process.poll() is None, (tmp_path / "serve.out").read_text()
            assert time.monotonic() < deadline, "serve did not become ready in 300 s"
            time.sleep(1)
        text = httpclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"a photo of a cat"]], dtype=object))
        tokens = client.infer("clip_tokenize", [text]).as_numpy("token_ids")
        assert tokens.shape == (1, 77)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
        client.close()  # an open keep-alive connection holds Triton's shutdown for the exit timeout
    finally:
        process.terminate()
        process.wait(timeout=120)
    out = (tmp_path / "serve.out").read_text()
    assert 'nv_inference_request_summary_us_count{model="clip_tokenize"' in scraped, scraped[:2000]
    server_log = log.read_text()
    assert '"Creating TritonCache with name: \'local\'' in server_log  # --cache-config reached it
    assert re.search(r"\| exit_timeout +\| 60 +\|", server_log)  # the later flag wins over the launcher's 15
    assert "tritonserver stopped (exit code 0)" in out, out + server_log[-3000:]
