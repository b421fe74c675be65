"""serve/images.decode: refusals from the header (pixels, aspect ratio) and the wording of
corrupt vs unrecognised files. Real encoded files, no server."""

from __future__ import annotations

import io
import resource

import pytest
from PIL import Image

from tritonlens.serve.images import DEFAULT_MAX_ASPECT_RATIO, ImageError, decode


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "red" if mode == "RGB" else 1).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(20000, 1), (1, 20000), (10100, 100)])
def test_extreme_aspect_ratio_is_refused_from_the_header(size):
    """A few-byte 20000x1 PNG used to cost 15-19 s and 4 GiB in CLIP's shortest-side resize;
    now it is refused before decoding, without memory growth. The same file cut after its
    header is refused with the same message: only the header was read."""
    data = encoded(size, "PNG")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match=r"aspect ratio over the limit of 100:1"):
        decode(data, max_aspect_ratio=DEFAULT_MAX_ASPECT_RATIO)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024  # KiB
    header_only = data[:data.index(b"IDAT") + 4]  # every chunk before the pixel data
    with pytest.raises(ImageError, match=r"aspect ratio over the limit of 100:1"):
        decode(header_only, max_aspect_ratio=DEFAULT_MAX_ASPECT_RATIO)


@pytest.mark.parametrize("size", [(10000, 100), (100, 10000), (640, 480)])
def test_aspect_ratio_within_the_bound_decodes(size):
    image = decode(encoded(size, "PNG"), max_aspect_ratio=DEFAULT_MAX_ASPECT_RATIO)
    assert image.size == size


def test_no_aspect_bound_unless_asked():
    """SAM 2 resizes straight to S x S: a 20000x1 image costs it nothing extra."""
    assert decode(encoded((20000, 1), "PNG")).size == (20000, 1)


@pytest.mark.parametrize("fmt, name", [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP")])
def test_truncated_file_of_a_recognised_format_names_it(fmt, name):
    data = encoded((64, 64), fmt)
    with pytest.raises(ImageError, match=f"corrupt or truncated {name}"):
        decode(data[: len(data) // 2])


@pytest.mark.parametrize("data, name", [
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "JPEG"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "PNG"),
])
def test_broken_header_of_a_recognised_signature_is_corrupt_not_unknown(data, name):
    with pytest.raises(ImageError, match=f"corrupt or truncated {name}"):
        decode(data)


@pytest.mark.parametrize("data", [b"name,value\nfoo,1\n", encoded((8, 8), "GIF")])
def test_unrecognised_file_says_so(data):
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP image"):
        decode(data)


def test_pixel_bound_still_applies():
    with pytest.raises(ImageError, match="over the limit of 1000 pixels"):
        decode(encoded((100, 100), "PNG"), max_pixels=1000)
