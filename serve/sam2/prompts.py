"""SAM 2 prompts: one vocabulary and one validator for images (``sam2_segment``,
``sam2_decode``) and videos (``sam2_track``).

A prompt is a list of points in pixels of the image/frame, each with a label and (video
only) the client's object ID:

========= ======================================================================
label     meaning (SAM 2's prompt encoder)
========= ======================================================================
1         foreground click
0         background click
2 and 3   a box: 2 its top-left corner (x0, y0), 3 its bottom-right (x1, y1)
========= ======================================================================

Rules (the same for both paths; :func:`group_prompts` checks them and raises
:class:`PromptError` naming the first broken one):

* ``point_coords`` FP32 [P, 2] (x, y), ``point_labels`` INT32 [P], ``point_object_ids``
  INT32 [P] (optional: absent means every point belongs to object ``DEFAULT_OBJECT_ID``);
* coordinates finite and inside the frame: 0 <= x <= width, 0 <= y <= height;
* labels 0-3; per object at most one box, given as exactly one corner 2 and one corner 3
  with x0 <= x1 and y0 <= y1; the box is moved before the object's clicks, where SAM 2's
  predictors put it (``SAM2ImagePredictor._prep_prompts`` + ``predict``; the video
  predictor's ``add_new_points_or_box``);
* the limits below.

The limits exist because a prompt's cost is not bounded by anything else: each point is a
token of the prompt decoder's two-way transformer, whose attention memory grows with the
square of the token count (measured on the 256 px test export: 6000 points took the decoder
from 765 MB to 3.1 GB resident, and 20000 points got the stub OOM-killed and tritonserver
with it), and each object of a video stream runs memory attention, the mask decoder and the
memory encoder on every frame and keeps its own memory bank.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from tritonlens.serve.errors import RequestError

BACKGROUND, FOREGROUND, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3
LABELS = {BACKGROUND: "background click", FOREGROUND: "foreground click",
          BOX_TOP_LEFT: "box top-left", BOX_BOTTOM_RIGHT: "box bottom-right"}
# Points of one object in one request (box corners included). Interactive SAM use adds a
# handful of clicks (SAM's training simulates 8-11 correction rounds); 64 leaves ample room
# while keeping the decoder's attention small (64 + 2 tokens).
MAX_POINTS_PER_OBJECT = 64
# Objects prompted in one video request, and objects tracked by one stream. Each tracked
# object costs one memory-attention + mask-decoder + memory-encoder pass per frame and a
# memory bank (about 5 MB at 1024 px): 32 per stream keeps one frame's work bounded.
MAX_OBJECTS_PER_REQUEST = 16
MAX_OBJECTS_PER_STREAM = 32
# The object a point belongs to when a video request sends no point_object_ids.
DEFAULT_OBJECT_ID = 1


class PromptError(RequestError):
    """Prompts SAM 2 cannot use (shape, label, coordinate, box, limit); the message is sent
    back to the client as INVALID_ARG."""


def group_prompts(coords: np.ndarray | None, labels: np.ndarray | None,
                  object_ids: np.ndarray | None, frame_size: tuple[int, int], *,
                  image: bool = False, max_objects: int = MAX_OBJECTS_PER_REQUEST,
                  ) -> "OrderedDict[int, tuple[np.ndarray, np.ndarray]]":
    """Check one request's prompts and group them by object (rules in the module docstring).

    Args:
        coords: FP32 [P, 2] (x, y) pixels, or None / P = 0 for no prompt.
        labels: INT32 [P] (module docstring's table).
        object_ids: INT32 [P], the client's object IDs, or None: all ``DEFAULT_OBJECT_ID``.
        frame_size: (height, width) in pixels of the image or frame the pixels refer to.
        image: the single-image path (``sam2_prompts``): at least one point is required
            and every point belongs to one object (``object_ids`` must be None).
        max_objects: most objects one request may prompt.

    Returns:
        object ID -> (coords float32 [P_k, 2], labels int32 [P_k]) with the box corners
        first (2 then 3) and the clicks after them in the order given; objects in the order
        of their first point. Empty when there is no prompt (video path only).

    Raises:
        PromptError: naming the first rule broken.
    """
    height, width = (int(v) for v in frame_size)
    what = "image" if image else "frame"
    if height <= 0 or width <= 0:
        raise PromptError(f"the {what} size must be a positive (height, width), not "
                          f"({height}, {width})")
    given = [a is not None and np.asarray(a).size > 0 for a in (coords, labels)]
    if not any(given):
        if image:
            raise PromptError("no prompt: give at least one point (label 1 foreground, 0 "
                              "background) or a box (two corners labelled 2 and 3)")
        if object_ids is not None and np.asarray(object_ids).size:
            raise PromptError("point_object_ids given without point_coords and point_labels")
        return OrderedDict()
    if not all(given):
        raise PromptError("point_coords and point_labels go together")
    coords = np.asarray(coords, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise PromptError(f"point_coords must be [P, 2], not {list(coords.shape)}")
    n = len(coords)
    # Before any per-point work: a huge request is refused in O(1).
    limit = MAX_POINTS_PER_OBJECT * (1 if image else max_objects)
    if n > limit:
        raise PromptError(
            f"{n} points in one request: at most {MAX_POINTS_PER_OBJECT} points per object"
            + ("" if image else f" and {max_objects} objects per request") + " (box corners "
            "count as points; every point is a token of the prompt decoder)")
    if len(labels) != n:
        raise PromptError(f"{n} point(s) in point_coords but {len(labels)} label(s) in "
                          "point_labels")
    if object_ids is None or np.asarray(object_ids).size == 0:
        object_ids = np.full(n, DEFAULT_OBJECT_ID, np.int64)
    elif image:
        raise PromptError("point_object_ids is for video tracking: an image prompt is one object")
    object_ids = np.asarray(object_ids).reshape(-1)
    if len(object_ids) != n:
        raise PromptError(f"{n} point(s) in point_coords but {len(object_ids)} ID(s) in "
                          "point_object_ids")
    bad = np.flatnonzero(~np.isin(labels, list(LABELS)))
    if bad.size:
        raise PromptError(f"point label {int(labels[bad[0]])} is not one of 0 (background), "
                          "1 (foreground), 2 and 3 (box corners)")
    finite = np.isfinite(coords).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise PromptError(f"point {i} has a non-finite coordinate ({coords[i, 0]}, {coords[i, 1]})")
    x, y = coords[:, 0], coords[:, 1]
    outside = (x < 0) | (x > width) | (y < 0) | (y > height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise PromptError(f"point {i} ({x[i]:g}, {y[i]:g}) is outside the {width}x{height} "
                          f"{what} (x must be in [0, {width}], y in [0, {height}])")
    objects = list(dict.fromkeys(object_ids.tolist()))
    if len(objects) > max_objects:
        raise PromptError(f"{len(objects)} objects in one request: at most {max_objects}")
    grouped: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
    for obj in objects:
        rows = np.flatnonzero(object_ids == obj)
        name = "the prompt" if image else f"object {obj}"
        if len(rows) > MAX_POINTS_PER_OBJECT:
            raise PromptError(f"{name} has {len(rows)} points: at most "
                              f"{MAX_POINTS_PER_OBJECT} per object (box corners included)")
        obj_labels = labels[rows].astype(np.int32)
        tl = rows[obj_labels == BOX_TOP_LEFT]
        br = rows[obj_labels == BOX_BOTTOM_RIGHT]
        if len(tl) + len(br) == 1:
            raise PromptError(f"{name}: a lone box corner (label {int(labels[(tl if len(tl) else br)[0]])})"
                              ": a box is two points, label 2 (x0, y0) and label 3 (x1, y1)")
        if len(tl) > 1 or len(br) > 1:
            raise PromptError(f"{name}: more than one box: SAM 2 takes one box per object")
        if len(tl) == 1:
            (x0, y0), (x1, y1) = coords[tl[0]], coords[br[0]]
            if x0 > x1 or y0 > y1:
                raise PromptError(f"{name}: the box's top-left corner ({x0:g}, {y0:g}) is not "
                                  f"above and left of its bottom-right corner ({x1:g}, {y1:g}): "
                                  "a box needs x0 <= x1 and y0 <= y1")
        clicks = rows[obj_labels <= FOREGROUND]
        order = np.concatenate([tl, br, clicks])
        grouped[int(obj)] = (coords[order].copy(), labels[order].astype(np.int32))
    return grouped


def image_prompt(coords: np.ndarray | None, labels: np.ndarray | None,
                 orig_size: np.ndarray | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The single-image path (``sam2_prompts``): one object's points, box first.

    Args:
        coords: FP32 [N, 2] pixels; labels: INT32 [N]; orig_size: (height, width).

    Returns: (coords float32 [N, 2], labels int32 [N]) with the box corners first.

    Raises:
        PromptError: as :func:`group_prompts` (``image=True``).
    """
    size = np.asarray(orig_size).reshape(-1)
    if size.size != 2:
        raise PromptError(f"orig_size must be (height, width), not {size.tolist()}")
    (obj,) = group_prompts(coords, labels, None, (int(size[0]), int(size[1])), image=True).values()
    return obj


def decoder_prompt(coords: np.ndarray | None, labels: np.ndarray | None,
                   orig_size: np.ndarray | tuple[int, int], multimask: np.ndarray | None,
                   mask: np.ndarray | None, mask_size: int) -> dict[str, np.ndarray]:
    """What ``sam2_prompts`` hands the prompt decoder: the checked prompt of one image and
    the optional inputs' defaults.

    Args:
        coords / labels / orig_size: as :func:`image_prompt`.
        multimask: BOOL [1] or None (default true: three masks).
        mask: FP32 [1, L, L], low-res logits of an earlier answer, or None.
        mask_size: L, the side of ``mask`` (4 x the image embedding's side).

    Returns:
        ``checked_point_coords`` FP32 [N, 2] and ``checked_point_labels`` INT32 [N] (the box
        corners first), ``checked_mask_input`` FP32 [1, L, L] (zeros when absent),
        ``checked_has_mask_input`` FP32 [1] (1 when a mask was given),
        ``checked_multimask_output`` BOOL [1].

    Raises:
        PromptError: as :func:`image_prompt`, or a mask with non-finite values.
    """
    coords, labels = image_prompt(coords, labels, orig_size)
    multimask = np.array([True]) if multimask is None else multimask.reshape(1).astype(bool)
    has_mask = np.array([0.0 if mask is None else 1.0], dtype=np.float32)
    if mask is None:
        mask = np.zeros((1, mask_size, mask_size), dtype=np.float32)
    elif not np.all(np.isfinite(mask)):
        raise PromptError("mask_input has non-finite values")
    return {"checked_point_coords": coords, "checked_point_labels": labels,
            "checked_mask_input": mask, "checked_has_mask_input": has_mask,
            "checked_multimask_output": multimask}
