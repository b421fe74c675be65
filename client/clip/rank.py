"""Zero-shot with the labels chosen at request time: the client side of ``clip_rank``.

``clip_rank`` takes queries of M encoded images and N candidate texts (optionally prompt
templates), BYTES [1, M] and [1, N] for one query, and answers FP32 [1, M, N] probabilities
(softmax of the exported logit scale x cosine, open_clip's zero-shot recipe) and INT32
[1, M, N] rankings; the server's response cache keeps each text's
embedding, so the same labels sent with every chunk of images are encoded once
(``tritonlens.serve.clip.rank`` has the recipe). :meth:`ClipClient.rank
<tritonlens.client.clip.ClipClient.rank>` and ``tritonlens classify --labels`` use these
functions.
"""

from __future__ import annotations

from contextlib import closing
from typing import Iterator, Sequence

import numpy as np

from tritonlens.client.base import ServerUnreachableError, TritonLensError
from tritonlens.client.common import (ImageLike, Label, ProgressBar, chunk_bounds,
                                      imap_concurrent, read_image)


def parse_labels(text: str) -> list[str]:
    """``--labels "a bee,a flower,a chart"`` -> the labels, stripped, in order.

    Raises:
        TritonLensError: no label, an empty one (``a,,b``), or one given twice.
    """
    labels = [label.strip() for label in text.split(",")]
    return check_labels(labels, "--labels")


def read_labels_file(path) -> list[str]:
    """The labels of a UTF-8 file, one per line (blank lines skipped), in order.

    Raises:
        TritonLensError: unreadable, not UTF-8, no label, or a label given twice.
    """
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TritonLensError(f"--labels-file {path}: {getattr(err, 'strerror', None) or err}") from None
    return check_labels([line.strip() for line in lines if line.strip()], f"--labels-file {path}")


def check_labels(labels: list[str], source: str) -> list[str]:
    """``labels`` unchanged when usable as candidates; else an error naming ``source``."""
    if not labels or labels == [""]:
        raise TritonLensError(f"{source}: no labels given")
    for index, label in enumerate(labels):
        if not label:
            raise TritonLensError(f"{source}: label {index + 1} is empty")
        if labels.index(label) != index:
            raise TritonLensError(f"{source}: label {label!r} is given twice")
    return labels


def top_labels(probabilities: np.ndarray, labels: Sequence[str], top_k: int) -> list[Label]:
    """The ``top_k`` most probable of one image's FP32 [N] probabilities, best first (ties
    in the labels' order), as :class:`~tritonlens.client.common.Label` (index: position in
    ``labels``)."""
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    return [Label(labels[i], int(i), float(probabilities[i])) for i in order]


def query_tensor(items: Sequence[bytes]) -> np.ndarray:
    """BYTES [1, n]: one query's images, texts or templates (clip_rank's inputs are [B, n],
    one row per query)."""
    array = np.empty((1, len(items)), dtype=np.object_)
    array[0, :] = list(items)
    return array


def iter_rank(client, images: Sequence[ImageLike], texts: Sequence[str],
              templates: Sequence[str] | None = None, batch_size: int | None = None,
              concurrency: int = 4, show_progress: bool = False,
              ) -> Iterator[np.ndarray | TritonLensError]:
    """Per image, in input order as the answers arrive: its FP32 [N] probabilities over
    ``texts``, or the TritonLensError that image got (one bad image fails alone).

    Args:
        client: a :class:`~tritonlens.client.clip.ClipClient` (its ``rank_model``).
        images: encoded images (bytes) or paths, read in the worker threads.
        texts: the N candidate texts, sent with every chunk (the server's response cache
            answers them after the first).
        templates: prompt templates with ``{}`` (averaged per candidate), or None.
        batch_size: images per request; default the model's ``max_images`` parameter.
        concurrency: requests in flight.
        show_progress: a progress bar (images done / total) on stderr.

    A chunk that fails (a bad image in it) is sent again image by image, so the others get
    their answers; an unreachable server fails every image of the chunk.

    Raises:
        ValueError: ``concurrency`` or ``batch_size`` < 1.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    model = client.rank_model
    if batch_size is None:
        batch_size = int(client.model_parameter(model, "max_images", "1"))
    bounds = chunk_bounds(len(images), batch_size)
    constant = {"text": query_tensor([t.encode("utf-8") for t in texts])}
    if templates is not None:
        constant["templates"] = query_tensor([t.encode("utf-8") for t in templates])

    def request(chunk: Sequence[ImageLike]) -> np.ndarray:
        data = query_tensor([read_image(image) for image in chunk])
        return client.infer(model, {"image": data, **constant},
                            outputs=["probabilities"]).as_numpy("probabilities")[0]

    def send(bound: tuple[int, int]) -> list[np.ndarray | TritonLensError]:
        start, stop = bound
        try:
            return list(request(images[start:stop]))
        except ServerUnreachableError as err:
            return [err] * (stop - start)
        except TritonLensError as err:
            if stop - start == 1:
                return [err]
        return [send((i, i + 1))[0] for i in range(start, stop)]

    with ProgressBar(show_progress and len(images) > 0, len(images), model) as bar:
        with closing(imap_concurrent(send, bounds, concurrency)) as results:
            for (start, stop), result in zip(bounds, results):
                if isinstance(result, TritonLensError):  # imap_concurrent's own catch
                    result = [result] * (stop - start)
                bar.advance(stop - start)
                yield from result


def print_ranked(client, files: Sequence, labels: Sequence[str], templates: Sequence[str] | None,
                 top_k: int, concurrency: int, as_json: bool, weights: str) -> int:
    """``tritonlens classify --labels``: rank ``files`` against ``labels`` with ``clip_rank``
    (chunks of its ``max_images``, ``concurrency`` in flight, a progress bar on stderr) and
    print each image's top-k in input order as they arrive, as ``classify`` without labels
    does: a table, or with ``as_json`` one JSON line (image, weights, labels); an image that
    failed is one error line on stderr and the others go on. Returns how many failed."""
    import json

    from tritonlens.client.common import Classification
    from tritonlens.client.options import classification_table, console, err_console

    failed = 0
    for image, row in zip(files, iter_rank(client, files, labels, templates,
                                           concurrency=concurrency, show_progress=True)):
        if isinstance(row, TritonLensError):
            failed += 1
            err_console.print(f"[bold red]error:[/] {image}: {row}", highlight=False)
            continue
        best = top_labels(row, labels, top_k)
        if as_json:
            print(json.dumps({"image": str(image), "weights": weights, "labels": [
                {"label": l.label, "index": l.index, "score": l.score} for l in best]}), flush=True)
        else:
            console.print(classification_table(Classification(str(image), best), str(image)))
    return failed
