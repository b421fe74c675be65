"""Bad SAM 2 prompts and images fail that one request with a clear message; the server
keeps serving (the next good request, and a good request running at the same time, work)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tritonlens.client.base import InferenceError
from tritonlens.client.clip import bytes_tensor
from tritonlens.client.sam2 import Sam2Client
from tritonlens.serve.sam2.prompts import MAX_POINTS_PER_OBJECT

GOOD = dict(points=[(200.0, 150.0)])  # inside every sample photo


def raw_request(photo: bytes, coords, labels) -> dict[str, np.ndarray]:
    """A sam2_segment request as a stock Triton client builds it."""
    return {"image": bytes_tensor([photo]).reshape(1), "point_coords": coords,
            "point_labels": labels}


def bad_prompts(width: int, height: int) -> dict[str, tuple[dict, str]]:
    """name -> (Sam2Client.segment keyword arguments, phrase the error must contain)."""
    return {
        "point right of the image": (dict(points=[(width + 5, 10)]), "outside the"),
        "negative coordinate": (dict(points=[(10, -1)]), "outside the"),
        "box past the bottom": (dict(box=(10, 10, 50, height + 40)), "outside the"),
        "no points": (dict(points=[]), "no prompt"),
        "a lone box corner": (dict(points=[(10, 10)], labels=[2]), "lone box corner"),
        "box with x1 < x0": (dict(box=(300, 20, 100, 200)), "x0 <= x1 and y0 <= y1"),
        "box with y1 < y0": (dict(box=(10, 200, 100, 20)), "x0 <= x1 and y0 <= y1"),
        "two boxes": (dict(points=[(1, 1), (5, 5), (6, 6), (9, 9)], labels=[2, 3, 2, 3]),
                      "more than one box"),
        "too many points": (dict(points=[(10, 10)] * (MAX_POINTS_PER_OBJECT + 1)),
                            f"at most {MAX_POINTS_PER_OBJECT} points per object"),
        "unknown label": (dict(points=[(10, 10)], labels=[7]), "point label 7"),
        "not a number": (dict(points=[(float("nan"), 10)]), "non-finite"),
    }


@pytest.fixture(scope="module")
def cat(photos):
    return next(p for p in photos if p.name == "chelsea_cat.jpg")


def test_bad_prompts_fail_alone(server, cat, protocol):
    client = Sam2Client(server.url(protocol), protocol)
    for name, (prompt, phrase) in bad_prompts(451, 300).items():
        with pytest.raises(InferenceError) as err:
            client.segment(cat, **prompt)
        message = str(err.value)
        assert phrase in message, f"{name}: {message}"
        assert "sam2_prompts" in message and "\n" not in message, name
    assert client.segment(cat, **GOOD).masks.shape == (3, 300, 451)
    assert server.is_ready()


def test_wrong_dtype_and_shape(server, cat, protocol):
    """What a stock client can get wrong in the tensors themselves; Triton refuses it
    against the ensemble's config and names the input."""
    client = Sam2Client(server.url(protocol), protocol)
    photo = cat.read_bytes()
    cases = {
        "float64 coordinates": (np.array([[10.0, 10.0]]), np.array([1], np.int32)),
        "int64 labels": (np.array([[10, 10]], np.float32), np.array([1], np.int64)),
        "three numbers per point": (np.array([[10, 10, 1]], np.float32), np.array([1], np.int32)),
        "labels of another count": (np.array([[10, 10], [20, 20]], np.float32),
                                    np.array([1], np.int32)),
    }
    for name, (coords, labels) in cases.items():
        with pytest.raises(InferenceError) as err:
            client.infer("sam2_segment", raw_request(photo, coords, labels))
        message = str(err.value)
        assert "point_coords" in message or "point_labels" in message or "label(s)" in message, \
            f"{name}: {message}"
    assert client.segment(cat, **GOOD).iou_scores.shape == (3,)


