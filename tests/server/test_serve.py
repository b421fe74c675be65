"""The launcher and the Python-based backends' request handling."""

from __future__ import annotations

import numpy as np
import pytest

from tritonlens.export.config import Tensor, model_config, write_model
from tritonlens.launcher import ModelLoadError, TritonServer
from tritonlens.serve.batching import TensorSpec, check_input, run_batched


def test_run_batched_groups_by_shape_and_splits_back():
    calls = []

    def run(inputs):
        calls.append(inputs["x"].shape)
        return {"y": inputs["x"].sum(axis=-1, keepdims=True)}

    requests = [{"x": np.ones((2, 3))}, {"x": np.ones((1, 5))}, {"x": 2 * np.ones((3, 3))}]
    results = run_batched(requests, run)
    assert sorted(calls) == [(1, 5), (5, 3)]  # the two [*, 3] requests ran as one batch
    assert [r["y"].shape for r in results] == [(2, 1), (1, 1), (3, 1)]
    assert results[2]["y"][0, 0] == 6 and results[1]["y"][0, 0] == 5


def test_run_batched_reports_errors_per_group():
    def run(inputs):
        if inputs["x"].shape[1] == 4:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    results = run_batched([{"x": np.ones((1, 4))}, {"x": np.ones((1, 2))}], run)
    assert isinstance(results[0], RuntimeError) and results[1]["y"].shape == (1, 2)


def test_check_input_names_the_problem():
    spec = TensorSpec("pixels", np.uint8, (224, 224, 3))
    assert check_input(spec, np.zeros((1, 224, 224, 3), np.uint8), True) is None
    assert "dtype float32" in check_input(spec, np.zeros((1, 224, 224, 3), np.float32), True)
    assert "expected [batch, 224, 224, 3]" in check_input(spec, np.zeros((1, 2, 2, 3), np.uint8), True)


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
