"""serve/images.decode on base64 text (what JSON-only clients send): data URLs and plain
base64 of real photos decode to the same pixels as the file; bad base64 is named."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tritonlens.serve.images import ImageError, decode, unwrap_base64


@pytest.fixture(scope="module")
def files(photos) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in photos}


def test_data_urls_and_plain_base64_decode_to_the_files_pixels(files):
    for name, data in files.items():
        expected = np.asarray(decode(data))
        text = base64.b64encode(data)
        for variant in (text, b"data:image/" + name.rsplit(".", 1)[1].encode() + b";base64," + text,
                        base64.urlsafe_b64encode(data).rstrip(b"="),
                        b"\n".join(text[i:i + 76] for i in range(0, len(text), 76))):  # MIME lines
            assert np.array_equal(np.asarray(decode(variant)), expected), name


def test_image_bytes_are_never_read_as_base64(files):
    for data in files.values():
        assert unwrap_base64(data) is data


@pytest.mark.parametrize("data, message", [
    (b"data:image/jpeg,abc", "data URL without ';base64,'"),
    (b"data:image/png;base64,@@@@", "the data URL's payload is not valid base64"),
    (b"data:image/png;base64,", "empty image bytes"),
    (b"hello world", "not a JPEG, PNG or WebP image"),
    (base64.b64encode(b"plain text, not an image"), "nor base64 text of one"),
])
def test_bad_base64_is_named(data, message):
    with pytest.raises(ImageError, match=message.replace("(", r"\(")):
        decode(data)


def test_the_byte_limit_applies_to_the_text(files):
    data = next(iter(files.values()))
    with pytest.raises(ImageError, match="over the limit"):
        decode(base64.b64encode(data), max_bytes=len(data))
