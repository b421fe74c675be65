"""bench/tuning's Model Analyzer config: local launch of the pip wheel's tritonserver with
tritonlens' backend directory and environment, on ports of its own, CPU-only models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tritonlens.bench.tuning import model_analyzer_config
from tritonlens.launcher.install import find_triton


@pytest.mark.tools("tritonserver")
def test_config_launches_the_wheel_server_locally(tmp_path):
    config = model_analyzer_config(tmp_path / "repo", ["clip_image_encoder"], tmp_path / "out",
                                   Path("/x/perf_analyzer"), max_concurrency=4)
    assert config["triton_launch_mode"] == "local"
    assert config["triton_server_path"] == str(find_triton().binary)
    flags = config["triton_server_flags"]
    assert (Path(flags["backend_directory"]) / "python" / "libtriton_python.so").exists()
    assert (Path(flags["backend_directory"]) / "onnxruntime" / "model.py").exists()
    env = config["triton_server_environment"]
    assert env["PATH"].split(":")[0].endswith("/bin") and "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    ports = [config["triton_http_endpoint"], config["triton_grpc_endpoint"], config["triton_metrics_url"]]
    assert not any(p.endswith((":8000", ":8001")) or ":8002/" in p for p in ports)
    assert config["profile_models"] == {"clip_image_encoder": {"cpu_only": True}}
    assert config["run_config_search_max_concurrency"] == 4
    assert yaml.safe_load(yaml.safe_dump(config)) == config
