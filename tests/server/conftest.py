"""Server fixtures: one exported model repository and one real tritonserver.

Every family's test export goes into the one session repository (``repo``), so the suite
starts tritonserver once; tests/unit/ never requests these fixtures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (CLIP_TEST_LABELS, CLIP_TEST_MODEL, CLIP_TEST_TEMPLATES, SAM2_TEST_CONFIG,
                           SAM2_TEST_IMAGE_SIZE, export_short_idle_tracker)
from tritonlens.launcher import TritonServer


@pytest.fixture(scope="session")
def repo(tmp_path_factory, clip_checkpoint, sam2_checkpoint) -> Path:
    """One model repository holding every family's test export."""
    from tritonlens.export.clip import ClipExportOptions, export_clip

    path = tmp_path_factory.mktemp("model_repository")
    export_clip(ClipExportOptions(model=CLIP_TEST_MODEL, pretrained=str(clip_checkpoint),
                                  labels=CLIP_TEST_LABELS, templates=CLIP_TEST_TEMPLATES,
                                  max_batch_size=8), path)
    from tritonlens.export.sam2 import Sam2ExportOptions, export_sam2

    export_sam2(Sam2ExportOptions(config=SAM2_TEST_CONFIG, checkpoint=str(sam2_checkpoint),
                                  image_size=SAM2_TEST_IMAGE_SIZE), path)
    export_short_idle_tracker(path, sam2_checkpoint, SAM2_TEST_CONFIG, SAM2_TEST_IMAGE_SIZE)
    return path


@pytest.fixture(scope="session")
def server(repo, tmp_path_factory):
    """A real tritonserver on ``repo`` (free ports), for the whole session."""
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as srv:
        yield srv
