"""`--format torchscript`: the same contracts through the Python-based pytorch backend."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import (CLIP_TEST_LABELS, CLIP_TEST_MODEL, CLIP_TEST_TEMPLATES, cosine,
                           reference_image_embeddings, reference_probabilities)
from tritonlens.client.clip import ClipClient
from tritonlens.export.clip import ClipExportOptions, export_clip
from tritonlens.export.config import parse_config
from tritonlens.launcher import TritonServer


@pytest.fixture(scope="module")
def torchscript_server(tmp_path_factory, clip_checkpoint):
    repo = tmp_path_factory.mktemp("torchscript_repository")
    export_clip(ClipExportOptions(model=CLIP_TEST_MODEL, pretrained=str(clip_checkpoint),
                                  labels=CLIP_TEST_LABELS, templates=CLIP_TEST_TEMPLATES,
                                  fmt="torchscript", max_batch_size=4), repo)
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=repo.parent / "server.log") as server:
        yield repo, server


def test_torchscript_export_matches_open_clip(torchscript_server, photos, clip_reference):
    repo, server = torchscript_server
    config = parse_config(repo / "clip_image_encoder" / "config.pbtxt")
    assert config.backend == "pytorch" and config.output[0].name == "embedding__0"
    assert (repo / "clip_image_encoder" / "1" / "model.pt").exists()
    client = ClipClient(server.grpc_url, "grpc")
    served = client.embed_images(photos[:4])
    assert cosine(served, reference_image_embeddings(clip_reference, photos[:4])).min() >= 0.9999
    probabilities = client.probabilities(photos[:4])
    assert np.abs(probabilities - reference_probabilities(clip_reference, photos[:4])).max() <= 1e-4
    assert client.classify(photos[0], top_k=2).labels[0].label in CLIP_TEST_LABELS
