"""CLIP through a real tritonserver equals open_clip in-process, on real photos.

Tolerances: preprocessing pixels exactly equal (same Pillow calls); embeddings cosine
>= 0.9999; zero-shot probabilities within 1e-4 with the same ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from tests.helpers import (CLIP_TEST_LABELS, CORPUS, cosine, reference_image_embeddings, reference_pixels,
                           reference_probabilities)
from tritonlens.client.clip import ClipClient, bytes_tensor
from tritonlens.launcher.health import stub_of


def test_preprocess_equals_open_clip_transform(server, photos, clip_reference, protocol):
    client = ClipClient(server.url(protocol), protocol)
    _, preprocess, _ = clip_reference
    for path in photos:
        served = client.infer("clip_preprocess", {"image": bytes_tensor([path.read_bytes()])})
        pixels = served.as_numpy("pixels")[0]
        expected = reference_pixels(preprocess, path)
        assert pixels.dtype == np.uint8 and pixels.shape == expected.shape == (224, 224, 3)
        assert np.array_equal(pixels, expected), f"{path.name}: pixels differ from open_clip"
        # ...and the encoder's in-graph normalisation equals ToTensor + Normalize.
        mean = np.array(preprocess.transforms[-1].mean, np.float32)
        std = np.array(preprocess.transforms[-1].std, np.float32)
        normalised = (pixels.astype(np.float32) / 255 - mean) / std
        reference = preprocess(Image.open(path)).numpy().transpose(1, 2, 0)
        assert np.abs(normalised - reference).max() < 1e-5


def test_image_embeddings_match_open_clip(server, photos, clip_reference, protocol):
    """All photos, of different sizes, modes and formats, in one batched request."""
    client = ClipClient(server.url(protocol), protocol)
    served = client.embed_images(photos)
    expected = reference_image_embeddings(clip_reference, photos)
    assert served.shape == expected.shape
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    assert cosine(served, expected).min() >= 0.9999


def test_text_embeddings_match_open_clip(server, clip_reference, protocol):
    model, _, tokenizer = clip_reference
    texts = ["a photo of a cat", "a rocket on the launch pad", "", "naïve café ☕ " * 30]
    served = ClipClient(server.url(protocol), protocol).embed_texts(texts)
    with torch.no_grad():
        expected = model.encode_text(tokenizer(texts), normalize=True).numpy()
    assert cosine(served, expected).min() >= 0.9999


def test_tokenizer_equals_open_clip(server, clip_reference):
    """The served tokenizer (serve/clip/tokenizer.py, no torch) over the unit corpus: ASCII
    to emoji and CJK, HTML entities, mojibake, texts at the 2048-byte bound, truncation."""
    _, _, tokenizer = clip_reference
    texts = ["a photo of a cat", "ÅngströM  spaces\tand\nnewlines", "x " * 200, *CORPUS]
    client = ClipClient(server.grpc_url, "grpc")
    for start in range(0, len(texts), 8):  # within clip_tokenize's max_batch_size
        chunk = texts[start:start + 8]
        served = client.infer("clip_tokenize", {"text": bytes_tensor([t.encode() for t in chunk])})
        assert np.array_equal(served.as_numpy("token_ids"), tokenizer(chunk).numpy()), chunk


def test_tokenize_stub_does_not_load_torch(server):
    """clip_tokenize's stub maps no libtorch (measured with the default ViT-B-32 export on
    this project's host: 790 MB RSS / 516 MB PSS idle when it tokenized through open_clip,
    75 MB / 56 MB now)."""
    stubs = [proc for proc in psutil.Process(server.process.pid).children(recursive=True)
             if (stub := stub_of(proc.cmdline(), server.model_repository))
             and stub.model == "clip_tokenize"]
    assert stubs, "no clip_tokenize stub found among tritonserver's children"
    for proc in stubs:
        libraries = {Path(m.path).name for m in proc.memory_maps()}
        assert not [name for name in libraries if "libtorch" in name], sorted(libraries)


def test_zero_shot_probabilities_match_open_clip(server, photos, clip_reference, protocol):
    client = ClipClient(server.url(protocol), protocol)
    served = client.probabilities(photos)
    expected = reference_probabilities(clip_reference, photos)
    assert served.shape == (len(photos), len(CLIP_TEST_LABELS))
    assert np.abs(served - expected).max() <= 1e-4
    assert np.allclose(served.sum(axis=1), 1.0, atol=1e-5)
    for row_served, row_expected in zip(served, expected):
        # same ranking wherever the reference separates two labels by more than the tolerance
        order = np.argsort(-row_expected)
        gaps = -np.diff(row_expected[order])
        ranked = np.argsort(-row_served)
        for rank, gap in enumerate(gaps):
            if gap > 1e-4:
                assert set(ranked[:rank + 1]) == set(order[:rank + 1])


def test_classify_top_k_uses_classification_extension(server, photos, clip_reference, protocol):
    """class_count=k returns "score:index:label" from labels.txt, best first."""
    client = ClipClient(server.url(protocol), protocol)
    expected = reference_probabilities(clip_reference, photos[:2])
    for path, probs in zip(photos[:2], expected):
        result = client.classify(path, top_k=3)
        assert len(result.labels) == 3
        for label in result.labels:
            assert label.label == CLIP_TEST_LABELS[label.index]
            assert abs(label.score - probs[label.index]) <= 1e-4
        scores = [label.score for label in result.labels]
        assert scores == sorted(scores, reverse=True)
        assert result.labels[0].index == int(np.argmax(probs)) or \
            np.sort(probs)[-1] - np.sort(probs)[-2] <= 1e-4


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_encoder_batches_equal_single_requests(server, photos, batch):
    """The encoder called directly with UINT8 pixels: a batch equals its items alone."""
    client = ClipClient(server.grpc_url, "grpc")
    pixels = np.stack([
        client.infer("clip_preprocess", {"image": bytes_tensor([p.read_bytes()])}).as_numpy("pixels")[0]
        for p in (photos * 2)[:batch]])
    together = client.infer("clip_image_encoder", {"pixels": pixels}).as_numpy("embedding")
    alone = np.concatenate([client.infer("clip_image_encoder", {"pixels": pixels[i:i + 1]})
                            .as_numpy("embedding") for i in range(batch)])
    assert np.abs(together - alone).max() < 1e-5
