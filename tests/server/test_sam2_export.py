"""`tritonlens export sam2` and `tritonlens segment`: configs, options, errors, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import SAM2_TEST_IMAGE_SIZE
from tritonlens.export.config import parse_config
from tritonlens.export.sam2 import ExportError, Sam2ExportOptions, export_sam2

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")
SAM2_MODELS = ("sam2_preprocess", "sam2_image_encoder", "sam2_prompts", "sam2_prompt_decoder",
               "sam2_segment", "sam2_embed_image", "sam2_decode")


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([TRITONLENS, *args], capture_output=True, text=True, timeout=timeout)


def test_repository_configs(repo, sam2_checkpoint):
    configs = {name: parse_config(repo / name / "config.pbtxt") for name in SAM2_MODELS}
    encoder, decoder = configs["sam2_image_encoder"], configs["sam2_prompt_decoder"]
    assert encoder.backend == "pytorch" and (repo / "sam2_image_encoder/1/model.pt").is_file()
    assert decoder.backend == "onnxruntime" and (repo / "sam2_prompt_decoder/1/model.onnx").is_file()
    assert encoder.max_batch_size > 0 and encoder.HasField("dynamic_batching")
    for config in (encoder, decoder):
        params = config.parameters
        assert params["tritonlens.weights"].string_value == str(sam2_checkpoint)
        assert "measured" in params["tritonlens.format_reason"].string_value
    segment = configs["sam2_segment"]
    assert [i.name for i in segment.input] == ["image", "point_coords", "point_labels",
                                               "multimask_output"]
    assert [i.optional for i in segment.input] == [False, False, False, True]
    assert [o.name for o in segment.output] == ["masks", "iou_scores", "low_res_masks"]
    assert list(segment.output[2].dims) == [-1, SAM2_TEST_IMAGE_SIZE // 4, SAM2_TEST_IMAGE_SIZE // 4]


def test_model_warmup(repo):
    """Triton runs one sample through the image decoders (a real PNG) and the image encoder
    (zero pixels) at load; the prompt decoder (variable point count), the sequence-batched
    tracker (warms itself) and the ensembles carry none. Served requests after such a load
    are what the other tests of this session check."""
    from tritonlens.serve.images import decode

    s = SAM2_TEST_IMAGE_SIZE
    for name in ("sam2_preprocess", "sam2_frame_preprocess"):
        (warm,) = parse_config(repo / name / "config.pbtxt").model_warmup
        assert warm.batch_size == 1 and warm.inputs["image"].input_data_file == "image"
        data = (repo / name / "warmup" / "image").read_bytes()
        assert int.from_bytes(data[:4], "little") == len(data) - 4  # Triton's BYTES layout
        assert decode(data[4:]).format == "PNG"
    (warm,) = parse_config(repo / "sam2_image_encoder" / "config.pbtxt").model_warmup
    assert warm.inputs["pixels"].zero_data and list(warm.inputs["pixels"].dims) == [3, s, s]
    for name in ("sam2_prompt_decoder", "sam2_prompts", "sam2_tracker", "sam2_segment",
                 "sam2_embed_image", "sam2_decode", "sam2_track"):
        assert not parse_config(repo / name / "config.pbtxt").model_warmup, name


@pytest.mark.parametrize("options, phrase", [
    (dict(config="sam2.1_hiera_xl"), "unknown SAM 2 config"),
    (dict(checkpoint="/nonexistent/sam2.pt"), "checkpoint file not found"),
    (dict(image_size=500), "multiple of 32"),
    (dict(fmt="tensorrt"), "--format must be one of"),
    (dict(precision="fp16"), "--precision must be one of fp32, int8"),
    (dict(profile="tiny"), "--profile must be one of"),
    (dict(fmt="torchscript", precision="int8"), "use --format onnx or auto"),
    (dict(fmt="torchscript", profile="low-memory"), "use --format onnx or auto"),
    (dict(instance_count=0), "instance count"),
])
def test_export_refuses_bad_options(tmp_path, options, phrase):
    with pytest.raises(ExportError, match=phrase):
        export_sam2(Sam2ExportOptions(**options), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_export_refuses_a_checkpoint_of_another_model(tmp_path):
    bad = tmp_path / "other.pt"
    import torch

    torch.save({"model": {"not_sam2.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ExportError, match="could not build SAM 2 from checkpoint"):
        export_sam2(Sam2ExportOptions(checkpoint=str(bad), image_size=256), tmp_path / "repo")


def test_cli_export_progress_and_random_weights_warning(tmp_path):
    result = run("export", "sam2", "--config", "sam2.1_hiera_t", "--checkpoint", "none",
                 "--image-size", "128", "--format", "torchscript", "--repo", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    assert "exporting sam2_image_encoder" in result.stderr  # the progress display
    assert "RANDOM-INITIALISED" in result.stderr
    encoder = parse_config(tmp_path / "repo/sam2_image_encoder/config.pbtxt")
    assert encoder.backend == "pytorch"
    assert encoder.parameters["tritonlens.weights"].string_value == "random"
    assert "--format torchscript" in encoder.parameters["tritonlens.format_reason"].string_value


def test_cli_segment_writes_mask_and_overlay(server, photos, tmp_path, protocol):
    cat = next(p for p in photos if p.name == "chelsea_cat.jpg")
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    result = run("segment", str(cat), "--point", "200,150", "--point", "60,250,0",
                 "--box", "100,50,350,280", "--out", str(out), "--overlay", str(overlay),
                 "--json", "--url", server.url(protocol), "--protocol", protocol)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["size"] == [300, 451] and len(answer["masks"]) == 3
    mask = np.asarray(Image.open(out))
    assert mask.shape == (300, 451) and set(np.unique(mask)) <= {0, 255}
    assert (mask == 255).sum() == answer["masks"][0]["area"]
    assert Image.open(overlay).size == (451, 300)


def test_cli_segment_errors_are_one_line(server, photos):
    cat = next(p for p in photos if p.name == "chelsea_cat.jpg")
    for args, phrase in ((["--point", "9000,10"], "outside the 451x300 image"),
                         ([], "give at least one --point"),
                         (["--point", "10"], "a point is x,y"),
                         (["--box", "1,2,3"], "a box is x0,y0,x1,y1")):
        result = run("segment", str(cat), *args, "--url", server.grpc_url)
        assert result.returncode != 0
        assert phrase in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
