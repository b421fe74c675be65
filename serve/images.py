"""Decoding untrusted encoded images, for every Python-backend preprocessing model.

One function, :func:`decode`, with the refusals every model needs: a bad image fails only
its own request with a message naming the problem, and a decompression bomb is refused
from its header, before a single pixel is decoded.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000

# decode() applies its own pixel limit with a clearer message than Pillow's warning/error.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An input image that cannot be used; the message is sent back to the client."""


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
           apply_exif_orientation: bool = False) -> Image.Image:
    """Decode one JPEG, PNG or WebP file's bytes into a loaded Pillow image (mode unchanged).

    Raises:
        ImageError: empty bytes; more than ``max_bytes`` bytes; not a JPEG/PNG/WebP image;
            more than ``max_pixels`` pixels (checked from the header: ``Image.open`` reads
            only the header, so a decompression bomb costs nothing); a corrupt or truncated
            file.
    """
    if len(data) == 0:
        raise ImageError("empty image bytes")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {max_bytes} bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"image is {width}x{height} pixels, over the limit of "
                             f"{max_pixels} pixels (max_image_pixels); refused before decoding")
        image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a JPEG, PNG or WebP image (cannot identify the image format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"corrupt or truncated image: {err}") from None
    return ImageOps.exif_transpose(image) if apply_exif_orientation else image
