"""ClipClient: classify and embed images and texts with the CLIP models on any Triton.

Models called (written by ``tritonlens export clip``): ``clip_classify`` (image bytes ->
label probabilities, top-k through Triton's classification extension),
``clip_embed_image`` (image bytes -> unit-norm FP32 [D]) and ``clip_embed_text``
(text -> unit-norm FP32 [D]).

Example::

    client = ClipClient("127.0.0.1:8001")
    result = client.classify("cat.jpg", top_k=5)
    print(result.labels[0].label, result.labels[0].score)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

from tritonlens.client.base import TritonClient, TritonLensError

ImageLike = bytes | str | os.PathLike
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Label:
    """One entry of a top-k answer: the label, its index in labels.txt, its probability."""

    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Classification:
    """Top-k labels of one image, best first. ``source`` names the image (path or '#i')."""

    source: str
    labels: list[Label]


def read_image(image: ImageLike) -> bytes:
    """The encoded bytes of an image given as bytes or a file path.

    Raises:
        TritonLensError: the file does not exist or cannot be read.
    """
    if isinstance(image, bytes):
        return image
    try:
        return Path(image).read_bytes()
    except OSError as err:
        raise TritonLensError(f"cannot read image file {image}: {err.strerror or err}") from None


def bytes_tensor(items: Sequence[bytes]) -> np.ndarray:
    """BYTES input of shape [N, 1] (object array), the layout every tritonlens model takes."""
    array = np.empty((len(items), 1), dtype=np.object_)
    for i, item in enumerate(items):
        array[i, 0] = item
    return array


def parse_classification(entries: np.ndarray) -> list[Label]:
    """Triton classification strings ``b"score:index:label"`` -> Labels, best first."""
    labels = []
    for entry in entries.reshape(-1):
        text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
        score, index, label = text.split(":", 2)
        labels.append(Label(label=label, index=int(index), score=float(score)))
    return labels


def map_concurrent(fn: Callable[[T], R], items: Iterable[T], concurrency: int = 4,
                   on_done: Callable[[], None] | None = None) -> list[R | TritonLensError]:
    """``fn`` over ``items`` with ``concurrency`` requests in flight, results in order.

    A TritonLensError of one item is returned in its place (not raised), so one bad image
    does not stop the others; ``on_done`` is called after each item (progress bars).
    """
    def guarded(item):
        try:
            return fn(item)
        except TritonLensError as err:
            return err
        finally:
            if on_done:
                on_done()

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(guarded, items))


class ClipClient(TritonClient):
    """Classify and embed with the served CLIP models (see the module docstring).

    Args:
        url, protocol, timeout: as :class:`TritonClient`.
        prefix: the export's model-name prefix (``clip`` unless exported with ``--prefix``,
            e.g. ``clip_int8`` for an int8 variant served beside the fp32 one).
    """

    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout: float = 120.0,
                 prefix: str = "clip"):
        super().__init__(url, protocol, timeout)
        self.prefix = prefix
        self.classify_model = f"{prefix}_classify"
        self.embed_image_model = f"{prefix}_embed_image"
        self.embed_text_model = f"{prefix}_embed_text"

    def classify(self, image: ImageLike, top_k: int = 5) -> Classification:
        """Top-k labels of one image (bytes or a path).

        Raises:
            ValueError: ``top_k`` < 1.
            TritonLensError: unreadable file, unreachable server, or the server refused the
                image (the message says why: corrupt, not an image, too large ...).
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        result = self.infer(self.classify_model, {"image": bytes_tensor([read_image(image)])},
                            outputs=["probabilities"], class_count=top_k)
        source = "#0" if isinstance(image, bytes) else str(image)
        return Classification(source, parse_classification(result.as_numpy("probabilities")[0]))

    def probabilities(self, images: Sequence[ImageLike]) -> np.ndarray:
        """FP32 [N, C]: label probabilities of N images, sent as one batched request."""
        result = self.infer(self.classify_model,
                            {"image": bytes_tensor([read_image(i) for i in images])},
                            outputs=["probabilities"])
        return result.as_numpy("probabilities")

    def embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """FP32 [N, D]: unit-norm image embeddings, sent as one batched request."""
        result = self.infer(self.embed_image_model,
                            {"image": bytes_tensor([read_image(i) for i in images])},
                            outputs=["embedding"])
        return result.as_numpy("embedding")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """FP32 [N, D]: unit-norm text embeddings, sent as one batched request."""
        result = self.infer(self.embed_text_model,
                            {"text": bytes_tensor([t.encode("utf-8") for t in texts])},
                            outputs=["embedding"])
        return result.as_numpy("embedding")

    def weights(self) -> str:
        """Where the served image encoder's weights came from: "random", a tag or a path."""
        return self.model_parameter(f"{self.prefix}_image_encoder", "tritonlens.weights")
