"""Live video for the SAM 2 tracker: camera and network sources read in real time, several
streams at once, each its own Triton sequence on the ``sam2_track`` ensemble.

A source is decoded by PyAV (FFmpeg) in a background thread, so it never waits for the
server. Decoded frames wait in a short queue (``max_pending`` frames); in real-time mode,
when the queue is full the oldest waiting frame is dropped for the new one, so the server
always gets the newest frames and each stream has at most one frame in flight plus
``max_pending`` waiting. The tracker is told the frames it gets are consecutive
(``client_frame_index`` 0, 1, 2, ... over the frames sent), and a prompt on a dropped frame
goes with the next frame sent. A file (or a folder of frames) is read every frame, as fast
as the server goes, unless real time is asked for (then it is paced at its own frame rate
and dropped like a camera).

Example::

    client = Sam2VideoClient("127.0.0.1:8001")
    streams = {"door": (LiveSource("rtsp://cam1/stream", {"rtsp_transport": "tcp"}),
                        {0: [Box(10, 40, 90, 160)]}),
               "yard": (LiveSource("/dev/video0"), {0: [Point(210, 120)]})}
    session = LiveTracking(client, streams)
    for frame in session:           # LiveFrame, as masks come back, all streams mixed
        print(frame.stream, frame.source_frame, frame.latency_s, frame.result.masks.shape)
    print(session.stats["door"].summary())

Every sequence is ended (a last request with the END flag, re-sending the stream's last
frame, its result discarded) whatever stops it: the source is lost, the iteration is left
(Ctrl-C, SIGTERM turned into an exception, ``break``), or the server answers an error; so
the tracker frees the stream's state at once instead of at its idle limit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from tritonlens.client.base import TritonLensError
from tritonlens.client.sam2.track import Box, ENSEMBLE, OUTPUTS, Point, TrackedFrame, prompt_arrays
from tritonlens.client.sam2.video import encode_frame, read_video
from tritonlens.client.sequences import new_sequence_id

log = logging.getLogger("tritonlens.sam2.live")

# URL schemes read as live network sources (FFmpeg's protocols of the same names).
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")
# FFmpeg demuxer options for live sources unless the caller sets them: stop probing the
# stream after 32 KB or 0.5 s (FFmpeg's defaults, 5 MB / 5 s, hold the first frames back
# for seconds, and they then arrive at once and are dropped).
LIVE_DEFAULT_OPTIONS = {"probesize": "32768", "analyzeduration": "500000"}
MAX_BACKOFF_S = 4.0  # reconnect attempts wait 0.25, 0.5, 1, 2, 4, 4 ... s


class LiveSourceError(TritonLensError):
    """A source that cannot be opened, was lost (no frame for the reconnect time), or
    failed to decode; the message starts with the source."""


def is_live(source: str | Path) -> bool:
    """Whether ``source`` is a live source: a URL with one of :data:`LIVE_SCHEMES` or a V4L2
    device (``/dev/video*``); files and frame folders are not."""
    text = str(source)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    return scheme in LIVE_SCHEMES or text.startswith("/dev/video")


@dataclass(frozen=True)
class SourceFrame:
    """One decoded frame of a source.

    Attributes:
        index: its index among the frames the source delivered (0-based, dropped ones
            counted).
        image: an ``av.VideoFrame`` or uint8 [H, W, 3] RGB.
        arrival: ``time.monotonic()`` when it was decoded (seconds).
        time: its presentation time in seconds from the source (None when it has none).
    """

    index: int
    image: object
    arrival: float
    time: float | None

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 [H, W, 3] RGB; scaled to ``size`` (height, width) when it differs
        (FFmpeg's swscale for decoded frames, Pillow's bilinear resize for arrays)."""
        if isinstance(self.image, np.ndarray):
            if size is None or self.image.shape[:2] == tuple(size):
                return self.image
            from PIL import Image

            return np.asarray(Image.fromarray(self.image).resize((size[1], size[0]),
                                                                  Image.BILINEAR))
        if size is None:
            return self.image.to_ndarray(format="rgb24")
        return self.image.to_ndarray(format="rgb24", height=size[0], width=size[1])


