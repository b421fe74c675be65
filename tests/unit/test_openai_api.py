"""The OpenAI embeddings API's request parsing, encodings and errors (launcher/openai_api.py),
without a server: every refusal names the field and says why, images are recognised in the
ways the docs promise, and the base64 encoding is what the ``openai`` package decodes."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tritonlens.launcher.openai_api import (MAX_INPUTS, ApiError, check_authorization,
                                            embedding_response, encode_embedding, models_response,
                                            parse_embedding_request, parse_item)


def image_file(fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 60)).save(buffer, fmt)
    return buffer.getvalue()


def refused(body, status: int = 400) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_embedding_request(body)
    assert caught.value.status == status
    return caught.value


def test_a_string_and_a_list_of_strings():
    one = parse_embedding_request({"model": "clip", "input": "a photo of a cat"})
    assert one.items == [("text", b"a photo of a cat")] and one.encoding_format == "float"
    many = parse_embedding_request({"model": "clip", "input": ["a", "b"], "encoding_format": "base64"})
    assert [kind for kind, _ in many.items] == ["text", "text"] and many.encoding_format == "base64"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_images_as_data_urls_and_plain_base64_beside_texts(fmt):
    data = image_file(fmt)
    b64 = base64.b64encode(data).decode()
    request = parse_embedding_request({"model": "clip", "input": [
        f"data:image/{fmt.lower()};base64,{b64}", "a cat", b64, "data: the new oil"]})
    assert request.items == [("image", data), ("text", b"a cat"), ("image", data),
                             ("text", b"data: the new oil")]
    assert request.indices("image") == [0, 2] and request.indices("text") == [1, 3]


def test_plain_base64_that_is_no_image_stays_text():
    text = base64.b64encode(b"just some words").decode()
    assert parse_item(text, 0, "auto") == ("text", text.encode())


def test_modality_text_reads_everything_as_text_and_image_needs_an_image():
    b64 = base64.b64encode(image_file()).decode()
    assert parse_item("https://example.com", 0, "text") == ("text", b"https://example.com")
    assert parse_item(b64, 0, "text") == ("text", b64.encode())
    assert parse_item(b64, 0, "image") == ("image", image_file())
    with pytest.raises(ApiError, match=r"input\[4\] is not the base64 of a JPEG, PNG or WebP"):
        parse_item("a photo of a cat", 4, "image")


def test_remote_urls_are_refused_never_fetched():
    err = refused({"model": "clip", "input": ["a cat", "https://example.com/cat.jpg"]})
    assert err.param == "input[1]" and err.code == "remote_url_not_fetched"
    assert "does not fetch URLs" in err.message and "server-side request forgery" in err.message
    assert "data:image/" in err.message  # what to send instead
    assert refused({"model": "clip", "input": "HTTP://10.0.0.1/x.png"}).code == "remote_url_not_fetched"
    # a sentence that mentions a URL is text
    assert parse_item("see https://example.com for cats", 0, "auto")[0] == "text"


@pytest.mark.parametrize("value, why", [
    ("data:image/png;base64,!!!notbase64", "not valid base64"),
    ("data:image/png,rawbytes", "without ';base64,'"),
    ("data:text/plain;base64,aGVsbG8=", "not of an image"),
])
def test_bad_data_urls_name_the_item(value, why):
    err = refused({"model": "clip", "input": ["ok", value]})
    assert err.param == "input[1]" and why in err.message and err.message.startswith("input[1]")


@pytest.mark.parametrize("body, param, why", [
    ({"model": "clip", "input": []}, "input", "empty list"),
    ({"model": "clip", "input": ""}, "input[0]", "empty string"),
    ({"model": "clip", "input": ["a", ""]}, "input[1]", "empty string"),
    ({"model": "clip"}, "input", "'input' is required"),
    ({"input": "a cat"}, "model", "'model' is required"),
    ({"model": "clip", "input": {"text": "a"}}, "input", "string or a list of strings"),
    ({"model": "clip", "input": [1, 2, 3]}, "input", "token array"),
    ({"model": "clip", "input": [[1, 2], [3]]}, "input[0]", "token arrays are not supported"),
    ({"model": "clip", "input": ["a", None]}, "input[1]", "NoneType"),
    ({"model": "clip", "input": ["a"] * (MAX_INPUTS + 1)}, "input", f"limit of {MAX_INPUTS}"),
    ({"model": "clip", "input": "a", "encoding_format": "hex"}, "encoding_format", "float, base64"),
    ({"model": "clip", "input": "a", "modality": "audio"}, "modality", "auto, text, image"),
    ({"model": "clip", "input": "a", "dimensions": 0}, "dimensions", "positive integer"),
    ({"model": "clip", "input": "a", "dimensions": "512"}, "dimensions", "positive integer"),
    (["model", "clip"], None, "JSON object"),
])
def test_bad_requests_are_400_naming_the_field(body, param, why):
    err = refused(body)
    assert err.param == param and why in err.message, err.message
    error = err.body()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and json.dumps(err.body())


def test_authorization():
    check_authorization(None, None)  # open gateway: no header needed
    check_authorization("Bearer anything", None)
    check_authorization("Bearer s3cret", "s3cret")
    check_authorization("bearer  s3cret ", "s3cret")
    for header, why in ((None, "no API key"), ("Basic s3cret", "no API key"), ("Bearer ", "no API key"),
                        ("Bearer wrong", "incorrect API key")):
        with pytest.raises(ApiError, match=why) as caught:
            check_authorization(header, "s3cret")
        assert caught.value.status == 401 and caught.value.code == "invalid_api_key"


def test_encodings_are_what_openai_clients_decode():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 5)).astype(np.float32)
    as_floats = embedding_response("clip", vectors, "float")
    as_base64 = embedding_response("clip", vectors, "base64")
    for i, vector in enumerate(vectors):
        # the openai package: np.frombuffer(base64.b64decode(s), dtype="float32")
        decoded = np.frombuffer(base64.b64decode(as_base64["data"][i]["embedding"]), dtype="float32")
        assert np.array_equal(decoded, vector)
        # JSON floats round-trip to the same float32 values
        floats = json.loads(json.dumps(as_floats))["data"][i]["embedding"]
        assert np.array_equal(np.array(floats, np.float32), vector)
        assert as_floats["data"][i]["index"] == i and as_floats["data"][i]["object"] == "embedding"
    assert as_floats["object"] == "list" and as_floats["model"] == "clip"
    assert as_floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert base64.b64decode(encode_embedding(np.array([1.0], np.float32), "base64")) == b"\x00\x00\x80\x3f"


def test_models_response():
    listed = models_response(["clip", "clip_int8"])
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["clip", "clip_int8"]
    assert all(m["object"] == "model" for m in listed["data"])
