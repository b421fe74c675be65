"""SAM 2 video tracking through a real tritonserver: the sam2_track ensemble (frame
preprocess -> sam2_image_encoder with dynamic batching -> sam2_tracker with the sequence
batcher)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tests.conftest import SAM2_TEST_IMAGE_SIZE
from tests.sam2_track_common import (SCHEDULE, SHORT_IDLE_S, TRACK_CONFIG, clip_jpegs,
                                     prompt_arrays)
from tritonlens.client.base import InferenceError
from tritonlens.client.sam2 import mask_iou
from tritonlens.client.sam2.track import OUTPUTS, Sam2VideoClient, new_sequence_id
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
    client.check_ready("sam2_track", "sam2_tracker", "sam2_track_short_idle")
    return client


def send(client, sequence_id, t, jpeg, *, start=False, end=False, prompts=True,
         model="sam2_track", index=None):
    inputs = {"image": np.array([jpeg], dtype=np.object_),
              "frame_index": np.array([t if index is None else index], np.int64)}
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
    == SAM2VideoPredictor, tests/test_sam2_track_parity.py)."""
    model = build_video_model(TRACK_CONFIG, SAM2_TEST_IMAGE_SIZE, sam2_checkpoint)
    tracker = StreamingTracker(model)
    tracker.start("ref")
    expected = []
    for t, jpeg in enumerate(videos["chelsea"]):
        image = decode_frame(jpeg)
        with torch.inference_mode():
            fpn = model.forward_image(frame_pixels(image, SAM2_TEST_IMAGE_SIZE)[None])["backbone_fpn"]
        prompts = parse_prompts(*prompt_arrays(SCHEDULE[t])) if t in SCHEDULE else None
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
    with pytest.raises(InferenceError, match="point_labels must be"):
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
    jpegs, sid = videos["chelsea"], new_sequence_id()
    model = "sam2_track_short_idle"
    for t in range(2):
        send(client, sid, t, jpegs[t], start=t == 0, model=model)
    time.sleep(SHORT_IDLE_S + 2.0)
    with pytest.raises(InferenceError, match="START"):
        send(client, sid, 2, jpegs[2], model=model)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if f"stream {sid} idle for more than" in server.log_file.read_text():
            break
        time.sleep(0.5)
    assert f"stream {sid} idle for more than 3 s: evicted" in server.log_file.read_text()
    # The stream can start again.
    assert send(client, sid, 0, jpegs[0], start=True, end=True, model=model)["object_ids"].tolist() == [1]
