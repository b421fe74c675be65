"""What the model families' clients share: images as request tensors, Triton's
classification answers as typed labels, and requests sent concurrently in input order.

``ClipClient``, ``Sam2Client`` and third-party families' clients (``TimmClient`` in
``examples/tritonlens-timm``) build on these and on :class:`~tritonlens.client.base.TritonClient`.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

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


def imap_concurrent(fn: Callable[[T], R], items: Iterable[T], concurrency: int = 4,
                    on_done: Callable[[], None] | None = None) -> Iterator[R | TritonLensError]:
    """``fn`` over ``items`` with at most ``concurrency`` calls in flight, yielded in input
    order, each as soon as it and the ones before it are done (results stream as they come).

    At most ``2 * concurrency`` items are taken from ``items`` ahead of the consumer, and
    closing the generator early cancels those not started. A TritonLensError of one item is
    yielded in its place (not raised), so one bad image does not stop the others;
    ``on_done`` is called after each item (progress bars).
    """
    def guarded(item):
        try:
            return fn(item)
        except TritonLensError as err:
            return err
        finally:
            if on_done:
                on_done()

    workers = max(1, concurrency)
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(guarded, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def map_concurrent(fn: Callable[[T], R], items: Iterable[T], concurrency: int = 4,
                   on_done: Callable[[], None] | None = None) -> list[R | TritonLensError]:
    """:func:`imap_concurrent` collected into a list (input order)."""
    return list(imap_concurrent(fn, items, concurrency, on_done))


def chunk_bounds(count: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(count)`` in chunks of at most ``size``.

    Raises:
        ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    return [(start, min(start + size, count)) for start in range(0, count, size)]


class ProgressBar:
    """A rich progress bar on stderr (transient), or nothing when ``enabled`` is false or
    stderr is not a terminal.

    Standard output is routed above the bar only when it is a terminal itself, so results
    piped elsewhere (``--json | ...``) never end up on stderr. ``advance`` is thread-safe.
    """

    def __init__(self, enabled: bool, total: int, description: str):
        self.progress = None
        if enabled and sys.stderr.isatty():  # a log or a pipe gets no bar (rich leaves blank lines)
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True,
                                     redirect_stdout=sys.stdout.isatty())
            self.task = self.progress.add_task("", total=total)

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def advance(self, n: int) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()


def classify_image(client: TritonClient, model: str, image: ImageLike, top_k: int,
                   output: str = "probabilities") -> Classification:
    """Top-k labels of one image (bytes or a path) from ``model``, whose ``output`` has a
    label file: Triton's classification extension answers ``class_count=top_k`` entries.

    Raises:
        ValueError: ``top_k`` < 1.
        TritonLensError: unreadable file, unreachable server, or the server refused the
            image (the message says why: corrupt, not an image, too large ...).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    result = client.infer(model, {"image": bytes_tensor([read_image(image)])}, outputs=[output],
                          class_count=top_k)
    source = "#0" if isinstance(image, bytes) else str(image)
    return Classification(source, parse_classification(result.as_numpy(output)[0]))
