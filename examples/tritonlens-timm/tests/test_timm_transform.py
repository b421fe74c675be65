"""timm_preprocess's transform is timm's eval transform, pixel for pixel (no server)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tritonlens_timm.transform import EvalTransform

# Data configs as timm resolves them: the test architectures' (160 px, crop_pct 0.95), a
# ResNet's (176 px, 0.875), squash, a non-square input, bilinear, and crop_pct > 1 (padding).
CONFIGS = [
    {"input_size": (3, 160, 160), "crop_pct": 0.95, "crop_mode": "center", "interpolation": "bicubic"},
    {"input_size": (3, 176, 176), "crop_pct": 0.875, "crop_mode": "center", "interpolation": "bicubic"},
    {"input_size": (3, 96, 128), "crop_pct": 0.9, "crop_mode": "center", "interpolation": "bilinear"},
    {"input_size": (3, 112, 112), "crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bicubic"},
    {"input_size": (3, 64, 80), "crop_pct": 0.8, "crop_mode": "squash", "interpolation": "lanczos"},
    {"input_size": (3, 120, 120), "crop_pct": 1.2, "crop_mode": "center", "interpolation": "nearest"},
]


def timm_transform(config: dict):
    import timm.data

    return timm.data.create_transform(**config, mean=(0.485, 0.456, 0.406),
                                      std=(0.229, 0.224, 0.225), is_training=False)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_pixels_are_timms(config, timm_photos):
    reference = timm_transform(config)
    ours = EvalTransform.from_data_config(config)
    assert EvalTransform.from_parameters(ours.parameters()) == ours
    for photo in timm_photos:
        image = Image.open(photo).convert("RGB")
        expected = image
        for step in reference.transforms[:-2]:  # up to MaybeToTensor and Normalize
            expected = step(expected)
        pixels = ours(Image.open(photo))
        assert pixels.dtype == np.uint8 and pixels.shape == (*config["input_size"][1:], 3)
        np.testing.assert_array_equal(pixels, np.asarray(expected), err_msg=photo.name)
        # ... and the graph's ToTensor + Normalize give timm's tensor
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255)
        mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
        torch.testing.assert_close((tensor - mean) / std, reference(image), rtol=0, atol=1e-6)


def test_unsupported_configs_are_refused():
    with pytest.raises(ValueError, match="crop_mode 'border'"):
        EvalTransform.from_data_config({"input_size": (3, 32, 32), "crop_mode": "border"})
    with pytest.raises(ValueError, match="interpolation 'random'"):
        EvalTransform.from_data_config({"input_size": (3, 32, 32), "interpolation": "random"})


def test_export_refuses_bad_options(tmp_path):
    from tritonlens_timm.export import ExportError, TimmExportOptions, export_timm

    for options, message in ((TimmExportOptions(model="no_such_net"), "unknown timm model"),
                             (TimmExportOptions(model="test_vit", checkpoint=str(tmp_path / "x.pth")),
                              "no such file"),
                             (TimmExportOptions(model="test_vit", prefix="a-b"), "--prefix"),
                             (TimmExportOptions(model="test_vit", labels=["a", "a"]), "more than once")):
        with pytest.raises(ExportError, match=message):
            export_timm(options, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
