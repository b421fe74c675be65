"""ClipClient: classify and embed images and texts with the CLIP models on any Triton.

Models called (written by ``tritonlens export clip``): ``clip_classify`` (image bytes ->
label probabilities, top-k through Triton's classification extension),
``clip_embed_image`` (image bytes -> unit-norm FP32 [D]), ``clip_embed_text``
(text -> unit-norm FP32 [D]) and ``clip_rank`` (images + candidate texts given in the
request -> probabilities over the candidates; see :mod:`tritonlens.client.clip.rank`).

Example::

    client = ClipClient("127.0.0.1:8001")
    result = client.classify("cat.jpg", top_k=5)
    print(result.labels[0].label, result.labels[0].score)
"""

from __future__ import annotations

import re
from contextlib import closing
from typing import Callable, Iterator, Sequence

import numpy as np

from tritonlens.client.base import InferenceError, TritonClient, TritonLensError
# Re-exported: the shared client helpers were first written for CLIP and are still
# imported from here.
from tritonlens.client.common import (Classification, ImageLike, Label, ProgressBar,  # noqa: F401
                                      bytes_tensor, chunk_bounds, classify_image, imap_concurrent,
                                      map_concurrent, parse_classification, read_image)
from tritonlens.serve.parameters import WEIGHTS_PARAMETER

