"""``--device gpu`` at export: KIND_GPU instance groups for the models that run on a GPU,
KIND_CPU for the Python pre/post-processing models, and refusals for CPU-only variants.

No server: a repository with KIND_GPU groups cannot load on a host without a GPU (Triton
refuses the instance group), so these tests check the written configs through Triton's own
schema. Serving them needs a GPU host (`python -m tritonlens.bench.studies.gpu` there).
"""

from __future__ import annotations

import pytest

from tests.helpers import CLIP_TEST_MODEL, SAM2_TEST_CONFIG, SAM2_TEST_IMAGE_SIZE
from tritonlens.export.config import instance_kind, parse_config


def kinds(repo) -> dict[str, str]:
    """model name -> instance-group kind name ('ensemble' for ensembles)."""
    from tritonlens.export.config import mc

    out = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        config = parse_config(path)
        if config.platform == "ensemble":
            out[config.name] = "ensemble"
            continue
        (group,) = config.instance_group
        out[config.name] = mc.ModelInstanceGroup.Kind.Name(group.kind)
    return out


def test_instance_kind_names_the_device():
    assert instance_kind("cpu") == "KIND_CPU" and instance_kind("gpu") == "KIND_GPU"
    with pytest.raises(ValueError, match="--device must be one of cpu, gpu"):
        instance_kind("cuda")


def test_clip_gpu_export_puts_encoders_on_the_gpu(tmp_path):
    from tritonlens.export.clip import ClipExportOptions, export_clip

    summary = export_clip(ClipExportOptions(model=CLIP_TEST_MODEL, labels=["cat", "dog"],
                                            templates=["a photo of a {}."], fmt="torchscript",
                                            device="gpu", max_batch_size=4), tmp_path)
    assert summary["device"] == "gpu"
    assert kinds(tmp_path) == {
        "clip_image_encoder": "KIND_GPU", "clip_text_encoder": "KIND_GPU",
        "clip_zero_shot": "KIND_GPU", "clip_preprocess": "KIND_CPU", "clip_tokenize": "KIND_CPU",
        "clip_classify": "ensemble", "clip_embed_image": "ensemble", "clip_embed_text": "ensemble",
        "clip_rank": "KIND_CPU"}
    encoder = parse_config(tmp_path / "clip_image_encoder" / "config.pbtxt")
    assert encoder.backend == "pytorch"
    assert encoder.instance_group[0].count == 1  # automatic instances are a CPU-host rule
    assert encoder.parameters["tritonlens.device"].string_value == "gpu"


def test_sam2_gpu_export_puts_encoder_decoder_and_tracker_on_the_gpu(tmp_path):
    from tritonlens.export.sam2 import Sam2ExportOptions, export_sam2

    export_sam2(Sam2ExportOptions(config=SAM2_TEST_CONFIG, image_size=SAM2_TEST_IMAGE_SIZE,
                                  fmt="torchscript", device="gpu"), tmp_path)
    found = kinds(tmp_path)
    for model in ("sam2_image_encoder", "sam2_prompt_decoder", "sam2_tracker"):
        assert found[model] == "KIND_GPU", (model, found)
    for model in ("sam2_preprocess", "sam2_prompts", "sam2_frame_preprocess"):
        assert found[model] == "KIND_CPU", (model, found)


@pytest.mark.parametrize("changes, phrase", [
    (dict(device="gpu", precision="int8"), "CPU"),
    (dict(device="gpu", profile="low-memory"), "CPU"),
    (dict(device="tpu"), "--device must be"),
])
def test_sam2_cpu_only_variants_refused_on_gpu(tmp_path, changes, phrase):
    from tritonlens.export.sam2 import ExportError, Sam2ExportOptions, export_sam2

    with pytest.raises(ExportError, match=phrase):
        export_sam2(Sam2ExportOptions(config=SAM2_TEST_CONFIG, image_size=SAM2_TEST_IMAGE_SIZE,
                                      **changes), tmp_path)
    assert not any(tmp_path.iterdir())
