"""Decoding untrusted encoded images, for every Python-backend preprocessing model.

One function, :func:`decode`, with the refusals every model needs: a bad image fails only
its own request with a message naming the problem, and a decompression bomb (too many
pixels) or an extreme aspect ratio is refused from its header, before a single pixel is
decoded. The message tells an unrecognised file ("not a JPEG, PNG or WebP image") from a
recognised but broken one ("corrupt or truncated PNG ...").

Clients that can only send text (HTTP/JSON, where a BYTES element is a JSON string) send the
file as base64: a data URL (``data:image/jpeg;base64,<base64>``) or the plain base64 text.
:func:`decode` unwraps both before decoding; bytes that start with a JPEG, PNG or WebP
signature are never read as base64.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
# Longer side / shorter side. CLIP's shortest-side resize makes an S x (S * ratio)
# intermediate: a 20000x1 PNG of 140 bytes became 224 x 4,480,000 pixels (15.6 s, 4 GiB RSS,
# measured). 100 bounds that intermediate at 100 * S^2 pixels (5 MP at S = 224) and still
# admits any real panorama.
DEFAULT_MAX_ASPECT_RATIO = 100.0
# The signatures that name a supported format even when Pillow cannot parse the header.
SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))

# The base64 alphabet (standard and URL-safe), padding and the whitespace a text may wrap in.
BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/_\-=\s]+")

# decode() applies its own pixel limit with a clearer message than Pillow's warning/error.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An input image that cannot be used; the message is sent back to the client."""


def signature_format(data: bytes) -> str | None:
    """"JPEG", "PNG" or "WEBP" when ``data`` starts with that format's signature, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in SIGNATURES if data.startswith(magic)), None)


def unwrap_base64(data: bytes) -> bytes:
    """The file bytes inside a base64 text, or ``data`` unchanged when it is not one.

    A data URL (``data:<media type>;base64,<payload>``, RFC 2397) is always unwrapped; any
    other input only when it does not start with a supported format's signature, consists
    of base64 characters alone (standard or URL-safe alphabet, whitespace allowed) and
    decodes to bytes that start with a JPEG, PNG or WebP signature (otherwise it is returned
    unchanged, and :func:`decode` names it as not an image).

    Raises:
        ImageError: a data URL that is not base64 (``;base64`` missing) or whose payload is
            not valid base64.
    """
    if data[:5].lower() == b"data:":
        header, comma, payload = data.partition(b",")
        if not comma or not header.lower().endswith(b";base64"):
            raise ImageError("data URL without ';base64,': send the image as "
                             "'data:image/<format>;base64,<base64 of the file>'")
        return _b64decode(payload, "the data URL's payload")
    if signature_format(data) or not BASE64_TEXT.fullmatch(data):
        return data
    try:
        decoded = _b64decode(data, "base64 text")
    except ImageError:
        return data
    return decoded if signature_format(decoded) else data


def _b64decode(text: bytes, what: str) -> bytes:
    compact = re.sub(rb"\s+", b"", text)
    if b"-" in compact or b"_" in compact:
        compact = compact.translate(bytes.maketrans(b"-_", b"+/"))
    try:
        return base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageError(f"{what} is not valid base64: {err}") from None


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
           apply_exif_orientation: bool = False,
           max_aspect_ratio: float | None = None,
           draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode one JPEG, PNG or WebP file's bytes into a loaded Pillow image (mode unchanged).

    ``data`` may also be that file as base64 text (a data URL or plain base64, see
    :func:`unwrap_base64`); ``max_bytes`` bounds the text and the decoded file alike.

    Args:
        max_aspect_ratio: refuse an image whose longer side is more than this many times its
            shorter side (None: no bound). Set by models that resize the shorter side to a
            fixed size (CLIP, ``DEFAULT_MAX_ASPECT_RATIO``), where the intermediate image
            grows with the ratio; SAM 2 resizes straight to S x S and needs no bound.
        draft: (width, height): decode a JPEG with libjpeg's DCT scaling (1/2, 1/4 or 1/8,
            Pillow's ``Image.draft``) to the smallest scale whose width and height are both
            at least these; other formats, and JPEGs too small to scale, decode at full
            size. The pixels then differ slightly from a full decode (DCT scaling is its own
            anti-aliased downscale); decoding cost falls with the scale's square (a 12 MP
            JPEG: 142 -> 29 ms for decode plus CLIP's 224-px transform, measured).

    Raises:
        ImageError: empty bytes; more than ``max_bytes`` bytes; not a JPEG/PNG/WebP image;
            more than ``max_pixels`` pixels or an aspect ratio over ``max_aspect_ratio``
            (both checked from the header: ``Image.open`` reads only the header, so a
            decompression bomb costs nothing); a corrupt or truncated file of a recognised
            format ("corrupt or truncated JPEG: ..."); a data URL that is not valid base64.
    """
    if len(data) == 0:
        raise ImageError("empty image bytes")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {max_bytes} bytes")
    data = unwrap_base64(bytes(data))
    if len(data) == 0:
        raise ImageError("empty image bytes (the data URL's payload is empty)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"image is {width}x{height} pixels, over the limit of "
                             f"{max_pixels} pixels (max_image_pixels); refused before decoding")
        if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * min(width, height):
            raise ImageError(f"image is {width}x{height} pixels, an aspect ratio over the limit "
                             f"of {max_aspect_ratio:g}:1 (max_image_aspect_ratio); crop or pad "
                             "it; refused before decoding")
        if draft is not None and image.format == "JPEG":
            image.draft(None, draft)
        image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        recognised = signature_format(data)
        if recognised:
            raise ImageError(f"corrupt or truncated {recognised}: it starts with the {recognised} "
                             "signature but its header cannot be parsed") from None
        raise ImageError("not a JPEG, PNG or WebP image (cannot identify the image format; "
                         "nor base64 text of one)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        recognised = signature_format(data) or "image"
        raise ImageError(f"corrupt or truncated {recognised}: {err}") from None
    return ImageOps.exif_transpose(image) if apply_exif_orientation else image
