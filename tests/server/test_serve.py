"""The launcher with a real server: load failures named, the other models served, the version read."""

from __future__ import annotations

import pytest

from tritonlens.export.config import Tensor, model_config, write_model
from tritonlens.launcher import ModelLoadError, TritonServer


def test_model_that_fails_to_load_is_reported_by_name(tmp_path):
    """A corrupt ONNX file: Triton's reason comes back, naming the model."""
    config = model_config("broken_encoder", "onnxruntime", [Tensor("x", "fp32", (4,))],
                          [Tensor("y", "fp32", (4,))], max_batch_size=4)
    write_model(tmp_path, config, {"model.onnx": b"this is not an onnx file"})
    server = TritonServer(tmp_path, http_port=0, grpc_port=0, metrics_port=0,
                          log_file=tmp_path / "server.log")
    with pytest.raises(ModelLoadError) as info:
        server.start()
    assert "broken_encoder" in info.value.failures
    assert "broken_encoder" in str(info.value)
    assert server.process.poll() is not None  # stopped, nothing left running


def test_server_serves_other_models_when_one_fails(tmp_path):
    good = model_config("identity_like", "python", [Tensor("x", "fp32", (2,))],
                        [Tensor("y", "fp32", (2,))], max_batch_size=2)
    write_model(tmp_path, good, {"model.py": "raise ImportError('deliberately broken')\n"})
    with TritonServer(tmp_path, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=tmp_path / "server.log", require_all_models=False) as server:
        failures = server.model_failures()
        assert "deliberately broken" in failures["identity_like"]
        assert not server.is_ready()  # strict readiness: a failed model means not ready


def test_server_version_is_read_from_the_server(server):
    """The version the launcher reports is the running server's own (Triton's server
    metadata), the one any stock client reads."""
    import re

    import tritonclient.http as httpclient

    metadata = server.metadata()
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stock = client.get_server_metadata()
    finally:
        client.close()
    assert metadata["name"] == stock["name"] == "triton"
    assert metadata["version"] == stock["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"])
