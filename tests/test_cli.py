"""The `tritonlens` command line, run as a user runs it (a subprocess), on the real server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import CLIP_TEST_LABELS
from tritonlens.serve.launcher import free_port

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([TRITONLENS, *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_plugin_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "status", "export", "classify", "embed", "demo"):
        assert command in result.stdout
    assert "clip" in run("export", "--help").stdout


def test_classify_json(server, photos, protocol):
    result = run("classify", *map(str, photos[:3]), "--top-k", "3", "--json",
                 "--url", server.url(protocol), "--protocol", protocol)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in photos[:3]]
    for line in lines:
        assert len(line["labels"]) == 3
        assert all(label["label"] in CLIP_TEST_LABELS for label in line["labels"])


def test_classify_reports_bad_files_and_goes_on(server, photos, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    result = run("classify", str(photos[0]), str(bad), str(tmp_path / "missing.png"),
                 "--url", server.grpc_url)
    assert result.returncode == 1
    assert "chelsea_cat.jpg" in result.stdout  # the good photo was classified
    assert "not a JPEG, PNG or WebP" in result.stderr
    assert "cannot read image file" in result.stderr


def test_unreachable_server_is_one_clear_line(photos):
    result = run("classify", str(photos[0]), "--url", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no Triton server" in result.stderr
    assert "Traceback" not in result.stderr


def test_embed_and_status(server):
    result = run("embed", "--text", "a cat", "--text", "a dog", "--url", server.http_url,
                 "--protocol", "http")
    assert result.returncode == 0, result.stderr
    assert "norm 1.0000" in result.stdout
    status = run("status", "--url", server.http_url)
    assert status.returncode == 0 and "clip_classify" in status.stdout and "READY" in status.stdout


def test_serve_starts_and_stops_cleanly_on_sigterm(repo, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [TRITONLENS, "serve", "--repo", str(repo), "--http-port", str(port), "--grpc-port", "0",
         "--metrics-port", "0", "--log-file", str(tmp_path / "server.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # every test model loads; slow on a busy 2-core host
        while run("status", "--url", f"127.0.0.1:{port}", timeout=30).returncode != 0:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "serve did not become ready in 600 s"
            time.sleep(1)
        time.sleep(2)  # let serve print its report before it is stopped
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "ready" in out and f"127.0.0.1:{port}" in out
    assert "tritonserver stopped (exit code 0)" in out, err


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit 1, no traceback, and one 'error:' line naming the problem and the fix."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in " ".join(result.stderr.split()), result.stderr


def test_top_k_zero_is_one_line(server, photos):
    assert_one_line_error(run("classify", str(photos[0]), "--top-k", "0", "--url", server.grpc_url),
                          "--top-k must be at least 1")


def test_missing_output_folder_fails_before_any_work(server, photos, tmp_path):
    missing = tmp_path / "nonexistent" / "m.png"
    assert_one_line_error(run("segment", str(photos[0]), "--point", "10,10", "--out", str(missing),
                              "--url", server.grpc_url), "does not exist", "--out")
    assert_one_line_error(run("embed", "--text", "a cat", "--out", str(missing),
                              "--url", server.grpc_url), "does not exist", "--out")


def test_embed_out_writes_the_named_file(server, tmp_path):
    """`--out emb` wrote emb.npy while saying it wrote emb; now it writes what it names."""
    import numpy as np

    out = tmp_path / "emb"
    result = run("embed", "--text", "a cat", "--text", "a dog", "--out", str(out),
                 "--url", server.grpc_url)
    assert result.returncode == 0, result.stderr
    assert f"to {out}" in " ".join(result.stdout.split())
    assert not (tmp_path / "emb.npy").exists()
    assert np.load(out).shape[0] == 2


def test_wrong_port_or_url_form_names_the_fix(server, photos):
    image = str(photos[0])
    # the metrics port over HTTP: was rapidjson.JSONDecodeError
    metrics = f"{server.host}:{server.metrics_port}"
    assert_one_line_error(run("classify", image, "--url", metrics, "-p", "http"),
                          "not as Triton's http endpoint", "metrics port")
    # gRPC to the HTTP port: was "no Triton server"
    assert_one_line_error(run("classify", image, "--url", server.http_url),
                          "speaks HTTP/1.x, not gRPC", "--protocol http")
    # HTTP to the gRPC port
    assert_one_line_error(run("classify", image, "--url", server.grpc_url, "-p", "http"),
                          "is it the gRPC port?", "--protocol grpc")
    assert_one_line_error(run("status", "--url", f"https://{server.http_url}"), "TLS")
    # a scheme is accepted (was a tritonclient traceback plus an AttributeError in __del__)
    result = run("classify", image, "-k", "1", "--json", "--url", f"http://{server.http_url}",
                 "-p", "http")
    assert result.returncode == 0 and "Exception ignored" not in result.stderr, result.stderr


def test_exported_but_not_loaded_says_load_it(repo, photos, tmp_path):
    """A model in the repository but not loaded (explicit model control) was told 'export it'."""
    from tritonlens.serve import TritonServer

    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      model_control_mode="explicit", load_models=["clip_tokenize"],
                      log_file=tmp_path / "server.log") as server:
        result = run("classify", str(photos[0]), "--url", server.grpc_url)
        assert_one_line_error(result, "'clip_classify' is in the repository", "not loaded",
                              "--load-model clip_classify")
        assert "export it" not in result.stderr
        assert_one_line_error(run("classify", str(photos[0]), "--prefix", "nope",
                                  "--url", server.grpc_url), "not in the repository", "export it")
