"""TimmClient: top-k classification and embeddings from the served timm models.

Example::

    client = TimmClient("127.0.0.1:8001")
    result = client.classify("cat.jpg", top_k=5)          # Classification(source, labels)
    vectors = client.embed(["a.jpg", "b.png"])            # FP32 [2, F], pooled features
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tritonlens.client.base import TritonClient
from tritonlens.client.common import (Classification, ImageLike, bytes_tensor, chunk_bounds,
                                      classify_image, map_concurrent, read_image)
from tritonlens.serve.parameters import WEIGHTS_PARAMETER


class TimmClient(TritonClient):
    """Calls ``<prefix>_classify`` and ``<prefix>_embed`` (``tritonlens export timm``).

    Args:
        url, protocol, timeout: as :class:`~tritonlens.client.base.TritonClient`.
        prefix: the export's model-name prefix (``timm`` unless exported with ``--prefix``).
    """

    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout: float = 120.0,
                 prefix: str = "timm"):
        super().__init__(url, protocol, timeout)
        self.prefix = prefix
        self.classify_model = f"{prefix}_classify"
        self.embed_model = f"{prefix}_embed"

    def classify(self, image: ImageLike, top_k: int = 5) -> Classification:
        """Top-k classes of one image (bytes or a path), from Triton's classification extension.

        Raises:
            ValueError: ``top_k`` < 1.
            TritonLensError: unreadable file, unreachable server, or the server refused the image.
        """
        return classify_image(self, self.classify_model, image, top_k)

    def embed(self, images: Sequence[ImageLike], batch_size: int | None = None,
              concurrency: int = 4) -> np.ndarray:
        """FP32 [N, F]: the pooled features of each image, in input order (not normalised).

        Images are sent in chunks of the model's ``max_batch_size`` (``batch_size``
        overrides), ``concurrency`` chunks in flight; an empty input gives [0, F].

        Raises:
            TritonLensError: as :meth:`classify`; the first failed chunk's error is raised.
        """
        data = [read_image(image) for image in images]
        size = batch_size or max(1, self.max_batch_size(self.embed_model))

        def send(bound: tuple[int, int]) -> np.ndarray:
            result = self.infer(self.embed_model, {"image": bytes_tensor(data[bound[0]:bound[1]])},
                                outputs=["embedding"])
            return result.as_numpy("embedding")

        chunks = map_concurrent(send, chunk_bounds(len(data), size), concurrency)
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
        if not chunks:
            return np.zeros((0, self.output_size()), np.float32)
        return np.concatenate(chunks)

    def output_size(self) -> int:
        """F, the embedding size, from the served model's metadata."""
        metadata = self.connection.get_model_metadata(self.embed_model)
        outputs = metadata.outputs if self.protocol == "grpc" else metadata["outputs"]
        dims = outputs[0].shape if self.protocol == "grpc" else outputs[0]["shape"]
        return int(dims[-1])

    def weights(self) -> str:
        """Where the served weights came from: "random" or the checkpoint path."""
        return self.model_parameter(f"{self.prefix}_model", WEIGHTS_PARAMETER)
