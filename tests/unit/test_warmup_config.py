"""export/config.add_warmup: Triton's ModelWarmup in a config, BYTES samples serialised as
Triton reads input_data_file (4-byte little-endian length, then the bytes)."""

from __future__ import annotations

import pytest

from tritonlens.export.config import (Tensor, add_warmup, model_config, parse_config, to_text,
                                      warmup_image, write_model)
from tritonlens.serve.images import decode


def tokenize_config():
    return model_config("clip_tokenize", "python", [Tensor("text", "bytes", (1,))],
                        [Tensor("token_ids", "int64", (77,))], max_batch_size=8)


def test_bytes_sample_is_a_length_prefixed_file_in_warmup(tmp_path):
    config = tokenize_config()
    files = add_warmup(config, {"text": b"a photo of a cat"})
    assert files == {"warmup/text": (16).to_bytes(4, "little") + b"a photo of a cat"}
    model_dir = write_model(tmp_path, config, {"model.py": "x"}, extra=files)
    (warm,) = parse_config(model_dir / "config.pbtxt").model_warmup
    assert warm.batch_size == 1 and warm.inputs["text"].input_data_file == "text"
    assert list(warm.inputs["text"].dims) == [1]
    assert (model_dir / "warmup" / "text").read_bytes() == files["warmup/text"]


def test_zero_and_random_data():
    config = model_config("enc", "onnxruntime", [Tensor("pixels", "uint8", (4, 4, 3))],
                          [Tensor("embedding", "fp32", (8,))], max_batch_size=2)
    assert add_warmup(config, {"pixels": "zero"}) == {}
    assert config.model_warmup[0].inputs["pixels"].zero_data
    assert "zero_data: true" in to_text(config)


@pytest.mark.parametrize("samples, message", [
    ({"txt": b"x"}, "inputs are"),
    ({}, "inputs are"),
    ({"text": "ones"}, "must be bytes, 'zero' or 'random'"),
])
def test_bad_samples_are_refused(samples, message):
    with pytest.raises(ValueError, match=message):
        add_warmup(tokenize_config(), samples)


def test_bytes_only_for_bytes_inputs():
    config = model_config("enc", "onnxruntime", [Tensor("pixels", "uint8", (4, 4, 3))],
                          [Tensor("embedding", "fp32", (8,))], max_batch_size=2)
    with pytest.raises(ValueError, match="non-BYTES"):
        add_warmup(config, {"pixels": b"\x00"})


def test_warmup_image_is_a_small_rgb_png_the_image_models_accept():
    image = decode(warmup_image())  # serve/images.decode: what clip/sam2 preprocessing runs
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (96, 64))
    assert warmup_image() == warmup_image()  # deterministic: re-exports are byte-identical