def test_bad_images(server, cat, protocol):
    client = Sam2Client(server.url(protocol), protocol)
    jpeg = cat.read_bytes()
    for data, phrase in ((jpeg[: len(jpeg) // 3], "corrupt or truncated JPEG"),
                         (b"\x89PNG\r\n\x1a\n" + bytes(200), "corrupt or truncated PNG"),
                         (b"GIF89a" + bytes(200), "not a JPEG, PNG or WebP"),
                         (b"", "empty image bytes")):
        with pytest.raises(InferenceError, match=phrase) as info:
            client.segment(data, **GOOD)
        # the caller's fault: gRPC INVALID_ARGUMENT / HTTP 400, not INTERNAL / 500
        assert info.value.status in ("StatusCode.INVALID_ARGUMENT", "400"), info.value.status
    assert client.segment(jpeg, **GOOD).masks.shape == (3, 300, 451)


def test_bad_decode_inputs(server, cat):
    """The encode-once path checks prompts and the mask prompt too."""
    client = Sam2Client(server.grpc_url, "grpc")
    features = client.embed_image(cat)
    with pytest.raises(InferenceError, match="outside the"):
        client.decode(features, points=[(1000, 10)])
    with pytest.raises(InferenceError, match="mask_input"):
        client.decode(features, points=[(10, 10)], mask_input=np.zeros((1, 5, 5), np.float32))
    assert client.decode(features, **GOOD).masks.shape == (3, 300, 451)


def test_bad_request_does_not_fail_a_concurrent_good_one(server, cat):
    client = Sam2Client(server.grpc_url, "grpc")

    def good():
        return client.segment(cat, **GOOD)

    def bad():
        try:
            client.segment(cat, points=[(10, 10)], labels=[3])
        except InferenceError as err:
            return err

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(f) for f in (good, bad, good, bad)]
        results = [f.result() for f in futures]
    assert results[0].masks.shape == results[2].masks.shape == (3, 300, 451)
    assert all(isinstance(r, InferenceError) and "lone box corner" in str(r) for r in results[1::2])


def test_huge_point_request_is_refused_quickly(server, cat, protocol):
    """[20000, 2] points (a 160 kB request) once got the decoder's stub OOM-killed and
    tritonserver with it; now sam2_prompts refuses it before the decoder runs."""
    client = Sam2Client(server.url(protocol), protocol)
    photo = cat.read_bytes()
    coords = np.random.default_rng(0).uniform(10, 290, (20000, 2)).astype(np.float32)
    with pytest.raises(InferenceError, match="20000 points in one request: at most "
                                             f"{MAX_POINTS_PER_OBJECT} points per object"):
        client.infer("sam2_segment", raw_request(photo, coords, np.ones(20000, np.int32)))
    assert server.is_ready()
    good = client.segment(cat, **GOOD)
    assert good.masks.shape == (3, 300, 451)


def test_box_after_clicks_is_moved_first(server, cat):
    """Same vocabulary as the tracker: a box may come after the clicks; it is moved first,
    where SAM 2 puts it, so the answer equals the box-first request."""
    client = Sam2Client(server.grpc_url, "grpc")
    photo = cat.read_bytes()
    box_first = client.infer("sam2_segment", raw_request(
        photo, np.array([[40, 30], [400, 280], [200, 150]], np.float32),
        np.array([2, 3, 1], np.int32)))
    box_last = client.infer("sam2_segment", raw_request(
        photo, np.array([[200, 150], [40, 30], [400, 280]], np.float32),
        np.array([1, 2, 3], np.int32)))
    for name in ("iou_scores", "masks"):
        np.testing.assert_array_equal(box_first.as_numpy(name), box_last.as_numpy(name))


@pytest.mark.parametrize("model", ["sam2_preprocess", "sam2_frame_preprocess"])
def test_bad_image_is_invalid_argument_directly(server, protocol, model):
    """The preprocessing models themselves (the ensembles call them) answer a bad image with
    INVALID_ARG; a 20000x1 PNG needs no refusal there (straight S x S resize, 0.2 s)."""
    import io

    from PIL import Image

    client = Sam2Client(server.url(protocol), protocol)
    with pytest.raises(InferenceError, match="corrupt or truncated PNG") as info:
        client.infer(model, {"image": bytes_tensor([b"\x89PNG\r\n\x1a\n" + bytes(64)]).reshape(1)})
    assert info.value.status in ("StatusCode.INVALID_ARGUMENT", "400"), info.value.status
    buffer = io.BytesIO()
    Image.new("RGB", (20000, 1), "red").save(buffer, "PNG")
    result = client.infer(model, {"image": bytes_tensor([buffer.getvalue()]).reshape(1)})
    assert list(result.as_numpy("orig_size")) == [1, 20000]
