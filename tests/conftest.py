"""Fixtures shared by both kinds of test: real photos, seeded checkpoints and the in-process
reference models. tests/server/conftest.py adds the exported repository and the server.
Small architectures keep the default run fast: CLIP ViT-S-32 (the README's main job uses
ViT-B-32).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import CLIP_TEST_MODEL, SAM2_TEST_CONFIG, SAM2_TEST_IMAGE_SIZE
from tritonlens.client.demo import write_sample_photos


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    """scikit-image's sample photos as JPEG, PNG and WebP files of different sizes/modes."""
    return write_sample_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory) -> Path:
    """A ViT-S-32 state dict with seeded random weights, saved like a real checkpoint, so
    export (through open_clip's own loader) and the in-process reference use the same
    weights."""
    import open_clip

    torch.manual_seed(1234)
    model = open_clip.create_model(CLIP_TEST_MODEL, pretrained=None)
    path = tmp_path_factory.mktemp("weights") / f"{CLIP_TEST_MODEL}.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def clip_reference(clip_checkpoint):
    """The in-process reference: (model, preprocess transform, tokenizer) from open_clip."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        CLIP_TEST_MODEL, pretrained=str(clip_checkpoint))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(CLIP_TEST_MODEL)


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory) -> Path:
    """A SAM 2 checkpoint (``{"model": state_dict}``, Meta's layout) with seeded random
    weights, so export and the in-process reference both load it through ``build_sam2``."""
    from tritonlens.export.sam2.export import load_sam2

    model, _ = load_sam2(SAM2_TEST_CONFIG, None, SAM2_TEST_IMAGE_SIZE, seed=1234)
    path = tmp_path_factory.mktemp("weights") / "sam2_test.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def sam2_reference(sam2_checkpoint):
    """The in-process reference: sam2's ``SAM2ImagePredictor`` on the same weights."""
    from tritonlens.export.sam2.export import load_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model, _ = load_sam2(SAM2_TEST_CONFIG, str(sam2_checkpoint), SAM2_TEST_IMAGE_SIZE)
    predictor = SAM2ImagePredictor(model)
    s = SAM2_TEST_IMAGE_SIZE  # the predictor hard-codes the 1024-px feature sizes
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return predictor


@pytest.fixture(params=["grpc", "http"])
def protocol(request) -> str:
    """Run a test over both protocols."""
    return request.param
