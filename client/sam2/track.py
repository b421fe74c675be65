"""Track objects through videos with SAM 2 on any Triton: frames are streamed one request at
a time on a Triton sequence to the ``sam2_track`` ensemble (contract in the README).

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

import io
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from tritonlens.client.base import REPLICA_HEADER, InferenceError, TritonClient, TritonLensError

ENSEMBLE = "sam2_track"
OUTPUTS = ("object_ids", "masks", "mask_logits", "object_scores", "frame_index")
# Triton's correlation IDs are uint64 (0 means "no sequence") or strings.
MAX_SEQUENCE_ID = 2 ** 64 - 1
# Triton's answer to a non-START frame of a sequence it does not hold (never started, or
# evicted after max_sequence_idle_microseconds, or the server restarted).
_TRITON_NO_SEQUENCE = "must specify the START flag"


class StreamEvictedError(InferenceError):
    """A frame for a stream the server no longer holds; start the stream again."""


class StreamReplicaLostError(StreamEvictedError):
    """Behind a proxy in front of several replicas: the replica that held the stream's state
    stopped (or failed during the frame), so the state is lost; start the stream again."""


class StreamMisroutedError(StreamEvictedError):
    """Behind a proxy in front of several replicas: the frame carried no correlation-ID
    header, so the proxy sent it to a replica that does not hold the stream."""


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


def encode_frame(frame: np.ndarray | bytes, quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (bytes pass through)."""
    if isinstance(frame, (bytes, bytearray)):
        return bytes(frame)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video file (PyAV), a folder of images (sorted by name) or a live source
    (every frame, ``tritonlens.client.sam2.live``) into RGB frames.

    Raises:
        TritonLensError: the path does not exist, or PyAV cannot decode it (a live source:
            ``LiveSourceError`` when it cannot be opened or is lost).
    """
    from tritonlens.client.sam2.live import LiveSource, is_live

    if is_live(path):
        source = LiveSource(path, realtime=False)
        try:
            yield from (frame.rgb(source.size) for frame in source.frames())
        finally:
            source.close()
        return
    path = Path(path)
    if path.is_dir():
        from PIL import Image

        for file in sorted(p for p in path.iterdir()
                           if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")):
            yield np.asarray(Image.open(file).convert("RGB"))
        return
    if not path.is_file():
        raise TritonLensError(f"no such video file or frame folder: {path}")
    try:
        import av
    except ImportError:
        raise TritonLensError("decoding video files needs PyAV: pip install 'tritonlens[video]'") from None
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as err:
        raise TritonLensError(f"cannot decode video {path}: {err}") from None


def wire_sequence_id(sequence_id: int | str, protocol: str) -> int | str:
    """A correlation ID as tritonclient sends it on ``protocol``.

    Numeric IDs are uint64 (1 .. 2**64 - 1). HTTP carries them as JSON numbers, exact at any
    size (Python's json and Triton's parser). tritonclient's gRPC request has only an int64
    field for them (``int64_param``), which refuses IDs >= 2**63; Triton reads that field
    back as uint64, so such IDs are sent as their two's-complement int64 (``id - 2**64``):
    the server sees the same ID over both protocols.

    Raises:
        ValueError: a number outside 1 .. 2**64 - 1, an empty string, or another type.
    """
    if isinstance(sequence_id, str):
        if not sequence_id:
            raise ValueError("a string sequence ID must not be empty")
        return sequence_id
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, (int, np.integer)):
        raise ValueError(f"a sequence ID is an integer or a string, not {sequence_id!r}")
    value = int(sequence_id)
    if not 0 < value <= MAX_SEQUENCE_ID:
        raise ValueError(f"a numeric sequence ID is a uint64 in 1 .. 2**64-1 (0 means no "
                         f"sequence), not {value}")
    return value - 2 ** 64 if protocol == "grpc" and value >= 2 ** 63 else value


def new_sequence_id() -> int:
    """A fresh random 53-bit numeric correlation ID (never 0; exact in JSON numbers)."""
    import os

    return (int.from_bytes(os.urandom(8), "big") >> 11) or 1


class Sam2VideoClient(TritonClient):
    """Client of the ``sam2_track`` ensemble (see :class:`TritonClient` for url/protocol).

    Every frame carries the stream's correlation ID in the ``x-correlation-id`` header
    (:attr:`TritonClient.sequence_header`), so a proxy in front of several replicas
    (``tritonlens serve --replicas N``) sends all frames of a stream to one replica. Behind
    tritonlens' proxy the client notes which replica took a stream's START (the proxy names
    it in the ``x-tritonlens-replica`` response header), so a frame refused because that
    replica stopped gets :class:`StreamReplicaLostError` naming it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._behind_proxy: bool | None = None  # learnt from the first probe
        self._stream_replicas: dict[str, str] = {}  # correlation ID -> replica of its START
        self._probe_channel = None

    def replica_for(self, sequence_id: int | str | None) -> str | None:
        """The replica (``host:port``) that tritonlens' proxy sends requests of
        ``sequence_id`` to now (None: no sequence header, round robin), found with a health
        request carrying the sequence header; None when the server is not behind
        tritonlens' proxy or does not answer."""
        if self._behind_proxy is False:
            return None
        headers = {self.sequence_header: str(sequence_id)} \
            if self.sequence_header and sequence_id not in (None, 0, "") else {}
        try:
            if self.protocol == "grpc":
                import grpc
                from tritonclient.grpc import service_pb2, service_pb2_grpc

                if self._probe_channel is None:
                    self._probe_channel = grpc.insecure_channel(self.url)
                stub = service_pb2_grpc.GRPCInferenceServiceStub(self._probe_channel)
                _, call = stub.ServerReady.with_call(service_pb2.ServerReadyRequest(),
                                                     metadata=list(headers.items()), timeout=10)
                replica = dict(call.initial_metadata()).get(REPLICA_HEADER)
            else:
                import urllib.request

                request = urllib.request.Request(f"http://{self.url}/v2/health/ready", headers=headers)
                with urllib.request.urlopen(request, timeout=10) as response:
                    replica = response.headers.get(REPLICA_HEADER)
        except Exception:  # noqa: BLE001 - only improves a message
            return None
        if self._behind_proxy is None:
            self._behind_proxy = replica is not None
        # "a, b": nginx tried a first and it failed; b answered.
        return replica.split(",")[-1].strip() if replica else None

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str] = (),
              class_count: int = 0, **kwargs):
        """:meth:`TritonClient.infer` with sequence IDs over their full uint64 range
        (:func:`wire_sequence_id`) and a clear error for a frame of a stream the server
        does not hold.

        Raises:
            ValueError: a bad sequence ID.
            StreamReplicaLostError: behind tritonlens' proxy, the replica that took the
                stream's START stopped, before or during this frame.
            StreamMisroutedError: behind a proxy, the frame reached a replica that does not
                hold the stream because this client sends no sequence header.
            StreamEvictedError: Triton does not know the stream (evicted when idle, or the
                server restarted).
            InferenceError, ServerUnreachableError: as :meth:`TritonClient.infer`.
        """
        sequence_id = kwargs.get("sequence_id")
        if sequence_id not in (None, 0, ""):
            kwargs["sequence_id"] = wire_sequence_id(sequence_id, self.protocol)
        key = str(kwargs.get("sequence_id"))
        try:
            result = super().infer(model, inputs, outputs, class_count, **kwargs)
        except TritonLensError as err:
            if sequence_id in (None, 0, ""):
                raise
            refused = isinstance(err, InferenceError) and _TRITON_NO_SEQUENCE in str(err)
            held = self._stream_replicas.get(key)
            if held and (refused or not isinstance(err, InferenceError) or _proxy_failed(str(err))):
                now = self.replica_for(kwargs["sequence_id"])
                if now and now != held:
                    self._stream_replicas.pop(key, None)
                    during = "" if refused else f"; this frame failed: {_failure(str(err))}"
                    raise StreamReplicaLostError(
                        f"{model}: stream {sequence_id}: stream state lost on replica {held} (it "
                        f"stopped; the proxy at {self.url} now sends the stream to replica {now}, "
                        f"which does not hold it{during}); start the stream again (send a frame "
                        f"with the START flag)", getattr(err, "status", None)) from None
            if not refused or kwargs.get("sequence_start"):
                raise
            self._stream_replicas.pop(key, None)
            self._refused_stream(model, sequence_id, err)
        if sequence_id not in (None, 0, ""):
            if kwargs.get("sequence_end"):
                self._stream_replicas.pop(key, None)
            elif kwargs.get("sequence_start") and self.sequence_header:
                replica = self.replica_for(kwargs["sequence_id"])  # None unless behind the proxy
                if replica:
                    self._stream_replicas[key] = replica
        return result

    def _refused_stream(self, model: str, sequence_id, err: InferenceError):
        """Raise the error for a non-START frame Triton refused ("must specify the START
        flag") that is not a lost replica's: the frame was sent without the sequence header
        through a proxy, or the stream was evicted / the server restarted."""
        now = self.replica_for(sequence_id if self.sequence_header else None)
        if self._behind_proxy and not self.sequence_header:
            raise StreamMisroutedError(
                f"{model}: stream {sequence_id} is not known to the replica this frame reached "
                f"behind the proxy at {self.url}: this client sends no correlation-ID header "
                f"(sequence_header=None), so the proxy spreads a stream's frames over its "
                f"replicas; every request of a stream must carry its correlation ID in the "
                f"x-correlation-id header (tritonclient: headers={{'x-correlation-id': ID}}), "
                f"then start the stream again", err.status) from None
        idle, restart = self._tracker_facts(model)
        reloaded = (f", or its state was lost when the tracker's {restart}" if restart
                    else "")
        where = f"replica {now} behind the proxy at {self.url}" if now else "the server"
        raise StreamEvictedError(
            f"{model}: stream {sequence_id} is not known to {where}: it was evicted "
            f"after {idle} idle{reloaded}, or the server restarted; start the stream again "
            f"(send a frame with the START flag)", err.status) from None

    def _tracker_facts(self, model: str) -> tuple[str, str]:
        """(idle limit, last stub restart) of the tracker behind ``model``, for messages:
        its ``stream_idle_seconds`` parameter, and ``tritonlens.stub_restart`` that
        ``serve/health.py`` writes when it reloads a tracker whose stub died ("" if never)."""
        return self._idle_seconds(model), self._tracker_parameter(model, "tritonlens.stub_restart")

    def _tracker_parameter(self, model: str, key: str) -> str:
        """A parameter of ``model`` or of one of its ensemble steps ("" when none has it)."""
        try:
            config = self.connection.get_model_config(model)
            if self.protocol == "grpc":
                steps = [s.model_name for s in config.config.ensemble_scheduling.step]
            else:
                steps = [s["model_name"] for s in
                         config.get("ensemble_scheduling", {}).get("step", [])]
            for name in [model, *steps]:
                value = self.model_parameter(name, key, "")
                if value:
                    return value
        except Exception:  # noqa: BLE001 - only improves a message
            pass
        return ""

    def _idle_seconds(self, model: str) -> str:
        """The idle limit of the tracker behind ``model`` (its ``stream_idle_seconds``
        parameter, found through the ensemble's steps), for messages."""
        value = self._tracker_parameter(model, "stream_idle_seconds")
        return f"{value} s" if value else "its idle limit"

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


def _proxy_failed(message: str) -> bool:
    """Whether ``message`` is a proxy's answer that the replica behind it failed (nginx's
    502 Bad Gateway / 504 Gateway Timeout; gRPC reports them as "Received http2 header with
    status: 502")."""
    return any(code in message for code in ("502", "504", "Bad Gateway", "Gateway Time"))


def _failure(message: str) -> str:
    """A frame's failure for the lost-stream message: the proxy's status when it answered
    502/504 (its HTML body left out), else the client's message."""
    for code, text in (("502", "502 Bad Gateway"), ("504", "504 Gateway Timeout")):
        if code in message:
            return f"the proxy answered {text}"
    return message
