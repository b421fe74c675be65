"""Config reading in the Python-backend models (serve/model_config.py), without a server:
the JSON a model reads is the one Triton derives from the config.pbtxt the export writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonlens.export.config import Tensor, model_config
from tritonlens.serve.model_config import ConfigError, read_model_config

PIXELS = [Tensor("pixels", "uint8", (8, 8, 3))]
EMBEDDING = [Tensor("embedding", "fp32", (4,))]


def as_triton_json(config: mc.ModelConfig) -> str:
    """The config as a Python model's ``args["model_config"]`` carries it (proto field names)."""
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def test_model_reads_the_config_the_export_writes():
    config = model_config("clip_preprocess", "python", [Tensor("image", "bytes", (1,))], PIXELS,
                          max_batch_size=4, parameters={
                              "image_size": "224", "max_image_aspect_ratio": "12.5",
                              "apply_exif_orientation": "TRUE", "pixel_mean": "0.5,0.25,1",
                              "bad_int": "many"})
    spec = read_model_config(as_triton_json(config))
    assert (spec.name, spec.max_batch_size) == ("clip_preprocess", 4)
    assert spec.inputs[0].name == "image" and spec.inputs[0].dtype is np.object_
    assert spec.outputs[0].dims == (8, 8, 3) and spec.outputs[0].dtype is np.uint8
    assert spec.integer("image_size") == 224
    assert spec.number("max_image_aspect_ratio") == 12.5
    assert spec.flag("apply_exif_orientation", False) is True
    assert spec.flag("absent", True) is True
    assert spec.numbers("pixel_mean") == (0.5, 0.25, 1.0)
    assert spec.text("resize_mode", "shortest") == "shortest"
    assert spec.integer("max_image_bytes", 7) == 7
    with pytest.raises(ConfigError, match="clip_preprocess: config parameter 'context_length' is missing"):
        spec.integer("context_length")
    with pytest.raises(ConfigError, match="'bad_int' must be an integer, not 'many'"):
        spec.integer("bad_int")
    with pytest.raises(ConfigError, match="'bad_int' must be true or false"):
        spec.flag("bad_int", False)
