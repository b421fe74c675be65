"""The timm plugin against a real tritonserver: served pixels, embeddings and top-k equal
timm's own in-process results; bad images fail alone; the CLI commands and the bench
scenarios work through the installed plugin (tritonlens names it nowhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ARCHITECTURES, INT8_PREFIX
from tritonlens.client.base import InferenceError, TritonClient
from tritonlens.client.common import bytes_tensor
from tritonlens_timm.client import TimmClient

TRITONLENS = str(Path(sys.executable).parent / "tritonlens")


def reference(references, prefix, photo):
    """timm in-process: (pixels UINT8 [H, W, 3], embedding [F], probabilities [C])."""
    model, transform, _ = references[prefix]
    image = Image.open(photo).convert("RGB")
    pixels = image
    for step in transform.transforms[:-2]:
        pixels = step(pixels)
    with torch.no_grad():
        features = model.forward_features(transform(image)[None])
        embedding = model.forward_head(features, pre_logits=True)[0].numpy()
        probabilities = model.forward_head(features).softmax(-1)[0].numpy()
    return np.asarray(pixels), embedding, probabilities


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("prefix", sorted(ARCHITECTURES))
def test_served_pixels_embeddings_and_top_k_are_timms(timm_server, timm_references, timm_photos,
                                                      prefix, protocol):
    from timm.data import ImageNetInfo

    client = TimmClient(timm_server.url(protocol), protocol, prefix=prefix)
    assert client.weights().endswith(".pth")
    embeddings = client.embed(timm_photos, batch_size=4)  # two requests, batched
    names = ImageNetInfo()
    for photo, embedding in zip(timm_photos, embeddings):
        pixels, expected_embedding, expected = reference(timm_references, prefix, photo)
        served = client.infer(f"{prefix}_preprocess", {"image": bytes_tensor([photo.read_bytes()])})
        np.testing.assert_array_equal(served.as_numpy("pixels")[0], pixels, err_msg=photo.name)
        np.testing.assert_allclose(embedding, expected_embedding, rtol=1e-4, atol=1e-4)
        result = client.classify(photo, top_k=5)
        assert [label.index for label in result.labels] == list(np.argsort(-expected, kind="stable")[:5])
        for label in result.labels:
            assert label.score == pytest.approx(float(expected[label.index]), rel=1e-3, abs=1e-6)
            assert label.label == names.index_to_description(label.index)


def test_int8_low_memory_export_agrees_with_fp32(timm_server, timm_repo, timm_references,
                                                timm_photos):
    """The export core's int8 weights (u8 per channel, exact on every CPU's kernels) and
    low-memory profile reach a plugin through its options: memory-mapped external data,
    the int8 format in the config, embeddings close to timm's fp32 ones."""
    from tritonlens.export.onnx_variants import host_isa

    model_dir = timm_repo / f"{INT8_PREFIX}_model" / "1"
    assert (model_dir / "model.onnx.data").is_file()
    config = (timm_repo / f"{INT8_PREFIX}_model" / "config.pbtxt").read_text()
    assert "tritonlens.int8_format" in config and "enable_mem_arena" in config
    client = TimmClient(timm_server.grpc_url, prefix=INT8_PREFIX)
    cosines = []
    for photo, embedding in zip(timm_photos, client.embed(timm_photos)):
        expected = reference(timm_references, "timm", photo)[1]
        cosines.append(float(np.dot(embedding, expected)
                             / (np.linalg.norm(embedding) * np.linalg.norm(expected))))
    print(f"timm test_vit int8 vs fp32 cosine min {min(cosines):.5f} ({host_isa()})")
    assert min(cosines) > 0.99, (cosines, host_isa())


def test_bad_image_fails_alone(timm_server, timm_photos):
    client = TritonClient(timm_server.grpc_url, "grpc")
    with pytest.raises(InferenceError, match="timm_preprocess: image 1 of the request: .*not a JPEG"):
        client.infer("timm_classify", {"image": bytes_tensor([timm_photos[0].read_bytes(), b"text"])})
    assert TimmClient(timm_server.grpc_url).classify(timm_photos[0]).labels


def test_cli_commands_come_from_the_plugin(timm_server, timm_photos, tmp_path):
    def run(*args):
        return subprocess.run([TRITONLENS, *args], capture_output=True, text=True, timeout=120)

    assert "timm" in run("export", "--help").stdout
    result = run("timm-classify", *map(str, timm_photos[:2]), "--top-k", "3", "--json",
                 "--url", timm_server.grpc_url)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(line["labels"]) for line in lines] == [3, 3]
    out = tmp_path / "features.npy"
    result = run("timm-embed", *map(str, timm_photos), "--out", str(out), "--url",
                 timm_server.http_url, "--protocol", "http", "--prefix", "timm_eff")
    assert result.returncode == 0, result.stderr
    assert np.load(out).shape == (len(timm_photos), 256)  # test_efficientnet's num_features
    result = run("timm-classify", str(tmp_path / "missing.jpg"), "--url", timm_server.grpc_url)
    assert result.returncode == 1 and "cannot read image file" in result.stderr


def test_bench_scenarios_are_served(timm_server, timm_repo, timm_photos):
    """Each scenario's real input data, sent once through the real server, is served."""
    from tritonlens.bench.scenarios import all_scenarios
    from tritonlens.core.plugins import BenchInputs

    inputs = BenchInputs(photos=timm_photos[:2], repo=timm_repo)
    client = TritonClient(timm_server.grpc_url, "grpc")
    scenarios = [s for s in all_scenarios() if s.family == "timm"]
    assert {s.model for s in scenarios} == {"timm_classify", "timm_embed", "timm_preprocess", "timm_model"}
    for scenario in scenarios:
        step = scenario.build_inputs(inputs)[0][0]
        arrays = {name: (np.array(value, dtype=np.object_) if isinstance(value, list) else value)[None]
                  for name, value in step.items()}
        assert client.infer(scenario.model, arrays).get_response() is not None, scenario.model
