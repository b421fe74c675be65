"""Sam2Client: segment images from point and box prompts with SAM 2 on any Triton.

Models called (written by ``tritonlens export sam2``):

* ``sam2_segment``: image bytes + prompts -> masks, in one call (encodes the image each time);
* ``sam2_embed_image`` then ``sam2_decode``: **encode once, prompt many times**. The image
  encoder (seconds on a CPU) runs once; each further prompt on the same image only runs the
  prompt decoder (milliseconds), with the features the client kept.

Example::

    client = Sam2Client("127.0.0.1:8001")
    result = client.segment("cat.jpg", points=[(220, 150)])          # one foreground click
    mask = result.masks[result.best]                                 # bool [H, W]

    features = client.embed_image("cat.jpg")                         # encode once ...
    for click in clicks:                                             # ... prompt many times
        result = client.decode(features, points=[click])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tritonlens.client.base import TritonClient
from tritonlens.client.common import ImageLike, bytes_tensor, read_image
from tritonlens.serve.parameters import WEIGHTS_PARAMETER

FOREGROUND, BACKGROUND, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 1, 0, 2, 3


@dataclass(frozen=True)
class Segmentation:
    """Masks for one prompt on one image.

    Attributes:
        masks: bool [M, H, W] at the original image size (M = 3 with multimask output,
            else 1).
        iou_scores: float32 [M], the model's predicted IoU of each mask.
        low_res_masks: float32 [M, L, L] logits clamped to [-32, 32] (L = image size / 4,
            256 at 1024 px); pass one as ``mask_input`` to :meth:`Sam2Client.decode` to refine.
    """

    masks: np.ndarray
    iou_scores: np.ndarray
    low_res_masks: np.ndarray

    @property
    def best(self) -> int:
        """Index of the mask with the highest predicted IoU."""
        return int(np.argmax(self.iou_scores))


@dataclass(frozen=True)
class ImageFeatures:
    """What the image encoder computed for one image (kept by the client to re-prompt).

    Attributes (S = exported image size, E = S / 16):
        image_embedding: float32 [1, 256, E, E].
        high_res_feats_0: float32 [1, 32, 4E, 4E].
        high_res_feats_1: float32 [1, 64, 2E, 2E].
        orig_size: int32 [2], (height, width) of the original image in pixels.
    """

    image_embedding: np.ndarray
    high_res_feats_0: np.ndarray
    high_res_feats_1: np.ndarray
    orig_size: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes sent with every decode call."""
        return sum(a.nbytes for a in (self.image_embedding, self.high_res_feats_0,
                                      self.high_res_feats_1, self.orig_size))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape [H, W] (1.0 when both
    are empty). Used to compare served masks with a reference (tests, ``bench/studies/profiles.py``)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def prompt_arrays(points: Sequence[Sequence[float]] = (), labels: Sequence[int] | None = None,
                  box: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points and an optional box -> ``point_coords`` float32 [N, 2], ``point_labels`` int32 [N].

    Args:
        points: (x, y) pairs in pixels of the original image.
        labels: one per point, 1 foreground / 0 background; default all foreground.
        box: (x0, y0, x1, y1) in pixels; sent first, as its two corners labelled 2 and 3,
            as SAM 2 does.

    Raises:
        ValueError: a point is not an (x, y) pair, a box not 4 numbers, or labels and points
            differ in number. (Whether prompts fit the image is checked by the server.)
    """
    coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if len(points) else \
        np.zeros((0, 2), np.float32)
    if len(points) and (np.asarray(points).ndim != 2 or np.asarray(points).shape[1] != 2):
        raise ValueError("points must be (x, y) pairs")
    labels_arr = (np.ones(len(coords), np.int32) if labels is None
                  else np.asarray(labels, dtype=np.int32).reshape(-1))
    if len(labels_arr) != len(coords):
        raise ValueError(f"{len(coords)} point(s) but {len(labels_arr)} label(s)")
    if box is not None:
        if len(box) != 4:
            raise ValueError("a box is 4 numbers: x0, y0, x1, y1")
        coords = np.concatenate([np.asarray(box, np.float32).reshape(2, 2), coords])
        labels_arr = np.concatenate([np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int32),
                                     labels_arr])
    return coords, labels_arr


class Sam2Client(TritonClient):
    """Segment with the served SAM 2 models (see the module docstring)."""

    segment_model = "sam2_segment"
    embed_model = "sam2_embed_image"
    decode_model = "sam2_decode"

    def segment(self, image: ImageLike, points: Sequence[Sequence[float]] = (),
                labels: Sequence[int] | None = None, box: Sequence[float] | None = None,
                multimask_output: bool = True) -> Segmentation:
        """Masks for one prompt on one image (bytes or a path), in one call (sam2_segment).

        Raises:
            ValueError: malformed prompts (see :func:`prompt_arrays`).
            TritonLensError: unreadable file, unreachable server, or the server refused
                the image or the prompt (the message says why).
        """
        coords, labels_arr = prompt_arrays(points, labels, box)
        result = self.infer(self.segment_model, {
            "image": bytes_tensor([read_image(image)]).reshape(1),
            "point_coords": coords, "point_labels": labels_arr,
            "multimask_output": np.array([multimask_output])})
        return _segmentation(result)

    def embed_image(self, image: ImageLike) -> ImageFeatures:
        """Run the image encoder once (sam2_embed_image) and keep its outputs.

        Raises:
            TritonLensError: as :meth:`segment`.
        """
        result = self.infer(self.embed_model, {"image": bytes_tensor([read_image(image)]).reshape(1)})
        return ImageFeatures(*(result.as_numpy(n) for n in (
            "image_embedding", "high_res_feats_0", "high_res_feats_1", "orig_size")))

    def decode(self, features: ImageFeatures, points: Sequence[Sequence[float]] = (),
               labels: Sequence[int] | None = None, box: Sequence[float] | None = None,
               multimask_output: bool = True,
               mask_input: np.ndarray | None = None) -> Segmentation:
        """Masks for one prompt on an image encoded earlier (sam2_decode; no re-encoding).

        Args:
            mask_input: float32 [L, L] or [1, L, L]: low-res logits of an earlier answer
                (``Segmentation.low_res_masks[i]``) to refine with the new prompt.

        Raises:
            ValueError, TritonLensError: as :meth:`segment`.
        """
        coords, labels_arr = prompt_arrays(points, labels, box)
        inputs = {"image_embedding": features.image_embedding,
                  "high_res_feats_0": features.high_res_feats_0,
                  "high_res_feats_1": features.high_res_feats_1,
                  "orig_size": features.orig_size, "point_coords": coords,
                  "point_labels": labels_arr, "multimask_output": np.array([multimask_output])}
        if mask_input is not None:
            mask = np.asarray(mask_input, dtype=np.float32)
            inputs["mask_input"] = mask.reshape(1, *mask.shape[-2:])
        return _segmentation(self.infer(self.decode_model, inputs))

    def weights(self) -> str:
        """Where the served image encoder's weights came from: "random" or a checkpoint."""
        return self.model_parameter("sam2_image_encoder", WEIGHTS_PARAMETER)


def _segmentation(result) -> Segmentation:
    return Segmentation(masks=result.as_numpy("masks"), iou_scores=result.as_numpy("iou_scores"),
                        low_res_masks=result.as_numpy("low_res_masks"))
