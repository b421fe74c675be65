"""The streaming tracker core (in-process, no Triton) against SAM2VideoPredictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import (SCHEDULE, TRACK_CONFIG, TRACK_FRAMES, clip_jpegs, prompt_arrays,
                           reference_track, seeded_weights)
from tritonlens.client.sam2 import mask_iou
from tritonlens.serve.sam2 import (FrameOrderError, PromptError, StreamingTracker,
                                   StreamLimitError, UnknownStreamError, build_video_model,
                                   decode_frame,
                                   frame_pixels, parse_prompts)
from tritonlens.serve.sam2.tracker import FrameFeatures

SIZE = 256  # small and fast; parity does not depend on it


@pytest.fixture(scope="module")
def setup():
    """(video model, encoded frames [(features, size)], reference results)."""
    weights = seeded_weights(SIZE)
    jpegs = clip_jpegs()
    model = build_video_model(TRACK_CONFIG, SIZE, weights)
    return model, [encode(model, j) for j in jpegs], reference_track(weights, SIZE, jpegs)


def encode(model, jpeg: bytes) -> tuple[FrameFeatures, tuple[int, int]]:
    """The frame's features as SAM2Base.forward_image computes them (what the served
    image encoder returns, minus no_mem_embed)."""
    image = decode_frame(jpeg)
    with torch.inference_mode():
        out = model.forward_image(frame_pixels(image, SIZE)[None])
    fpn = out["backbone_fpn"]
    return FrameFeatures(fpn[2], fpn[0], fpn[1]), (image.height, image.width)


def run_stream(tracker, encoded, stream="s", schedule=SCHEDULE):
    tracker.start(stream)
    results = []
    for t, (features, size) in enumerate(encoded):
        prompts = parse_prompts(*prompt_arrays(schedule[t]), size) if t in schedule else None
        results.append(tracker.step(stream, features, size, prompts, frame_index=t))
    return results


def test_streaming_tracker_matches_video_predictor(setup):
    model, encoded, reference = setup
    tracker = StreamingTracker(model)
    results = run_stream(tracker, encoded)
    assert len(results) == TRACK_FRAMES >= 10
    worst_diff, worst_iou = 0.0, 1.0
    for t, result in enumerate(results):
        assert list(result.object_ids) == list(reference[t]), t
        for k, obj in enumerate(result.object_ids):
            ref = reference[t][int(obj)]
            worst_diff = max(worst_diff, float(np.abs(result.mask_logits[k] - ref).max()))
            worst_iou = min(worst_iou, mask_iou(result.masks[k], ref > 0))
    print(f"parity over {len(results)} frames: max |logit diff| {worst_diff:.2e}, "
          f"min IoU {worst_iou:.6f}")
    assert worst_diff <= 1e-3 and worst_iou >= 0.99
    # Both objects were tracked, and object 2 appears from frame 5 on.
    assert [len(r.object_ids) for r in results] == [1] * 5 + [2] * 11


def test_recovered_feature_from_image_embedding(setup):
    """The served encoder adds no_mem_embed; subtracting it back keeps parity."""
    model, encoded, reference = setup
    tracker = StreamingTracker(model)
    tracker.start("s")
    worst = 0.0
    for t, (features, size) in enumerate(encoded[:8]):
        embedding = features.vision_features + model.no_mem_embed.reshape(1, -1, 1, 1)
        features = tracker.features_from_image_embedding(embedding, features.high_res_0,
                                                         features.high_res_1)
        prompts = parse_prompts(*prompt_arrays(SCHEDULE[t]), size) if t in SCHEDULE else None
        result = tracker.step("s", features, size, prompts)
        for k, obj in enumerate(result.object_ids):
            worst = max(worst, float(np.abs(result.mask_logits[k] - reference[t][int(obj)]).max()))
    assert worst <= 1e-3


def test_state_is_bounded_and_errors_leave_state_alone(setup):
    model, encoded, _ = setup
    tracker = StreamingTracker(model)
    features, size = encoded[0]
    with pytest.raises(UnknownStreamError, match="START"):
        tracker.step("nobody", features, size)
    tracker.start("s")
    sizes = []
    for t in range(24):
        prompts = parse_prompts(*prompt_arrays(SCHEDULE[0]), size) if t == 0 else None
        tracker.step("s", features, size, prompts, frame_index=t)
        sizes.append(tracker.state_bytes("s"))
    # Grows while the memory bank fills (6 memories, 15 pointers), then stays constant.
    assert sizes[-1] == sizes[16] == max(sizes) > sizes[10]
    with pytest.raises(FrameOrderError, match="expects frame 24, got frame 23"):
        tracker.step("s", features, size, frame_index=23)
    with pytest.raises(PromptError):
        parse_prompts(np.zeros((1, 2), np.float32), np.array([5]), np.array([1]), size)
    with pytest.raises(PromptError, match="box"):
        parse_prompts(np.zeros((1, 2), np.float32), np.array([2]), np.array([1]), size)
    assert tracker.step("s", features, size, frame_index=24).frame_index == 24
    tracker.start("s")  # a repeated START resets
    assert tracker.state_bytes("s") == 0
    assert tracker.sweep(idle_seconds=-1.0) == ["s"] and "s" not in tracker


def test_stream_and_object_limits(setup):
    """max_streams refuses a new START with the limit and the idle time; an evicted stream's
    next frame says it was evicted; a stream tracks at most max_objects objects."""
    import time

    model, encoded, _ = setup
    features, size = encoded[0]
    tracker = StreamingTracker(model, max_streams=2, idle_seconds=5.0, max_objects=2)
    tracker.start("a")
    tracker.start("b")
    tracker.start("a")  # a repeated START is not a new stream
    with pytest.raises(StreamLimitError,
                       match=r"2 streams active \(limit 2\); idle streams are evicted after 5 s"):
        tracker.start("c")
    assert sorted(tracker.sweep(5.0, now=time.monotonic() + 6)) == ["a", "b"]
    with pytest.raises(UnknownStreamError, match="'a' was evicted after being idle for more "
                                                 "than 5 s"):
        tracker.step("a", features, size)
    tracker.start("c")
    three = parse_prompts(np.array([[10, 10], [20, 20], [30, 30]], np.float32),
                          np.ones(3, np.int32), np.array([1, 2, 3], np.int32), size)
    with pytest.raises(PromptError, match="would track 3 objects: at most 2 per stream"):
        tracker.step("c", features, size, three)
    assert tracker.state_bytes("c") == 0  # refused before any work
    tracker.start("a")  # an evicted stream can start again
    assert "a" in tracker and "a" not in tracker.evicted