class LiveSource:
    """A video source decoded in a background thread into a short queue of frames.

    Args:
        source: a URL (``rtsp://``, ``http(s)://`` MPEG-TS/MJPEG/HLS, ``udp://``,
            ``srt://`` where FFmpeg has it, ...), a V4L2 device (``/dev/video0``), a video
            file, or a folder of frames.
        options: FFmpeg options for the input, e.g. ``{"rtsp_transport": "tcp"}``,
            ``{"video_size": "640x480"}`` for V4L2; for live sources they extend
            :data:`LIVE_DEFAULT_OPTIONS`.
        realtime: drop frames the client cannot send in time (None: yes for live sources,
            no for files and folders). A file read in real time is paced at its own
            frame rate.
        max_pending: frames waiting to be sent; in real time the oldest is dropped when a
            new frame arrives and this many wait, else the reader waits.
        reconnect_s: a live source that delivers no frame (a stream without a duration
            that ended, stalled past ``read_timeout_s``, or failed) is opened again, with
            back-off from 0.25 s to :data:`MAX_BACKOFF_S`, for this many seconds; then
            :class:`LiveSourceError`.
        open_timeout_s / read_timeout_s: how long opening the source, and one read, may
            block (PyAV's ``timeout``), in seconds.

    Counts (ints, read at any time): ``received`` frames decoded, ``dropped`` frames
    dropped (in real time, and those still waiting when the source is closed), ``resized``
    frames whose size differed from the first frame's (they are scaled to it).
    """

    def __init__(self, source: str | Path, options: Mapping[str, str] | None = None, *,
                 realtime: bool | None = None, max_pending: int = 2, reconnect_s: float = 30.0,
                 open_timeout_s: float = 10.0, read_timeout_s: float = 10.0):
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.source = str(source)
        self.live = is_live(self.source)
        self.options = {**(LIVE_DEFAULT_OPTIONS if self.live and not
                           self.source.startswith("/dev/") else {}), **(options or {})}
        self.realtime = self.live if realtime is None else bool(realtime)
        self.max_pending = int(max_pending)
        self.reconnect_s = float(reconnect_s)
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.received = self.dropped = self.resized = 0
        self._pending: deque[SourceFrame] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self._error: Exception | None = None
        self._thread: threading.Thread | None = None
        self._size: tuple[int, int] | None = None  # (height, width) of the first frame

    def __repr__(self) -> str:
        return f"LiveSource({self.source!r})"

    # -- reading (background thread) ----------------------------------------------------
    def start(self) -> None:
        """Start decoding (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, daemon=True,
                                            name=f"source {self.source}")
            self._thread.start()

    def _read(self) -> None:
        try:
            if Path(self.source).is_dir():
                for image in read_video(self.source):
                    if not self._push(image, None):
                        return
            else:
                self._read_av()
        except Exception as err:  # noqa: BLE001 - handed to the consumer
            self._error = err if isinstance(err, TritonLensError) else \
                LiveSourceError(f"{self.source}: {err}")
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _open(self, timeout_s: float):
        import av

        kwargs = {"format": "v4l2"} if self.source.startswith("/dev/") else {}
        if not self.live and not Path(self.source).is_file():
            raise LiveSourceError(f"no such video file, frame folder or live source: "
                                  f"{self.source} (live sources: {', '.join(LIVE_SCHEMES)} "
                                  "URLs, /dev/video* devices)")
        return av.open(self.source, options=self.options, timeout=(timeout_s, self.read_timeout_s),
                       **kwargs)

    def _read_av(self) -> None:
        import av

        lost_since, attempts, reason = None, 0, ""
        while not self._stop.is_set():
            if lost_since is not None:
                waited = time.monotonic() - lost_since
                if waited >= self.reconnect_s:
                    what = "source lost" if self.received else "no frame from this source"
                    raise LiveSourceError(
                        f"{self.source}: {what}: no frame for {waited:.1f} s after "
                        f"{attempts} reconnect attempt(s) (last: {reason})")
                self._stop.wait(min(MAX_BACKOFF_S, 0.25 * 2 ** max(0, attempts - 1)))
                attempts += 1
            try:
                remaining = self.open_timeout_s if lost_since is None else max(
                    0.5, min(self.open_timeout_s,
                             self.reconnect_s - (time.monotonic() - lost_since)))
                with self._open(remaining) as container:
                    if not container.streams.video:
                        raise LiveSourceError(f"{self.source}: no video stream")
                    stream = container.streams.video[0]
                    stream.thread_type = "SLICE"  # frame threading holds frames back
                    finite = container.duration is not None
                    start_time = None
                    for frame in container.decode(stream):
                        if self._stop.is_set():
                            return
                        lost_since, attempts = None, 0
                        if not self.realtime or self.live:
                            if not self._push(frame, frame.time):
                                return
                            continue
                        # A file in real time: paced at its own timestamps.
                        now = time.monotonic()
                        if frame.time is not None:
                            start_time = start_time or (now - frame.time)
                            self._stop.wait(max(0.0, start_time + frame.time - now))
                        if not self._push(frame, frame.time):
                            return
                if not self.live or finite:
                    return  # a file, or a finite stream (a VOD playlist, a file over HTTP)
                reason = "the stream ended"
            except av.error.FFmpegError as err:
                if not self.live:
                    raise LiveSourceError(f"{self.source}: cannot decode: {err}") from None
                reason = ("no data before the open or read timeout"
                          if isinstance(err, av.error.ExitError)
                          else f"{type(err).__name__}: {err.strerror or err}")
            if lost_since is None:
                lost_since = time.monotonic()
                log.warning("%s: %s; reconnecting for up to %g s", self.source, reason,
                            self.reconnect_s)

    def _push(self, image, pts: float | None) -> bool:
        """Queue one decoded frame (dropping or waiting as the mode says); False once the
        source is closed."""
        size = (image.height, image.width) if hasattr(image, "height") else image.shape[:2]
        if self._size is None:
            self._size = tuple(size)
        elif tuple(size) != self._size:
            if self.resized == 0:
                log.warning("%s: frame size changed from %dx%d to %dx%d at frame %d: frames "
                            "are scaled to the first frame's size", self.source,
                            self._size[1], self._size[0], size[1], size[0], self.received)
            self.resized += 1
        with self._cond:
            while not self.realtime and len(self._pending) >= self.max_pending:
                if self._stop.is_set():
                    return False
                self._cond.wait(0.2)
            if self._stop.is_set():
                return False
            while len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(SourceFrame(self.received, image, time.monotonic(), pts))
            self.received += 1
            self._cond.notify_all()
        return True

    # -- consuming ----------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) of the first frame; later frames are scaled to it."""
        return self._size

    def frames(self) -> Iterator[SourceFrame]:
        """The frames to send, oldest first, as they come; ends when the source ends.

        Raises:
            LiveSourceError: the source cannot be opened, was lost, or failed (after the
                frames decoded before it).
        """
        self.start()
        while True:
            with self._cond:
                while not self._pending and not self._done:
                    self._cond.wait(0.2)
                if self._pending:
                    item = self._pending.popleft()
                    self._cond.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield item

    def discard(self, frame: SourceFrame) -> None:
        """Count a frame taken from :meth:`frames` but not sent as dropped."""
        with self._cond:
            self.dropped += 1

    def close(self, wait: bool = True) -> None:
        """Stop decoding; frames still waiting count as dropped, no frame is queued after
        this. ``wait``: also wait for the reader thread (up to one read timeout)."""
        self._stop.set()
        with self._cond:
            self.dropped += len(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        if wait and self._thread is not None:
            self._thread.join(timeout=self.read_timeout_s + 1)


@dataclass
class StreamStats:
    """Counts and timings of one tracked stream (seconds from ``time.monotonic()``).

    ``received`` = ``tracked`` + ``dropped`` once the stream has ended; latency is from a
    frame's arrival at the client (decoded) to its masks coming back.
    """

    received: int = 0
    tracked: int = 0
    dropped: int = 0
    resized: int = 0
    latencies_s: list = field(default_factory=list)
    first_arrival: float | None = None
    last_result: float | None = None

    def latency_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the per-frame latency in ms (nan: none yet)."""
        if not self.latencies_s:
            return float("nan")
        return float(np.percentile(self.latencies_s, q) * 1000)

    @property
    def fps(self) -> float:
        """Frames tracked per second, from the first frame's arrival to the last mask."""
        if self.first_arrival is None or self.last_result is None or self.tracked < 2:
            return 0.0
        return self.tracked / max(1e-9, self.last_result - self.first_arrival)

    def summary(self) -> dict:
        """The figures as a JSON-ready dict (latencies in ms)."""
        return {"received": self.received, "tracked": self.tracked, "dropped": self.dropped,
                "resized": self.resized, "fps": round(self.fps, 3),
                "latency_p50_ms": round(self.latency_ms(50), 1),
                "latency_p95_ms": round(self.latency_ms(95), 1)}


@dataclass(frozen=True)
class LiveFrame:
    """One tracked frame of a live stream.

    Attributes:
        stream: the stream's name (the key given to :class:`LiveTracking`).
        source_frame: the frame's index in its source (dropped frames counted).
        result: the tracker's :class:`TrackedFrame`; its ``frame_index`` counts the frames
            sent on the stream (dropped frames not counted), its ``image`` is uint8
            [H, W, 3] when ``keep_images``.
        arrival / done: ``time.monotonic()`` when the frame was decoded and when its masks
            came back (seconds); ``latency_s = done - arrival``.
        time: the frame's presentation time from the source (seconds; None if none).
    """

    stream: str
    source_frame: int
    result: TrackedFrame
    arrival: float
    done: float
    time: float | None

    @property
    def latency_s(self) -> float:
        return self.done - self.arrival


_DONE = object()


class LiveTracking:
    """Track several sources at once, each its own sequence (correlation ID), one thread
    each; iterate for :class:`LiveFrame` results as they come back.

    Args:
        client: a :class:`~tritonlens.client.sam2.track.Sam2VideoClient`.
        streams: name -> (source, prompts): a :class:`LiveSource` (or a source string,
            opened with defaults) and frame index -> points/boxes (frame indices of the
            source; a prompt on a dropped frame goes with the next frame sent).
        sequence_ids: name -> correlation ID (a fresh random one for each stream not given).
        model: the tracking ensemble.
        keep_images: attach each frame's RGB image to its result (for overlays).
        max_frames: stop each stream after this many tracked frames (None: at its end).

    After the iteration: ``stats`` (name -> :class:`StreamStats`) and ``errors`` (name ->
    the exception that stopped that stream). The iteration raises the first stream error
    once every stream has stopped (the others run to their end).
    """

    def __init__(self, client,
                 streams: Mapping[str, tuple[LiveSource | str, Mapping[int, Sequence[Point | Box]]]],
                 *, sequence_ids: Mapping[str, int | str] | None = None, model: str = ENSEMBLE,
                 keep_images: bool = False, max_frames: int | None = None):
        self.client = client
        self.max_frames = max_frames
        self.model = model
        self.keep_images = keep_images
        self.streams = {name: (src if isinstance(src, LiveSource) else LiveSource(src),
                               dict(prompts)) for name, (src, prompts) in streams.items()}
        sequence_ids = dict(sequence_ids or {})
        self.sequence_ids = {name: sequence_ids.get(name) or new_sequence_id()
                             for name in self.streams}
        self.stats = {name: StreamStats() for name in self.streams}
        self.errors: dict[str, Exception] = {}
        self._results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        """Ask every stream to stop: each finishes the frame in flight and ends its sequence."""
        self._stop.set()
        for source, _ in self.streams.values():
            source._stop.set()

    def __iter__(self) -> Iterator[LiveFrame]:
        self._threads = [threading.Thread(target=self._run, args=(name,), daemon=True,
                                          name=f"track {name}") for name in self.streams]
        for thread in self._threads:
            thread.start()
        running = len(self._threads)
        try:
            while running:
                item = self._results.get()
                if item is _DONE:
                    running -= 1
                else:
                    yield item
        finally:
            self.stop()
            for thread in self._threads:
                thread.join()
        if self.errors:
            raise next(iter(self.errors.values()))

    def _run(self, name: str) -> None:
        source, prompts = self.streams[name]
        stats, sequence_id = self.stats[name], self.sequence_ids[name]
        waiting = sorted(f for f, p in prompts.items() if p)
        sent, last_jpeg = 0, None
        try:
            for frame in source.frames():
                if self._stop.is_set():
                    source.discard(frame)
                    break
                image = frame.rgb(source.size)
                jpeg = encode_frame(image)
                inputs = {"image": np.array([jpeg], dtype=np.object_),
                          "client_frame_index": np.array([sent], np.int64)}
                due = [p for f in waiting if f <= frame.index for p in prompts[f]]
                if due:
                    inputs.update(prompt_arrays(due))
                    waiting = [f for f in waiting if f > frame.index]
                result = self.client.infer(self.model, inputs, OUTPUTS, sequence_id=sequence_id,
                                           sequence_start=sent == 0)
                done = time.monotonic()
                sent, last_jpeg = sent + 1, jpeg
                stats.tracked += 1
                stats.latencies_s.append(done - frame.arrival)
                stats.first_arrival = stats.first_arrival or frame.arrival
                stats.last_result = done
                self._results.put(LiveFrame(name, frame.index, TrackedFrame(
                    int(result.as_numpy("frame_index")[0]), result.as_numpy("object_ids"),
                    result.as_numpy("masks"), result.as_numpy("mask_logits"),
                    result.as_numpy("object_scores"), image if self.keep_images else None),
                    frame.arrival, done, frame.time))
                if sent == self.max_frames:
                    break
            if waiting and not self._stop.is_set() and sent != self.max_frames:
                raise TritonLensError(f"{source.source}: prompts on frame(s) {waiting} were "
                                      f"never sent: the source delivered {source.received} "
                                      "frame(s) (frame indices are 0-based)")
        except Exception as err:  # noqa: BLE001 - reported per stream
            if not str(err).startswith(source.source):  # every stream error names its source
                named = TritonLensError(f"{source.source}: {err}")
                named.__cause__, err = err, named
            self.errors[name] = err
        finally:
            source.close(wait=False)  # END first: a stalled reader may block for a read timeout
            stats.received, stats.dropped = source.received, source.dropped
            stats.resized = source.resized
            if last_jpeg is not None:
                self._end(name, sequence_id, last_jpeg, sent)
            self._results.put(_DONE)

    def _end(self, name: str, sequence_id, jpeg: bytes, index: int) -> None:
        """END the sequence with one more request (the last frame again, result dropped)."""
        try:
            self.client.infer(self.model, {"image": np.array([jpeg], dtype=np.object_),
                                           "client_frame_index": np.array([index], np.int64)},
                              ("frame_index",), sequence_id=sequence_id, sequence_end=True)
        except TritonLensError as err:  # e.g. the server is gone or already dropped it
            log.warning("%s: ending sequence %s failed: %s", name, sequence_id, err)
