"""Shared pieces of the SAM 2 tracking tests: a real clip, a prompt schedule, and the
offline reference (``SAM2VideoPredictor`` driven frame by frame)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from tritonlens.client.sam2.video import encode_frame, pan_zoom_frames

TRACK_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
TRACK_FRAMES = 16  # >= 16: the offline predictor's object-pointer window equals a stream's

# frame -> list of (object id, [(x, y, label), ...]) in pixels of a 240x320 frame. Object 1
# is clicked on frame 0, object 2 is added with a box on frame 5, object 1 gets a corrective
# background + foreground click on frame 10.
SCHEDULE = {
    0: [(1, [(170.0, 120.0, 1)])],
    5: [(2, [(40.0, 60.0, 2), (150.0, 200.0, 3)])],
    10: [(1, [(120.0, 100.0, 0), (180.0, 130.0, 1)])],
}


def clip_jpegs(count: int = TRACK_FRAMES, photo: str = "chelsea") -> list[bytes]:
    """A pan/zoom over a scikit-image photo, as JPEG bytes (240 x 320)."""
    import skimage.data

    return [encode_frame(f, quality=90) for f in pan_zoom_frames(getattr(skimage.data, photo)(), count)]


def prompt_arrays(entries):
    """SCHEDULE entries -> (coords fp32 [P, 2], labels int32 [P], object ids int32 [P])."""
    coords, labels, ids = [], [], []
    for obj, points in entries:
        for x, y, label in points:
            coords.append((x, y))
            labels.append(label)
            ids.append(obj)
    return (np.array(coords, np.float32), np.array(labels, np.int32), np.array(ids, np.int32))


def seeded_weights(image_size: int, seed: int = 7) -> dict:
    """Seeded random SAM 2.1 hiera-tiny weights (no checkpoint can be downloaded here)."""
    from tritonlens.serve.sam2 import build_video_model

    torch.manual_seed(seed)
    return build_video_model(TRACK_CONFIG, image_size).state_dict()


def reference_track(weights: dict, image_size: int, jpegs: list[bytes],
                    schedule=SCHEDULE) -> dict[int, dict[int, np.ndarray]]:
    """frame -> {object id: fp32 [H, W] logits} from ``SAM2VideoPredictor`` in-process,
    driven frame by frame: propagate to t-1, add a new object's prompt at t and propagate
    from t; for a correction, propagate to t, add the clicks at t, propagate from t+1 (the
    corrected frame's result is what add_new_points_or_box returns)."""
    from tritonlens.serve.sam2 import build_video_model

    predictor = build_video_model(TRACK_CONFIG, image_size, weights)
    results: dict[int, dict[int, np.ndarray]] = {}

    def keep(frame, ids, masks):
        results[frame] = {int(o): masks[i, 0].float().numpy().copy() for i, o in enumerate(ids)}

    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        for i, data in enumerate(jpegs):
            Path(folder, f"{i:05d}.jpg").write_bytes(data)
        state = predictor.init_state(folder, offload_video_to_cpu=True)
        done = -1  # last frame propagated

        def propagate(start, end):
            nonlocal done
            if end < start:
                return
            for frame, ids, masks in predictor.propagate_in_video(
                    state, start_frame_idx=start, max_frame_num_to_track=end - start):
                keep(frame, ids, masks)
            done = end

        for t in sorted(schedule):
            tracked = set(state["obj_ids"])
            correction = any(obj in tracked for obj, _ in schedule[t])
            propagate(done + 1, t if correction else t - 1)
            for obj, points in schedule[t]:
                coords = [(x, y) for x, y, _ in points]
                labels = [label for _, _, label in points]
                box = None
                if 2 in labels:
                    box = [*coords[labels.index(2)], *coords[labels.index(3)]]
                    keep_pts = [i for i, l in enumerate(labels) if l in (0, 1)]
                    coords = [coords[i] for i in keep_pts]
                    labels = [labels[i] for i in keep_pts]
                frame, ids, masks = predictor.add_new_points_or_box(
                    state, frame_idx=t, obj_id=obj, points=coords or None,
                    labels=labels or None, box=box)
            if correction:
                keep(t, ids, masks)
                done = t
        propagate(done + 1, len(jpegs) - 1)
    return results


SHORT_IDLE_S = 4.0  # Triton's: 2x; a loaded host's encoder can hold a frame for seconds
# The stream-limit test's tracker: 2 streams, a long idle limit (nothing is evicted while
# the test runs, however slow the host).
FEW_STREAMS = 2


def export_short_idle_tracker(repo: Path, checkpoint: Path, config: str, image_size: int) -> None:
    """Two more trackers + ensembles: ``sam2_track_short_idle`` with a SHORT_IDLE_S idle limit
    and 4 streams, for the eviction test (the main one keeps the default 60 s so slow CI hosts
    never evict a live stream), and ``sam2_track_few_streams`` with FEW_STREAMS streams and
    the default idle limit, for the stream-limit test."""
    from tritonlens.export.sam2.export import load_sam2, resolve_config
    from tritonlens.export.sam2.tracker import TrackerExportOptions, export_sam2_tracker

    sam, _ = load_sam2(config, str(checkpoint), image_size)
    export_sam2_tracker(sam, repo, TrackerExportOptions(
        sam2_config=resolve_config(config)[0], image_size=image_size, threads=1,
        idle_us=int(SHORT_IDLE_S * 1e6), max_streams=4,
        tracker="sam2_tracker_short_idle", ensemble="sam2_track_short_idle"))
    export_sam2_tracker(sam, repo, TrackerExportOptions(
        sam2_config=resolve_config(config)[0], image_size=image_size, threads=1,
        max_streams=FEW_STREAMS, tracker="sam2_tracker_few_streams",
        ensemble="sam2_track_few_streams"))
