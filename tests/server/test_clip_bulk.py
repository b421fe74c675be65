"""Bulk input through ClipClient on the real server: more items than the models'
max_batch_size (the session export: 8 images, 16 texts per request) are split into chunks,
sent concurrently and put back in input order, with parity against open_clip in-process.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import cosine, reference_image_embeddings
from tritonlens.client.base import InferenceError
from tritonlens.client.clip import ClipClient


def test_max_batch_size_is_read_from_the_server(server, protocol):
    client = ClipClient(server.url(protocol), protocol)
    assert client.max_batch_size(client.embed_image_model) == 8
    assert client.max_batch_size(client.embed_text_model) == 16


def test_texts_past_max_batch_size_keep_order_and_match_open_clip(server, clip_reference, protocol):
    model, _, tokenizer = clip_reference
    texts = [f"photo number {i} of a {['cat', 'dog', 'rocket', 'cup'][i % 4]}" for i in range(41)]
    served = ClipClient(server.url(protocol), protocol).embed_texts(texts)
    with torch.no_grad():
        expected = model.encode_text(tokenizer(texts), normalize=True).numpy()
    assert served.shape == expected.shape == (41, expected.shape[1])
    assert cosine(served, expected).min() >= 0.9999  # row i is text i: order kept


def test_images_past_max_batch_size_keep_order_and_match_open_clip(server, photos, clip_reference):
    client = ClipClient(server.grpc_url, "grpc")
    order = [(5 * i) % len(photos) for i in range(19)]  # 19 images: chunks of 8, 8, 3
    items = [photos[k] if i % 2 else photos[k].read_bytes() for i, k in enumerate(order)]
    reference = reference_image_embeddings(clip_reference, photos)
    served = client.embed_images(items, show_progress=True)
    assert cosine(served, reference[order]).min() >= 0.9999
    # an explicit batch size and a single request in flight give the same rows
    assert np.abs(client.embed_images(items, batch_size=5, concurrency=1) - served).max() < 1e-5
    probabilities = client.probabilities(items)
    assert probabilities.shape[0] == len(items)
    assert np.abs(probabilities - client.probabilities(photos)[order]).max() < 1e-5


def test_a_bad_item_in_a_later_chunk_is_named(server, photos):
    client = ClipClient(server.grpc_url, "grpc")
    items = [photos[0]] * 13 + [b"not an image"] + [photos[1]] * 6
    with pytest.raises(InferenceError, match=r"items 8-15 of 20, the server refused item 13") as info:
        client.embed_images(items)
    assert "not a JPEG, PNG or WebP" in str(info.value)
    texts = ["a cat"] * 20 + ["x" * 2049] + ["a dog"] * 9  # chunks of 16: 0-15, 16-29
    with pytest.raises(InferenceError, match=r"items 16-29 of 30, the server refused item 20 "
                                             r".*text is 2049 bytes, over the limit"):
        client.embed_texts(texts)


def test_empty_input_gives_an_empty_matrix(server):
    client = ClipClient(server.http_url, "http")
    dim = client.embed_texts(["a cat"]).shape[1]
    assert client.embed_texts([]).shape == (0, dim)
    assert client.embed_images([]).shape == (0, dim)
    assert client.embed_texts([]).dtype == np.float32
