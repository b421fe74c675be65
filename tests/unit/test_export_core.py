"""The export core without a server: the batching switch of ``model_config``, the option
checks every family shares, one ExportError, and ``save_graph`` (torch -> ONNX/TorchScript
with the int8 and low-memory variants, run against torch in-process)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tritonlens.export.clip import ClipExportOptions
from tritonlens.export.clip import ExportError as ClipExportError
from tritonlens.export.config import Tensor, model_config, parse_config, to_text
from tritonlens.export.core import ExportError, save_graph
from tritonlens.export.sam2 import ExportError as Sam2ExportError
from tritonlens.export.sam2 import Sam2ExportOptions
from tritonlens.export.sam2.tracker import sequence_batching

PIXELS = [Tensor("pixels", "uint8", (8, 8, 3))]
EMBEDDING = [Tensor("embedding", "fp32", (4,))]


def test_batching_switch(tmp_path):
    dynamic = model_config("a", "onnxruntime", PIXELS, EMBEDDING, max_batch_size=8,
                           max_queue_delay_us=100, preferred_batch_sizes=(4,))
    assert dynamic.HasField("dynamic_batching") and not dynamic.HasField("sequence_batching")
    assert dynamic.max_batch_size == 8
    assert list(dynamic.dynamic_batching.preferred_batch_size) == [4]
    none = model_config("b", "python", PIXELS, EMBEDDING, batching="none")
    assert none.max_batch_size == 0 and not none.HasField("dynamic_batching")
    sequence = model_config("c", "python", PIXELS, EMBEDDING,
                            batching=sequence_batching(1_000_000, 4))
    assert sequence.max_batch_size == 0 and not sequence.HasField("dynamic_batching")
    assert sequence.sequence_batching.max_sequence_idle_microseconds > 0
    for config in (dynamic, none, sequence):
        path = tmp_path / f"{config.name}.pbtxt"
        path.write_text(to_text(config))
        assert parse_config(path) == config


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(), "dynamic batching needs max_batch_size > 0"),
    (dict(batching="none", max_batch_size=4), "max_batch_size is for dynamic batching"),
    (dict(batching="sequence"), "batching must be"),
])
def test_batching_switch_refuses(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        model_config("m", "python", PIXELS, EMBEDDING, **kwargs)


@pytest.mark.parametrize("options, phrase", [
    (ClipExportOptions(labels=["a"], fmt="tflite"), "--format must be onnx or torchscript, not 'tflite'"),
    (ClipExportOptions(labels=["a"], precision="int4"), "--precision must be one of fp32, fp16, int8, not"),
    (ClipExportOptions(labels=["a"], profile="tiny"), "--profile must be one of default, low-memory"),
    (ClipExportOptions(labels=["a"], device="tpu"), "--device must be one of cpu, gpu"),
    (ClipExportOptions(labels=["a"], max_batch_size=0), "max batch size must be at least 1"),
    (Sam2ExportOptions(fmt="tensorrt"), "--format must be one of auto, onnx, torchscript"),
    (Sam2ExportOptions(precision="fp16"), "--precision must be one of fp32, int8 for SAM 2"),
    (Sam2ExportOptions(device="tpu"), "--device must be one of cpu, gpu"),
    (Sam2ExportOptions(max_batch_size=0), "max batch size must be at least 1"),
])
def test_shared_option_checks(options, phrase):
    with pytest.raises(ExportError, match=phrase):
        options.check()


def test_one_export_error_and_family_defaults():
    assert ClipExportError is ExportError and Sam2ExportError is ExportError
    assert (ClipExportOptions().fmt, ClipExportOptions().instance_count) == ("onnx", 0)
    assert (Sam2ExportOptions().fmt, Sam2ExportOptions().max_batch_size) == ("auto", 4)
    with pytest.raises(TypeError):
        ClipExportOptions("ViT-B-32")  # keyword-only: the base's fields come first


@pytest.mark.parametrize("fmt, precision, profile, files", [
    ("onnx", "fp32", "default", {"model.onnx"}),
    ("onnx", "int8", "low-memory", {"model.onnx", "model.onnx.data"}),
    ("torchscript", "fp32", "default", {"model.pt"}),
])
def test_save_graph(tmp_path, fmt, precision, profile, files):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    saved = save_graph(module, (torch.zeros(2, 64),), ("x",), ("y",),
                       {"x": {0: "batch"}, "y": {0: "batch"}}, fmt, 17, tmp_path,
                       precision=precision, profile=profile)
    assert set(saved) == files and all(path.parent == tmp_path for path in saved.values())
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    x = torch.randn(5, 64)
    with torch.no_grad():
        expected = module(x).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(saved["model.pt"]))(x).detach().numpy()
    else:
        session = ort.InferenceSession(str(saved["model.onnx"]), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"x": x.numpy()})
    assert got.shape == (5, 8)  # the batch axis is dynamic
    np.testing.assert_allclose(got, expected, atol=0.05 if precision == "int8" else 1e-5)


def test_automatic_instances_give_the_text_encoder_one_instance_with_every_core(monkeypatch):
    """Default CPU export: two image-tower instances of cores / 2 threads, one text encoder
    with all the cores (one copy of its weights less); explicit counts apply to both."""
    from tritonlens.export.clip.export import (AUTO_INSTANCES_REASON, TEXT_INSTANCES_REASON,
                                               engine_settings)

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    options = ClipExportOptions(labels=["a"])
    image, text = engine_settings(options, "image"), engine_settings(options, "text")
    assert image[:2] == (2, 2) and image[2]["intra_op_thread_count"] == "2"
    assert text[:2] == (1, 4) and text[2]["intra_op_thread_count"] == "4"
    assert image[2]["tritonlens.instances_reason"] == AUTO_INSTANCES_REASON
    assert text[2]["tritonlens.instances_reason"] == TEXT_INSTANCES_REASON
    explicit = ClipExportOptions(labels=["a"], instance_count=3, threads=1)
    assert engine_settings(explicit, "image")[:2] == engine_settings(explicit, "text")[:2] == (3, 1)
    low_memory = ClipExportOptions(labels=["a"], profile="low-memory")
    assert engine_settings(low_memory, "text")[:2] == (1, 4)
