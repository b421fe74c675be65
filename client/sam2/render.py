"""Pictures of SAM 2 results: a mask as a PNG, an overlay a person can look at, and the
prompts (clicks and boxes) drawn on a tracked video's frames."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

# Mask colours of the overlay (RGB), one per returned mask, best mask first.
MASK_COLOURS = ((30, 144, 255), (255, 160, 30), (60, 200, 90))
POINT_COLOURS = {1: (0, 230, 0), 0: (230, 0, 0)}  # foreground green, background red


def mask_image(mask: np.ndarray) -> Image.Image:
    """bool [H, W] -> a black/white 8-bit PNG-ready image (255 = object)."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


def overlay(image_bytes: bytes, masks: np.ndarray, order: list[int],
            coords: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The photo with the best mask tinted over it, every mask outlined, the clicks and box.

    Args:
        image_bytes: the encoded photo that was segmented (decoded as the server does it:
            RGB, no EXIF rotation, so pixels line up with the masks).
        masks: bool [M, H, W]; ``order`` lists the indices to draw, best first (the best is
            drawn last, on top).
        coords / labels: the prompt (float32 [N, 2] pixels, int32 [N]); labels 2/3 draw the
            box, 1/0 green/red dots.
    """
    base = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"), dtype=np.float32)
    for rank, index in reversed(list(enumerate(order))):
        mask = masks[index]
        colour = np.array(MASK_COLOURS[rank % len(MASK_COLOURS)], dtype=np.float32)
        if rank == 0:  # the best mask is tinted; the other candidates are outlined only
            base[mask] = (1 - alpha) * base[mask] + alpha * colour
        edge = mask & ~_erode(mask)
        base[edge] = colour
    picture = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    radius = max(3, round(min(picture.size) / 100))
    corners = [tuple(c) for c, l in zip(coords.tolist(), labels.tolist()) if l in (2, 3)]
    if len(corners) == 2:
        draw.rectangle([corners[0], corners[1]], outline=(255, 255, 0), width=max(2, radius // 2))
    for (x, y), label in zip(coords.tolist(), labels.tolist()):
        if label in POINT_COLOURS:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                         fill=POINT_COLOURS[label], outline=(255, 255, 255), width=1)
    return picture


def _erode(mask: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion (4-neighbourhood), for drawing outlines."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def draw_prompts(frame: np.ndarray, prompts, colours: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: ``frame`` with a tracking request's prompts drawn on it.

    Args:
        frame: uint8 [H, W, 3] RGB (e.g. the frame with its masks tinted).
        prompts: ``client.sam2.track`` ``Point``s (a dot in the object's colour, ringed green
            for foreground, red for background) and ``Box``es (a rectangle in the object's
            colour), coordinates in pixels of the frame.
        colours: float or uint8 [K, 3] RGB, the object's colour is ``colours[object_id % K]``
            (the colours its mask is tinted with).
    """
    if not prompts:
        return frame
    picture = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(picture)
    radius = max(3, round(min(picture.size) / 80))
    for prompt in prompts:
        colour = tuple(int(c) for c in colours[int(prompt.object_id) % len(colours)])
        if hasattr(prompt, "x0"):
            draw.rectangle([(prompt.x0, prompt.y0), (prompt.x1, prompt.y1)], outline=colour,
                           width=max(2, radius // 2))
        else:
            ring = POINT_COLOURS.get(int(prompt.label), (255, 255, 255))
            draw.ellipse([prompt.x - radius, prompt.y - radius, prompt.x + radius, prompt.y + radius],
                         fill=colour, outline=ring, width=max(2, radius // 2))
    return np.asarray(picture)
