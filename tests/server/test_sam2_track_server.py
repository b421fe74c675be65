"""SAM 2 video tracking through a real tritonserver: the sam2_track ensemble (frame
preprocess -> sam2_image_encoder with dynamic batching -> sam2_tracker with the sequence
batcher)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tests.helpers import (FEW_STREAMS, SAM2_TEST_IMAGE_SIZE, SCHEDULE, SHORT_IDLE_S, TRACK_CONFIG,
                           clip_jpegs, prompt_arrays)
from tritonlens.client.base import InferenceError, TritonLensError
from tritonlens.client.sam2 import mask_iou
from tritonlens.client.sam2.track import OUTPUTS, Point, Sam2VideoClient
from tritonlens.client.sequences import StreamEvictedError, new_sequence_id
from tritonlens.export.sam2.tracker import TRITON_IDLE_FACTOR
from tritonlens.serve.sam2.prompts import MAX_POINTS_PER_OBJECT
from tritonlens.serve.sam2 import (FrameFeatures, StreamingTracker, build_video_model,
                                   decode_frame, frame_pixels, parse_prompts)

FRAMES = 12  # covers the schedule: click on 0, new object on 5, correction on 10
LOGIT_TOL = 1e-3


@pytest.fixture(scope="module")
def videos():
    return {name: clip_jpegs(FRAMES, name) for name in ("chelsea", "coffee", "astronaut")}


@pytest.fixture(scope="module")
def client(server):
    client = Sam2VideoClient(f"127.0.0.1:{server.grpc_port}")
    client.check_ready("sam2_track", "sam2_tracker", "sam2_track_short_idle",
                       "sam2_track_few_streams")
    return client


def send(client, sequence_id, t, jpeg, *, start=False, end=False, prompts=True,
         model="sam2_track", index=None):
    inputs = {"image": np.array([jpeg], dtype=np.object_),
              "client_frame_index": np.array([t if index is None else index], np.int64)}
    if prompts and t in SCHEDULE:
        coords, labels, ids = prompt_arrays(SCHEDULE[t])
        inputs.update(point_coords=coords, point_labels=labels, point_object_ids=ids)
    result = client.infer(model, inputs, OUTPUTS, sequence_id=sequence_id,
                          sequence_start=start, sequence_end=end)
    return {name: result.as_numpy(name) for name in OUTPUTS}


def stream(client, jpegs, sequence_id=None, model="sam2_track"):
    sequence_id = sequence_id or new_sequence_id()
    return [send(client, sequence_id, t, jpeg, start=t == 0, end=t == len(jpegs) - 1, model=model)
            for t, jpeg in enumerate(jpegs)]


def assert_same(results, expected, tol=LOGIT_TOL):
    assert len(results) == len(expected)
    for t, (got, ref) in enumerate(zip(results, expected)):
        assert list(got["object_ids"]) == list(ref["object_ids"]), t
        diff = np.abs(got["mask_logits"] - ref["mask_logits"]).max(initial=0.0)
        assert diff <= tol, f"frame {t}: max logit difference {diff}"
        for k in range(len(got["object_ids"])):
            assert mask_iou(got["masks"][k], ref["masks"][k]) >= 0.99, (t, k)


@pytest.fixture(scope="module")
def solo(client, videos):
    """Each video tracked alone through the server."""
    return {name: stream(client, jpegs) for name, jpegs in videos.items()}


def test_served_tracking_equals_in_process_tracker(solo, videos, sam2_checkpoint):
    """Server == tritonlens.serve.sam2 in-process on sam2's own forward_image (and that one
    == SAM2VideoPredictor, tests/server/test_sam2_track_parity.py)."""
    model = build_video_model(TRACK_CONFIG, SAM2_TEST_IMAGE_SIZE, sam2_checkpoint)
    tracker = StreamingTracker(model)
    tracker.start("ref")
    expected = []
    for t, jpeg in enumerate(videos["chelsea"]):
        image = decode_frame(jpeg)
        with torch.inference_mode():
            fpn = model.forward_image(frame_pixels(image, SAM2_TEST_IMAGE_SIZE)[None])["backbone_fpn"]
        size = (image.height, image.width)
        prompts = parse_prompts(*prompt_arrays(SCHEDULE[t]), size) if t in SCHEDULE else None
        r = tracker.step("ref", FrameFeatures(fpn[2], fpn[0], fpn[1]),
                         (image.height, image.width), prompts)
        expected.append({"object_ids": r.object_ids, "masks": r.masks,
                         "mask_logits": r.mask_logits})
    assert_same(solo["chelsea"], expected)
    assert [len(r["object_ids"]) for r in solo["chelsea"]] == [1] * 5 + [2] * 7
    assert solo["chelsea"][0]["masks"].shape == (1, 240, 320)
    assert solo["chelsea"][0]["masks"].dtype == bool


def test_concurrent_interleaved_streams_equal_their_solo_results(client, solo, videos):
    results, errors = {}, []

    def run(name):
        try:
            results[name] = stream(client, videos[name])
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(name,)) for name in videos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for name in videos:
        assert_same(results[name], solo[name])


def test_bad_frame_mid_stream_fails_alone(client, solo, videos):
    jpegs, sid = videos["coffee"], new_sequence_id()
    got = [send(client, sid, t, jpegs[t], start=t == 0) for t in range(3)]
    with pytest.raises(InferenceError, match="sam2_frame_preprocess: not a JPEG"):
        send(client, sid, 3, b"this is not a frame")
    with pytest.raises(InferenceError, match="point label 7"):
        client.infer("sam2_track", {"image": np.array([jpegs[3]], dtype=np.object_),
                                    "point_coords": np.zeros((1, 2), np.float32),
                                    "point_labels": np.array([7], np.int32),
                                    "point_object_ids": np.array([1], np.int32)},
                     OUTPUTS, sequence_id=sid)
    with pytest.raises(InferenceError, match="expects frame 3, got frame 2"):
        send(client, sid, 2, jpegs[2])  # a duplicate
    with pytest.raises(InferenceError, match="expects frame 3, got frame 5"):
        send(client, sid, 5, jpegs[5])  # ahead
    got += [send(client, sid, t, jpegs[t], end=t == 7) for t in range(3, 8)]
    assert_same(got, solo["coffee"][:8])


def test_unknown_stream_and_repeated_start(client, solo, videos):
    jpegs = videos["chelsea"]
    with pytest.raises(InferenceError, match="START"):
        send(client, new_sequence_id(), 1, jpegs[1])
    sid = new_sequence_id()
    first = [send(client, sid, t, jpegs[t], start=t == 0) for t in range(2)]
    again = [send(client, sid, t, jpegs[t], start=t == 0, end=t == 1) for t in range(2)]
    assert_same(first, solo["chelsea"][:2])
    assert_same(again, solo["chelsea"][:2])


def test_string_correlation_id_and_http(server, videos, solo):
    jpegs = videos["astronaut"]
    grpc = Sam2VideoClient(f"127.0.0.1:{server.grpc_port}")
    http = Sam2VideoClient(f"127.0.0.1:{server.http_port}", protocol="http")
    got = [send(grpc, "video-astronaut-1", t, jpegs[t], start=t == 0, end=t == 2) for t in range(3)]
    assert_same(got, solo["astronaut"][:3])
    sid = new_sequence_id()  # one ID for the whole stream
    got = [send(http, sid, t, jpegs[t], start=t == 0, end=t == 2) for t in range(3)]
    assert_same(got, solo["astronaut"][:3])


def test_idle_stream_is_evicted_and_its_state_freed(client, server, videos):
    """The tracker evicts a stream idle for SHORT_IDLE_S and says so on its next frame;
    past Triton's own (longer) idle limit, Triton's bare START error reaches the client,
    which names the eviction too."""
    jpegs, model = videos["chelsea"], "sam2_track_short_idle"
    sid, late = new_sequence_id(), new_sequence_id()
    send(client, sid, 0, jpegs[0], start=True, model=model)
    sid_last = time.monotonic()
    send(client, late, 0, jpegs[0], start=True, model=model)
    last = time.monotonic()
    # Past the tracker's idle limit (it sweeps at the start of every execute), well before
    # Triton's (TRITON_IDLE_FACTOR x longer), even if the encoder is slow under load.
    time.sleep(max(0.0, sid_last + SHORT_IDLE_S + 0.5 - time.monotonic()))
    with pytest.raises(InferenceError, match=f"stream {sid} was evicted after being idle for "
                                             f"more than {SHORT_IDLE_S:g} s"):
        send(client, sid, 1, jpegs[1], model=model)
    logged = f"stream {sid} idle for more than {SHORT_IDLE_S:g} s: evicted"
    deadline = time.monotonic() + 10
    while logged not in server.log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert logged in server.log_file.read_text()
    # The stream can start again.
    assert send(client, sid, 0, jpegs[0], start=True, end=True, model=model)["object_ids"].tolist() == [1]
    # Past Triton's idle limit (TRITON_IDLE_FACTOR x the tracker's).
    time.sleep(max(0.0, last + TRITON_IDLE_FACTOR * SHORT_IDLE_S + 2.0 - time.monotonic()))
    with pytest.raises(StreamEvictedError, match=f"stream {late} is not known to the server: "
                                                 f"it was evicted after {SHORT_IDLE_S:g} s idle"):
        send(client, late, 1, jpegs[1], model=model)


def test_frame_index_output_without_the_input(client, solo, videos):
    """frame_index is always an output: the request need not send client_frame_index."""
    jpegs, sid = videos["chelsea"], new_sequence_id()
    got = []
    for t in range(3):
        inputs = {"image": np.array([jpegs[t]], dtype=np.object_)}
        if t in SCHEDULE:
            coords, labels, ids = prompt_arrays(SCHEDULE[t])
            inputs.update(point_coords=coords, point_labels=labels, point_object_ids=ids)
        result = client.infer("sam2_track", inputs, OUTPUTS, sequence_id=sid,
                              sequence_start=t == 0, sequence_end=t == 2)
        got.append({name: result.as_numpy(name) for name in OUTPUTS})
    assert [int(r["frame_index"][0]) for r in got] == [0, 1, 2]
    assert_same(got, solo["chelsea"][:3])


def test_point_object_ids_are_optional(client, solo, videos):
    """Without point_object_ids every point is object 1 (the schedule's frame-0 object)."""
    jpegs, sid = videos["chelsea"], new_sequence_id()
    coords, labels, ids = prompt_arrays(SCHEDULE[0])
    assert set(ids.tolist()) == {1}
    first = client.infer("sam2_track", {"image": np.array([jpegs[0]], dtype=np.object_),
                                        "point_coords": coords, "point_labels": labels},
                         OUTPUTS, sequence_id=sid, sequence_start=True)
    got = [{name: first.as_numpy(name) for name in OUTPUTS}]
    got += [send(client, sid, t, jpegs[t], end=t == 2) for t in (1, 2)]
    assert_same(got, solo["chelsea"][:3])


def test_tracker_refuses_what_segment_refuses(client, solo, videos):
    """The tracker checks prompts with the image path's validator and limits; each refusal
    fails that frame alone, quickly, and the stream goes on as if it had not been sent."""
    jpegs, sid = videos["coffee"], new_sequence_id()
    got = [send(client, sid, 0, jpegs[0], start=True)]
    rng = np.random.default_rng(0)
    huge = rng.uniform(10, 200, (20000, 2)).astype(np.float32)
    cases = {
        "outside the frame": ([[321, 10]], [1], [1], "outside the 320x240 frame"),
        "negative": ([[10, -2]], [1], [1], "outside the 320x240 frame"),
        "box x1 < x0": ([[200, 10], [100, 100]], [2, 3], [1, 1], "x0 <= x1 and y0 <= y1"),
        "too many points": (huge, np.ones(20000), np.ones(20000), "20000 points in one request"),
        "points of one object": (huge[:MAX_POINTS_PER_OBJECT + 1],
                                 np.ones(MAX_POINTS_PER_OBJECT + 1), np.ones(MAX_POINTS_PER_OBJECT + 1),
                                 f"at most {MAX_POINTS_PER_OBJECT} per object"),
    }
    for name, (coords, labels, ids, phrase) in cases.items():
        inputs = {"image": np.array([jpegs[1]], dtype=np.object_),
                  "client_frame_index": np.array([1], np.int64),
                  "point_coords": np.asarray(coords, np.float32),
                  "point_labels": np.asarray(labels, np.int32),
                  "point_object_ids": np.asarray(ids, np.int32)}
        start = time.perf_counter()
        with pytest.raises(InferenceError) as err:
            client.infer("sam2_track", inputs, OUTPUTS, sequence_id=sid)
        assert phrase in str(err.value), name
        assert time.perf_counter() - start < 10, name
    got += [send(client, sid, t, jpegs[t], end=t == 6) for t in range(1, 7)]
    assert_same(got, solo["coffee"][:7])


def test_new_stream_beyond_max_streams_is_refused_at_once(client, videos):
    """sam2_tracker_few_streams holds FEW_STREAMS streams: one more START is refused at once
    with the limit and the idle time (it used to wait in Triton's queue until a stream was
    evicted, up to the idle limit: 60 s here), and is accepted once a stream ends."""
    jpegs, model = videos["astronaut"], "sam2_track_few_streams"
    held = [new_sequence_id() for _ in range(FEW_STREAMS)]
    for sid in held:
        send(client, sid, 0, jpegs[0], start=True, model=model)
    extra = new_sequence_id()
    start = time.perf_counter()
    with pytest.raises(InferenceError, match=rf"{FEW_STREAMS} streams active \(limit "
                                             rf"{FEW_STREAMS}\); idle streams are evicted "
                                             r"after 60 s"):
        send(client, extra, 0, jpegs[0], start=True, model=model)
    took = time.perf_counter() - start
    print(f"stream {FEW_STREAMS + 1} refused in {took * 1000:.0f} ms")
    assert took < 30  # answered, not queued for the 60 s idle limit
    send(client, held[0], 1, jpegs[1], end=True, model=model)
    assert send(client, extra, 0, jpegs[0], start=True, end=True,
                model=model)["object_ids"].tolist() == [1]
    send(client, held[1], 1, jpegs[1], end=True, model=model)


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_uint64_correlation_ids(server, videos, solo, proto):
    """Numeric correlation IDs over Triton's whole uint64 range, both protocols; the same
    ID is the same stream over either protocol."""
    jpegs = videos["astronaut"]
    urls = {"grpc": f"127.0.0.1:{server.grpc_port}", "http": f"127.0.0.1:{server.http_port}"}
    one = Sam2VideoClient(urls[proto], protocol=proto)
    other = Sam2VideoClient(urls["http" if proto == "grpc" else "grpc"],
                            protocol="http" if proto == "grpc" else "grpc")
    for sid in (1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1):
        got = [send(one, sid, 0, jpegs[0], start=True), send(other, sid, 1, jpegs[1]),
               send(one, sid, 2, jpegs[2], end=True)]
        assert_same(got, solo["astronaut"][:3])
    for bad in (0, -1, 2 ** 64):
        with pytest.raises(ValueError, match="uint64"):
            list(one.track(jpegs[:1], {0: [Point(10, 10)]}, sequence_id=bad))


def test_prompts_past_the_tracked_frames_are_refused(client, videos):
    jpegs = videos["chelsea"]
    with pytest.raises(TritonLensError, match=r"prompts on frame\(s\) \[5\], but only frames "
                                              r"0 .. 2 are tracked"):
        list(client.track(jpegs, {0: [Point(170, 120)], 5: [Point(10, 10)]}, max_frames=3))
    with pytest.raises(TritonLensError, match=r"prompts on frame\(s\) \[40\] were never sent: "
                                              r"the video has only 2 frame"):
        list(client.track(jpegs[:2], {0: [Point(170, 120)], 40: [Point(10, 10)]}))


@pytest.mark.parametrize("idle, reason", [
    (None, "config parameter 'stream_idle_seconds' is missing"),
    ("soon", "'stream_idle_seconds' must be a number, not 'soon'"),
    ("0", "'stream_idle_seconds' must be a finite number of seconds above 0, not 0"),
    ("inf", "must be a finite number of seconds above 0, not inf"),
])
def test_tracker_without_a_valid_idle_limit_fails_to_load(tmp_path, idle, reason):
    """Every export writes stream_idle_seconds (export.sam2.tracker); a config without a
    usable one is refused at load (ConfigError, before the model is built), not served with
    some other idle limit. Its own short-lived server: no weights are needed to fail."""
    from tritonlens.export.config import model_config, write_model
    from tritonlens.export.repository import python_model_source
    from tritonlens.export.sam2.tracker import sequence_batching, tracker_tensors
    from tritonlens.launcher import TritonServer
    from tritonlens.launcher import ModelLoadError

    inputs, outputs = tracker_tensors(SAM2_TEST_IMAGE_SIZE)
    params = {"sam2_config": "configs/sam2.1/sam2.1_hiera_t.yaml", "weights_file": "absent.pt",
              "image_size": str(SAM2_TEST_IMAGE_SIZE), "max_streams": "4"}
    if idle is not None:
        params["stream_idle_seconds"] = idle
    write_model(tmp_path, model_config("sam2_tracker", "python", inputs, outputs,
                                       batching=sequence_batching(60_000_000, 4),
                                       parameters=params),
                {"model.py": python_model_source("sam2_tracker")})
    server = TritonServer(tmp_path, http_port=0, grpc_port=0, metrics_port=0,
                          log_file=tmp_path / "server.log")
    with pytest.raises(ModelLoadError) as info:
        server.start()
    assert reason in info.value.failures["sam2_tracker"]
    assert server.process.poll() is not None  # stopped, nothing left running
