"""launcher/health.py without a server: reading a Python-backend stub's command line."""

from pathlib import Path

from tritonlens.launcher.health import stub_of


def stub_cmdline(repo: Path, model_file: str, instance: str) -> list[str]:
    """A stub's argv as Triton 2.51 starts it (read from ps on a running server)."""
    return ["/cache/backends/x/python/triton_python_backend_stub", str(repo / model_file),
            "triton_python_backend_shm_region_1", "1048576", "1048576", "9407",
            "/cache/backends/x/python", "336", instance, "DEFAULT"]


def test_stub_names_its_model_and_instance(tmp_path):
    stub = stub_of(stub_cmdline(tmp_path, "clip_image_encoder/1/model.onnx",
                                "clip_image_encoder_0_1"), tmp_path)
    assert (stub.model, stub.instance) == ("clip_image_encoder", "clip_image_encoder_0_1")


def test_other_processes_and_other_repositories_are_not_stubs(tmp_path):
    assert stub_of(["/usr/bin/python3", "-c", "pass"], tmp_path) is None
    other = stub_cmdline(tmp_path / "elsewhere", "m/1/model.py", "m_0_0")
    assert stub_of(other, tmp_path / "repo") is None
    assert stub_of(stub_cmdline(tmp_path, "m/1/model.py", "m_0_0")[:5], tmp_path) is None
