"""Bad input fails that one request with a clear message; the server keeps serving."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tritonlens.client.base import InferenceError, ModelNotReadyError, ServerUnreachableError, TritonLensError
from tritonlens.client.clip import ClipClient
from tritonlens.serve.launcher import free_port


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A real 20000 x 20000 PNG (400 megapixels; ~50 KB on disk, bi-level)."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


def bad_images(photos, bomb_png) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a phrase the server's error message must contain)."""
    jpeg = photos[0].read_bytes()
    return {
        "truncated JPEG": (jpeg[: len(jpeg) // 3], "corrupt or truncated"),
        "corrupt bytes": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "not a JPEG, PNG or WebP"),
        "empty bytes": (b"", "empty image bytes"),
        "a text file": (b"name,value\nfoo,1\n", "not a JPEG, PNG or WebP"),
        "a GIF (unsupported format)": (gif_bytes(), "not a JPEG, PNG or WebP"),
        "decompression bomb": (bomb_png, "over the limit"),
    }


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, "GIF")
    return buffer.getvalue()


def test_bad_images_fail_alone(server, photos, bomb_png, protocol):
    client = ClipClient(server.url(protocol), protocol)
    for name, (data, phrase) in bad_images(photos, bomb_png).items():
        with pytest.raises(InferenceError) as info:
            client.classify(data)
        message = str(info.value)
        assert phrase in message, f"{name}: unexpected message {message!r}"
        assert "clip_preprocess" in message and "\n" not in message
        # the next request is served normally
        assert len(client.classify(photos[1], top_k=2).labels) == 2


def test_bad_image_in_concurrent_traffic(server, photos, bomb_png):
    """Bad requests interleaved with good ones: every good one gets its right answer."""
    client = ClipClient(server.grpc_url, "grpc")
    expected = client.probabilities([photos[2]])[0]
    items = [photos[2].read_bytes(), b"garbage", bomb_png] * 4

    def call(data):
        try:
            return client.probabilities([data])[0]
        except InferenceError as err:
            return err

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, items))
    for data, result in zip(items, results):
        if data is items[0]:
            assert not isinstance(result, Exception)
            assert np.abs(result - expected).max() < 1e-5
        else:
            assert isinstance(result, InferenceError)


def test_one_bad_image_fails_its_whole_request(server, photos):
    client = ClipClient(server.grpc_url, "grpc")
    with pytest.raises(InferenceError, match="image 1 of the request"):
        client.embed_images([photos[0], b"not an image"])


@pytest.mark.parametrize("pixels, phrase", [
    (np.zeros((1, 224, 224, 3), np.float32), "FP32"),
    (np.zeros((1, 100, 100, 3), np.uint8), "shape"),
    (np.zeros((224, 224, 3), np.uint8), "batch-size must be <= 8"),  # batch axis missing
])
def test_encoder_rejects_wrong_dtype_or_shape(server, photos, pixels, phrase, protocol):
    client = ClipClient(server.url(protocol), protocol)
    with pytest.raises(InferenceError) as info:
        client.infer("clip_image_encoder", {"pixels": pixels})
    assert phrase.lower() in str(info.value).lower()
    assert client.embed_images([photos[0]]).shape[0] == 1


def test_oversized_batch_is_refused(server):
    client = ClipClient(server.grpc_url, "grpc")
    with pytest.raises(InferenceError, match="batch"):
        client.infer("clip_image_encoder", {"pixels": np.zeros((9, 224, 224, 3), np.uint8)})


def test_client_errors_are_one_line(server, tmp_path):
    port = free_port()
    with pytest.raises(ServerUnreachableError, match="no Triton server"):
        ClipClient(f"127.0.0.1:{port}", "grpc").check_ready()
    with pytest.raises(ServerUnreachableError, match="no Triton server"):
        ClipClient(f"127.0.0.1:{port}", "http").classify(b"x")
    with pytest.raises(ModelNotReadyError, match="no_such_model"):
        ClipClient(server.grpc_url, "grpc").check_ready("no_such_model")
    with pytest.raises(TritonLensError, match="cannot read image file"):
        ClipClient(server.grpc_url, "grpc").classify(tmp_path / "missing.jpg")