# clip_preprocess / clip_tokenize name a refused image or text by its position in the request.
_ITEM_IN_REQUEST = re.compile(r"(?:image|text) (\d+) of the request")


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
        self.rank_model = f"{prefix}_rank"

    def classify(self, image: ImageLike, top_k: int = 5) -> Classification:
        """Top-k labels of one image (bytes or a path).

        Raises:
            ValueError: ``top_k`` < 1.
            TritonLensError: unreadable file, unreachable server, or the server refused the
                image (the message says why: corrupt, not an image, too large ...).
        """
        return classify_image(self, self.classify_model, image, top_k)

    def iter_batches(self, model: str, input_name: str, output: str, items: Sequence,
                     encode: Callable[[object], bytes], batch_size: int | None = None,
                     concurrency: int = 4, show_progress: bool = False,
                     names: Sequence[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Send ``items`` to ``model`` in chunks and yield ``(start, output rows)`` per chunk,
        in input order, each as soon as it (and every chunk before it) has arrived.

        Args:
            model, input_name, output: the model, its BYTES input [N, 1] and the output read.
            items: what to send; ``encode(item)`` gives one item's bytes (called in the
                worker threads, so files are read while earlier chunks are in flight).
            batch_size: items per request; default the model's ``max_batch_size`` as the
                server reports it (:meth:`TritonClient.max_batch_size`; a model with 0 gets
                everything in one request).
            concurrency: requests in flight at once (Triton's dynamic batcher and the
                model's instances work on them in parallel).
            show_progress: a progress bar (items done / total) on stderr.
            names: how errors name the items (default: their index).

        Raises:
            ValueError: ``batch_size`` < 1 or ``concurrency`` < 1.
            TritonLensError: the first chunk that failed, naming its items (and the item the
                server refused, when it says which); chunks not yet sent are cancelled.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if batch_size is None:
            batch_size = self.max_batch_size(model) or max(1, len(items))
        bounds = chunk_bounds(len(items), batch_size)

        def name(i: int) -> str:
            return names[i] if names is not None else f"#{i}"

        def send(bound: tuple[int, int]) -> np.ndarray:
            start, stop = bound
            try:
                data = bytes_tensor([encode(item) for item in items[start:stop]])
                return self.infer(model, {input_name: data}, outputs=[output]).as_numpy(output)
            except TritonLensError as err:
                where = f"items {start}-{stop - 1} of {len(items)}"
                found = _ITEM_IN_REQUEST.search(str(err))
                if found and start + int(found.group(1)) < stop:
                    where += f", the server refused item {start + int(found.group(1))} " \
                             f"({name(start + int(found.group(1)))})"
                else:
                    where += f" ({name(start)}{' ...' if stop - start > 1 else ''})"
                message = f"{where}: {err}"
                if isinstance(err, InferenceError):
                    raise InferenceError(message, err.status) from None
                raise type(err)(message) from None

        with ProgressBar(show_progress and len(items) > 0, len(items), model) as bar:
            with closing(imap_concurrent(send, bounds, concurrency)) as results:
                for (start, stop), result in zip(bounds, results):
                    if isinstance(result, TritonLensError):
                        raise result
                    bar.advance(stop - start)
                    yield start, result

    def _collect(self, model: str, output: str, batches: Iterator[tuple[int, np.ndarray]]
                 ) -> np.ndarray:
        """The rows of :meth:`iter_batches` as one FP32 [N, D] array; (0, D) for no items,
        D the model's output size from its config."""
        parts = [rows for _, rows in batches]
        if parts:
            return np.concatenate(parts)
        return np.zeros((0, self.output_size(model, output)), np.float32)

    def output_size(self, model: str, output: str) -> int:
        """The last dimension of ``model``'s ``output`` as its config declares it (D of an
        embedding, C of the probabilities); -1 when it is variable."""
        config = self.connection.get_model_config(model)
        outputs = config.config.output if self.protocol == "grpc" else config.get("output", [])
        for entry in outputs:
            entry_name = entry.name if self.protocol == "grpc" else entry["name"]
            if entry_name == output:
                dims = list(entry.dims if self.protocol == "grpc" else entry["dims"])
                return int(dims[-1])
        raise TritonLensError(f"{model} has no output {output!r}")

    def probabilities(self, images: Sequence[ImageLike], batch_size: int | None = None,
                      concurrency: int = 4, show_progress: bool = False) -> np.ndarray:
        """FP32 [N, C]: label probabilities of N images (bytes or paths), in input order.

        Sent in chunks of ``batch_size`` images (default: clip_classify's max_batch_size as
        the server reports it), ``concurrency`` requests in flight; see :meth:`iter_batches`
        for the arguments and errors.
        """
        return self._collect(self.classify_model, "probabilities", self.iter_batches(
            self.classify_model, "image", "probabilities", images, read_image, batch_size,
            concurrency, show_progress, _image_names(images)))

    def iter_embed_images(self, images: Sequence[ImageLike], batch_size: int | None = None,
                          concurrency: int = 4, show_progress: bool = False
                          ) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, FP32 [n, D])`` per chunk of images, in order, as the chunks arrive; see
        :meth:`embed_images`."""
        return self.iter_batches(self.embed_image_model, "image", "embedding", images,
                                 read_image, batch_size, concurrency, show_progress,
                                 _image_names(images))

    def iter_embed_texts(self, texts: Sequence[str], batch_size: int | None = None,
                         concurrency: int = 4, show_progress: bool = False
                         ) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, FP32 [n, D])`` per chunk of texts, in order, as the chunks arrive; see
        :meth:`embed_texts`."""
        return self.iter_batches(self.embed_text_model, "text", "embedding", texts, _utf8,
                                 batch_size, concurrency, show_progress,
                                 [repr(t[:40]) for t in texts])

    def embed_images(self, images: Sequence[ImageLike], batch_size: int | None = None,
                     concurrency: int = 4, show_progress: bool = False) -> np.ndarray:
        """FP32 [N, D]: unit-norm image embeddings of N images (bytes or paths), in input
        order; (0, D) for no images.

        Sent in chunks of ``batch_size`` images (default: clip_embed_image's max_batch_size
        as the server reports it), ``concurrency`` requests in flight; see
        :meth:`iter_batches` for the arguments and errors (one bad image fails its chunk,
        and the error names it).
        """
        return self._collect(self.embed_image_model, "embedding", self.iter_embed_images(
            images, batch_size, concurrency, show_progress))

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None,
                    concurrency: int = 4, show_progress: bool = False) -> np.ndarray:
        """FP32 [N, D]: unit-norm text embeddings of N texts, in input order; (0, D) for none.

        Sent in chunks of ``batch_size`` texts (default: clip_embed_text's max_batch_size as
        the server reports it, twice the image models'), ``concurrency`` requests in flight;
        see :meth:`iter_batches` for the arguments and errors.
        """
        return self._collect(self.embed_text_model, "embedding", self.iter_embed_texts(
            texts, batch_size, concurrency, show_progress))

    def rank(self, images: Sequence[ImageLike], texts: Sequence[str],
             templates: Sequence[str] | None = None, batch_size: int | None = None,
             concurrency: int = 4, show_progress: bool = False) -> np.ndarray:
        """FP32 [M, N]: per image (bytes or a path, in input order), the probabilities over
        the N candidate ``texts`` (columns in their order), zero-shot at request time with
        ``clip_rank``: softmax of the exported logit scale x cosine, as open_clip's
        zero-shot classification (with ``templates``, e.g. ``["a photo of a {}."]``, each
        candidate's prompts averaged as ``build_zero_shot_classifier`` does). (0, N) for no
        images.

        Images go in chunks of ``batch_size`` (default: clip_rank's ``max_images``, the
        image models' max_batch_size), ``concurrency`` requests in flight, each with all the
        texts; the server's response cache encodes every text once. See
        :func:`tritonlens.client.clip.rank.iter_rank` for the arguments.

        Raises:
            ValueError: ``concurrency`` or ``batch_size`` < 1.
            TritonLensError: the first image that failed, named (path or ``#i``); an
                InferenceError (status INVALID_ARGUMENT / 400) for bad input: no texts, too
                many, an over-long one, a template without ``{}``, a bad image, the message
                naming it.
        """
        from tritonlens.client.clip.rank import iter_rank

        rows = []
        for name, row in zip(_image_names(images), iter_rank(
                self, images, texts, templates, batch_size, concurrency, show_progress)):
            if isinstance(row, InferenceError):
                raise InferenceError(f"image {name}: {row}", row.status) from None
            if isinstance(row, TritonLensError):
                raise type(row)(f"image {name}: {row}") from None
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, len(texts)), np.float32)

    def weights(self) -> str:
        """Where the served image encoder's weights came from: "random", a tag or a path."""
        return self.model_parameter(f"{self.prefix}_image_encoder", WEIGHTS_PARAMETER)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def _image_names(images: Sequence[ImageLike]) -> list[str]:
    """How errors name images: the path, or '#i' for bytes."""
    return [f"#{i}" if isinstance(image, bytes) else str(image) for i, image in enumerate(images)]
