"""Track objects through videos with SAM 2 on any Triton: frames are streamed one request at
a time on a Triton sequence to the ``sam2_track`` ensemble (contract in docs/sam2-video.md).

Example::

    tracker = Sam2VideoClient("127.0.0.1:8001")
    prompts = {0: [Point(210, 120, object_id=1)], 30: [Box(10, 40, 90, 160, object_id=2)]}
    for result in tracker.track("clip.mp4", prompts):
        print(result.frame_index, result.object_ids, result.masks.shape)   # bool [K, H, W]

    # several videos at once (one sequence each; the server batches their frames in the
    # image encoder):
    results = tracker.track_many({"a.mp4": prompts_a, "b.mp4": prompts_b})

Frames can be a video file (decoded with PyAV), a folder of images, or any iterable of
encoded frames (bytes) or uint8 [H, W, 3] arrays (encoded as JPEG before sending).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from tritonlens.client.base import TritonLensError
from tritonlens.client.sam2.video import encode_frame, read_video
from tritonlens.client.sequences import SequenceClient, new_sequence_id, wire_sequence_id
from tritonlens.serve.sam2.names import STREAM_IDLE_SECONDS

ENSEMBLE = "sam2_track"
OUTPUTS = ("object_ids", "masks", "mask_logits", "object_scores", "frame_index")


@dataclass(frozen=True)
class Point:
    """A click in pixels of the frame: label 1 foreground, 0 background."""

    x: float
    y: float
    label: int = 1
    object_id: int = 1


@dataclass(frozen=True)
class Box:
    """A box in pixels of the frame (top-left x0, y0; bottom-right x1, y1)."""

    x0: float
    y0: float
    x1: float
    y1: float
    object_id: int = 1


@dataclass(frozen=True)
class TrackedFrame:
    """The tracker's result on one frame (K objects, H x W the frame's size).

    Attributes:
        frame_index: the frame's index in its video (0-based).
        object_ids: int32 [K], the client's object IDs, in the order they were added.
        masks: bool [K, H, W]; mask_logits: fp32 [K, H, W] (logits, > 0 is the mask).
        object_scores: fp32 [K], object-score logits (> 0: the object is visible).
        image: the frame as uint8 [H, W, 3] when the client decoded it (else None).
    """

    frame_index: int
    object_ids: np.ndarray
    masks: np.ndarray
    mask_logits: np.ndarray
    object_scores: np.ndarray
    image: np.ndarray | None = None


def prompt_arrays(prompts: Sequence[Point | Box]) -> dict[str, np.ndarray]:
    """Points and boxes -> the ensemble's ``point_coords`` [P, 2], ``point_labels`` [P]
    (boxes as two corners labelled 2 and 3) and ``point_object_ids`` [P]."""
    coords, labels, ids = [], [], []
    for p in prompts:
        if isinstance(p, Box):
            coords += [(p.x0, p.y0), (p.x1, p.y1)]
            labels += [2, 3]
            ids += [p.object_id] * 2
        else:
            coords.append((p.x, p.y))
            labels.append(int(p.label))
            ids.append(p.object_id)
    return {"point_coords": np.array(coords, np.float32).reshape(-1, 2),
            "point_labels": np.array(labels, np.int32),
            "point_object_ids": np.array(ids, np.int32)}


class Sam2VideoClient(SequenceClient):
    """Client of the ``sam2_track`` ensemble (see :class:`TritonClient` for url/protocol).

    Every frame carries the stream's correlation ID in the ``x-correlation-id`` header
    (:attr:`TritonClient.sequence_header`), so a proxy in front of several replicas
    (``tritonlens serve --replicas N``) sends all frames of a stream to one replica; a frame
    the server refuses gets an error that says why (:class:`SequenceClient`).
    """

    idle_parameter = STREAM_IDLE_SECONDS

    def track(self, video: str | Path | Iterable[np.ndarray | bytes],
              prompts: Mapping[int, Sequence[Point | Box]], *, sequence_id: int | str | None = None,
              model: str = ENSEMBLE, max_frames: int | None = None,
              keep_images: bool = False) -> Iterator[TrackedFrame]:
        """Stream ``video`` frame by frame; yields one :class:`TrackedFrame` per frame.

        Args:
            video: a video file, a folder of frames, or an iterable of frames.
            prompts: frame index -> points/boxes on that frame. A prompt for a new object ID
                starts tracking it; one for a tracked object corrects that frame.
            sequence_id: the Triton correlation ID, a uint64 in 1 .. 2**64 - 1 or a string
                (a fresh one when None).
            max_frames: stop after this many frames; prompts on later frames are refused.
            keep_images: attach the decoded frame to each result (for overlays).

        The first frame is sent with START and the last with END (the server then frees the
        stream's state). A frame that fails raises :class:`InferenceError`
        (:class:`StreamEvictedError` when the server no longer holds the stream).

        Raises:
            TritonLensError: prompts on a negative frame or one past ``max_frames`` (before
                anything is sent), or on frames past the video's end (after its last frame).
            ValueError: a bad ``sequence_id``.
        """
        prompted = sorted(f for f, p in prompts.items() if p)
        outside = [f for f in prompted if f < 0 or (max_frames is not None and f >= max_frames)]
        if outside:
            raise TritonLensError(f"prompts on frame(s) {outside}, but only frames 0 .. "
                                  f"{(max_frames or 0) - 1} are tracked (max_frames "
                                  f"{max_frames}); frame indices are 0-based")
        frames = read_video(video) if isinstance(video, (str, Path)) else iter(video)
        if max_frames is not None:
            frames = itertools.islice(frames, max_frames)
        sequence_id = new_sequence_id() if sequence_id is None else sequence_id
        wire_sequence_id(sequence_id, self.protocol)  # refuse a bad ID before any frame
        frames = _lookahead(frames)
        sent = 0
        for index, (frame, last) in enumerate(frames):
            inputs = {"image": np.array([encode_frame(frame)], dtype=np.object_),
                      "client_frame_index": np.array([index], np.int64)}
            if prompts.get(index):
                inputs.update(prompt_arrays(prompts[index]))
            # A failing frame raises InferenceError; the stream's state on the server is then
            # freed by the idle sweep (the tracker's stream_idle_seconds).
            result = self.infer(model, inputs, OUTPUTS, sequence_id=sequence_id,
                                sequence_start=index == 0, sequence_end=last)
            yield TrackedFrame(
                int(result.as_numpy("frame_index")[0]),
                result.as_numpy("object_ids"), result.as_numpy("masks"),
                result.as_numpy("mask_logits"), result.as_numpy("object_scores"),
                np.asarray(frame) if keep_images and not isinstance(frame, bytes) else None)
            sent = index + 1
        unused = [f for f in prompted if f >= sent]
        if unused:
            raise TritonLensError(f"prompts on frame(s) {unused} were never sent: the video "
                                  f"has only {sent} frame(s) (frame indices are 0-based)")

    def track_many(self, videos: Mapping[str, tuple], *, model: str = ENSEMBLE,
                   max_frames: int | None = None) -> dict[str, list[TrackedFrame]]:
        """Track several videos concurrently (one thread and one sequence each).

        Args:
            videos: name -> (video, prompts) as for :meth:`track`.

        Returns: name -> the list of per-frame results.
        """
        def run(item):
            name, (video, prompts) = item
            return name, list(self.track(video, prompts, model=model, max_frames=max_frames))

        with ThreadPoolExecutor(max_workers=max(1, len(videos))) as pool:
            return dict(pool.map(run, videos.items()))

    def track_live(self, streams: Mapping[str, tuple], **kwargs):
        """Track live sources (and files) in real time, several at once: a
        :class:`tritonlens.client.sam2.live.LiveTracking` over ``streams`` (name ->
        (source, prompts)); iterate it for ``LiveFrame`` results as masks come back."""
        from tritonlens.client.sam2.live import LiveTracking

        return LiveTracking(self, streams, **kwargs)


def _lookahead(items: Iterator) -> Iterator[tuple[object, bool]]:
    """(item, is_last) pairs."""
    try:
        current = next(items)
    except StopIteration:
        return
    for following in items:
        yield current, False
        current = following
    yield current, True
