"""The CLIP export: configs through Triton's schema, flags, and clear option errors."""

from __future__ import annotations

import pytest

from tritonlens.core.plugins import load_plugins
from tritonlens.export.clip import ClipExportOptions, ExportError, export_clip
from tritonlens.export.clip.export import load_open_clip, read_lines
from tritonlens.export.config import parse_config

MODELS = ["clip_preprocess", "clip_image_encoder", "clip_tokenize", "clip_text_encoder",
          "clip_zero_shot", "clip_classify", "clip_embed_image", "clip_embed_text", "clip_rank"]


def test_every_config_parses_with_tritons_schema(repo, clip_checkpoint):
    for name in MODELS:
        config = parse_config(repo / name / "config.pbtxt")
        assert config.name == name
        if config.platform == "ensemble":
            assert config.max_batch_size > 0 and config.ensemble_scheduling.step
        else:
            assert config.HasField("dynamic_batching") and config.max_batch_size > 0
    encoder = parse_config(repo / "clip_image_encoder" / "config.pbtxt")
    assert encoder.backend == "onnxruntime"
    assert encoder.parameters["tritonlens.weights"].string_value == str(clip_checkpoint)
    zero_shot = parse_config(repo / "clip_zero_shot" / "config.pbtxt")
    assert zero_shot.output[0].label_filename == "labels.txt"
    assert (repo / "clip_zero_shot" / "labels.txt").read_text().splitlines()[0] == "cat"


def test_served_models_say_where_weights_came_from(server, clip_checkpoint):
    from tritonlens.client.clip import ClipClient

    assert ClipClient(server.grpc_url, "grpc").weights() == str(clip_checkpoint)


def test_random_weights_are_flagged():
    _, _, weights = load_open_clip("ViT-S-32", "none")
    assert weights == "random"


@pytest.mark.parametrize("options, phrase", [
    (ClipExportOptions(model="ViT-S-32", labels=[]), "no labels"),
    (ClipExportOptions(model="ViT-S-32", labels=["a", "a"]), "more than once"),
    (ClipExportOptions(model="NoSuchNet", labels=["a"]), "unknown open_clip model"),
    (ClipExportOptions(model="ViT-S-32", labels=["a"], fmt="tflite"), "--format"),
    (ClipExportOptions(model="ViT-S-32", labels=["a"], templates=["no placeholder"]), "without '{}'"),
    (ClipExportOptions(model="ViT-S-32", labels=["a"], pretrained="/no/such.pt"), "neither a local"),
])
def test_bad_options_fail_before_writing(tmp_path, options, phrase):
    with pytest.raises(ExportError, match=phrase):
        export_clip(options, tmp_path / "repo")
    assert not (tmp_path / "repo" / "clip_image_encoder" / "config.pbtxt").exists()


def test_label_file_errors(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        read_lines(tmp_path / "nope.txt", "labels")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ExportError, match="empty"):
        read_lines(tmp_path / "empty.txt", "labels")


def test_clip_is_a_plugin_found_through_entry_points():
    plugins = load_plugins()
    assert "clip" in plugins
    assert {"classify", "embed"} <= set(plugins["clip"].commands)
