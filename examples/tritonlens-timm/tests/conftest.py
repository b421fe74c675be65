"""Fixtures of the timm plugin's tests: real photos, seeded checkpoints of two tiny timm
architectures, one exported repository and one real tritonserver on it.

The models are timm's own test architectures (``test_vit``, ``test_efficientnet``: ~0.4 M
parameters, 160 px), so the whole file runs in about a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# prefix -> timm architecture; both exports share the repository and the server.
ARCHITECTURES = {"timm": "test_vit", "timm_eff": "test_efficientnet"}
INT8_PREFIX = "timm_int8"  # test_vit with the "timm" checkpoint, int8 weights, low-memory


@pytest.fixture(scope="session")
def timm_photos(tmp_path_factory) -> list[Path]:
    """scikit-image's sample photos as JPEG, PNG and WebP files (tritonlens' demo photos)."""
    from tritonlens.client.demo import write_sample_photos

    return write_sample_photos(tmp_path_factory.mktemp("timm_photos"))


@pytest.fixture(scope="session")
def timm_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """prefix -> a seeded random state dict of its architecture, saved like a checkpoint."""
    import timm

    folder = tmp_path_factory.mktemp("timm_weights")
    paths = {}
    for prefix, name in ARCHITECTURES.items():
        torch.manual_seed(1234)
        paths[prefix] = folder / f"{name}.pth"
        torch.save(timm.create_model(name).state_dict(), paths[prefix])
    return paths


@pytest.fixture(scope="session")
def timm_references(timm_checkpoints) -> dict[str, tuple]:
    """prefix -> (timm model with the checkpoint, timm's eval transform, its data config)."""
    import timm
    import timm.data

    references = {}
    for prefix, name in ARCHITECTURES.items():
        model = timm.create_model(name, checkpoint_path=str(timm_checkpoints[prefix])).eval()
        config = timm.data.resolve_data_config({}, model=model)
        references[prefix] = (model, timm.data.create_transform(**config), config)
    return references


@pytest.fixture(scope="session")
def timm_repo(tmp_path_factory, timm_checkpoints) -> Path:
    from tritonlens_timm.export import TimmExportOptions, export_timm

    repo = tmp_path_factory.mktemp("timm_repository")
    for prefix, name in ARCHITECTURES.items():
        export_timm(TimmExportOptions(model=name, checkpoint=str(timm_checkpoints[prefix]),
                                      prefix=prefix, max_batch_size=8), repo)
    # The core's variants come with its options base: test_vit again, int8 and low-memory.
    export_timm(TimmExportOptions(model=ARCHITECTURES["timm"], prefix=INT8_PREFIX, max_batch_size=8,
                                  checkpoint=str(timm_checkpoints["timm"]), precision="int8",
                                  profile="low-memory"), repo)
    return repo


@pytest.fixture(scope="session")
def timm_server(timm_repo, tmp_path_factory):
    """A real tritonserver on the timm repository (free ports), for the whole session."""
    from tritonlens.launcher import TritonServer

    log = tmp_path_factory.mktemp("timm_logs") / "tritonserver.log"
    with TritonServer(timm_repo, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as server:
        yield server
