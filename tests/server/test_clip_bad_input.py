"""Bad input fails that one request with a clear message; the server keeps serving."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tritonlens.client.base import InferenceError, ModelNotReadyError, ServerUnreachableError, TritonLensError
from tritonlens.client.clip import ClipClient, bytes_tensor
from tritonlens.launcher.process import free_port


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
        "truncated JPEG": (jpeg[: len(jpeg) // 3], "corrupt or truncated JPEG"),
        "truncated PNG": (png_bytes((64, 64))[:60], "corrupt or truncated PNG"),
        "corrupt bytes after a JPEG signature": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
                                                 "corrupt or truncated JPEG"),
        "empty bytes": (b"", "empty image bytes"),
        "a text file": (b"name,value\nfoo,1\n", "not a JPEG, PNG or WebP"),
        "a GIF (unsupported format)": (gif_bytes(), "not a JPEG, PNG or WebP"),
        "decompression bomb": (bomb_png, "over the limit"),
        "20000x1 PNG": (png_bytes((20000, 1)), "aspect ratio over the limit of 100:1"),
        "1x20000 PNG": (png_bytes((1, 20000)), "aspect ratio over the limit of 100:1"),
    }


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, "PNG")
    return buffer.getvalue()


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
        assert info.value.status in ("StatusCode.INVALID_ARGUMENT", "400"), (name, info.value.status)
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


def test_extreme_aspect_ratio_is_refused_fast(server, protocol):
    """A 20000x1 PNG of 140 bytes cost clip_preprocess 15.6 s and 4 GiB (CLIP's shortest-side
    resize made a 4.5-gigapixel-wide intermediate); now it is refused from its header."""
    client = ClipClient(server.url(protocol), protocol)
    for size in ((20000, 1), (1, 20000)):
        with pytest.raises(InferenceError, match="aspect ratio"):
            client.classify(png_bytes(size))
    assert client.classify(png_bytes((2000, 40)), top_k=1).labels  # 50:1 is served


def status_of(protocol: str, call) -> str:
    """The protocol status a stock tritonclient sees for a failing call."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status())


def stock_infer(server, protocol: str, model: str, name: str, items: list[bytes]):
    """A BYTES request [N, 1] from a stock tritonclient, no tritonlens code involved."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    client = module.InferenceServerClient(server.url(protocol))
    item = module.InferInput(name, [len(items), 1], "BYTES")
    item.set_data_from_numpy(bytes_tensor(items))
    return lambda: client.infer(model, [item])


@pytest.mark.parametrize("model", ["clip_preprocess", "clip_classify", "clip_embed_image"])
def test_bad_image_is_invalid_argument_directly_and_through_ensembles(server, protocol, model):
    """Bad input is the caller's fault: gRPC INVALID_ARGUMENT / HTTP 400, not INTERNAL / 500
    (before: every error raised in a Python model came back INTERNAL / 500)."""
    expected = "StatusCode.INVALID_ARGUMENT" if protocol == "grpc" else "400"
    assert status_of(protocol, stock_infer(server, protocol, model, "image", [b"not an image"])) \
        == expected


@pytest.mark.parametrize("model", ["clip_tokenize", "clip_embed_text"])
def test_too_long_text_is_refused_fast_as_invalid_argument(server, protocol, model):
    """A 10 MB text held clip_tokenize for 114 s; now it is refused before tokenizing."""
    expected = "StatusCode.INVALID_ARGUMENT" if protocol == "grpc" else "400"
    text = ("a photo of a cat " * 700_000).encode()[:10_000_000]
    assert status_of(protocol, stock_infer(server, protocol, model, "text", [text])) == expected
    with pytest.raises(InferenceError, match="text 1 of the request: text is 2049 bytes, over "
                                             "the limit of 2048 bytes"):
        ClipClient(server.url(protocol), protocol).embed_texts(["a cat", "x" * 2049])


def test_tokens_within_the_text_bound_equal_open_clip(server, clip_reference):
    """The bound changes nothing below it: served token ids equal open_clip's, also for a
    text long enough to be truncated to 77 tokens and for one exactly at the bound."""
    tokenizer = clip_reference[2]
    texts = ["a photo of a cat", "a photo of a " + "very " * 300 + "big dog",
             "é" * 1024, "  Messy &amp; HTML&lt;3   text\twith\nwhitespace "]
    client = ClipClient(server.grpc_url, "grpc")
    result = client.infer("clip_tokenize", {"text": bytes_tensor([t.encode() for t in texts])})
    np.testing.assert_array_equal(result.as_numpy("token_ids"), tokenizer(texts).numpy())


def test_malformed_json_body_is_answered_by_triton_itself(server, photos):
    """A body that is not JSON never reaches a model: Triton 2.51's HTTP frontend answers it
    with 500 and "failed to parse the request JSON buffer" (a known limit, in docs/limits.md:
    Triton's code, not tritonlens'); the server goes on serving."""
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/clip_classify/infer",
                                     data=b"{not json", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 500
    assert "failed to parse the request JSON" in info.value.read().decode()
    assert ClipClient(server.http_url, "http").classify(photos[0], top_k=1).labels


def test_token_ids_outside_the_vocabulary_fail_alone_as_invalid_argument(server, protocol):
    """clip_text_encoder called directly with ids outside CLIP's 49408-token vocabulary:
    onnxruntime's own INVALID_ARGUMENT becomes INVALID_ARGUMENT / 400 (was INTERNAL / 500),
    and good requests batched with the bad one still get their embeddings (a failed batch
    is run again request by request)."""
    client = ClipClient(server.url(protocol), protocol)
    good = client.infer("clip_tokenize", {"text": bytes_tensor([b"a photo of a cat"])})
    good_ids = good.as_numpy("token_ids")
    expected = client.infer("clip_text_encoder", {"token_ids": good_ids}).as_numpy("embedding")
    bad_ids = np.full_like(good_ids, 10**9)

    def call(ids):
        try:
            return client.infer("clip_text_encoder", {"token_ids": ids}).as_numpy("embedding")
        except InferenceError as err:
            return err

    items = [good_ids, bad_ids] * 6
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, items))
    for ids, result in zip(items, results):
        if ids is bad_ids:
            assert isinstance(result, InferenceError), result
            assert "onnxruntime refused the input" in str(result) and "out of data bounds" in str(result)
            assert result.status in ("StatusCode.INVALID_ARGUMENT", "400"), result.status
        else:
            assert not isinstance(result, Exception), result
            np.testing.assert_allclose(result, expected, atol=1e-5)
