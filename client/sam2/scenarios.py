"""The sam2 family's benchmark scenarios: real input data for every SAM 2 model.

Stateless models get one stream whose steps perf_analyzer sends in turn; the stateful
tracker gets one stream per sequence (consecutive frames of a real video) and a sequence
length, sent with START/END flags and one frame in flight per sequence.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tritonlens.core.plugins import BenchInputs, Scenario, Streams


def sam2_image_and_click(inputs: BenchInputs) -> Streams:
    """``sam2_segment``: each photo's bytes with one foreground click at its centre."""
    from PIL import Image

    steps = []
    for photo in inputs.photos:
        width, height = Image.open(photo).size
        steps.append({"image": [photo.read_bytes()],
                      "point_coords": np.array([[width / 2, height / 2]], np.float32),
                      "point_labels": np.array([1], np.int32)})
    return [steps]


def sam2_pixels(inputs: BenchInputs) -> Streams:
    """``pixels`` FP32 [3, S, S]: the photos through sam2's own ``SAM2Transforms``."""
    if "sam2_pixels" not in inputs.cache:
        from PIL import Image
        from sam2.utils.transforms import SAM2Transforms

        from tritonlens.export.config import parse_config

        config = parse_config(inputs.repo / "sam2_preprocess" / "config.pbtxt")
        transform = SAM2Transforms(int(config.parameters["image_size"].string_value), 0.0)
        inputs.cache["sam2_pixels"] = [
            transform(np.asarray(Image.open(p).convert("RGB"))).numpy() for p in inputs.photos]
    return [[{"pixels": pixels} for pixels in inputs.cache["sam2_pixels"]]]


def sam2_image(inputs: BenchInputs) -> Streams:
    """``sam2_preprocess`` and ``sam2_embed_image``: each photo's encoded bytes."""
    return [[{"image": [p.read_bytes()]} for p in inputs.photos]]


def sam2_click(inputs: BenchInputs) -> Streams:
    """``sam2_prompts``: one click per photo with its (height, width); the optional
    multimask_output and mask_input are left to the model's defaults."""
    from PIL import Image

    steps = []
    for photo in inputs.photos:
        width, height = Image.open(photo).size
        steps.append({"point_coords": np.array([[width / 2, height / 2]], np.float32),
                      "point_labels": np.array([1], np.int32),
                      "orig_size": np.array([height, width], np.int32)})
    return [steps]


def _sam2_encode(inputs: BenchInputs, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
    """The exported image encoder run in-process on FP32 [1, 3, S, S] pixels: its three
    feature maps (ONNX and TorchScript exports alike)."""
    folder = inputs.repo / "sam2_image_encoder" / "1"
    if (folder / "model.onnx").exists():  # onnx, int8 and low-memory exports
        import onnxruntime

        if "sam2_session" not in inputs.cache:
            inputs.cache["sam2_session"] = onnxruntime.InferenceSession(str(folder / "model.onnx"))
        return tuple(inputs.cache["sam2_session"].run(None, {"pixels": pixels}))
    import torch

    if "sam2_module" not in inputs.cache:
        inputs.cache["sam2_module"] = torch.jit.load(str(folder / "model.pt"))
    with torch.no_grad():
        return tuple(t.numpy() for t in inputs.cache["sam2_module"](torch.from_numpy(pixels)))


def sam2_features_and_click(inputs: BenchInputs) -> Streams:
    """``sam2_decode``: the first photo's features (computed once with the exported image
    encoder, in-process) with a click on each of a few points: the prompt-many path."""
    from PIL import Image

    photo = inputs.photos[0]
    width, height = Image.open(photo).size
    embedding, feats_0, feats_1 = _sam2_encode(inputs, sam2_pixels(inputs)[0][0]["pixels"][None])
    features = {"image_embedding": embedding, "high_res_feats_0": feats_0,
                "high_res_feats_1": feats_1, "orig_size": np.array([height, width], np.int32)}
    clicks = [(0.5, 0.5), (0.3, 0.4), (0.7, 0.6), (0.5, 0.2)]
    return [[{**features, "point_coords": np.array([[x * width, y * height]], np.float32),
              "point_labels": np.array([1], np.int32)} for x, y in clicks]]


def sam2_video_streams(inputs: BenchInputs, frames: int = 8) -> Streams:
    """``sam2_track``: one stream per sequence, ``frames`` consecutive frames of a real H.264
    clip each (a pan/zoom over each of the first two photos, encoded with libx264 and
    decoded back with PyAV, then sent as JPEG as ``tritonlens track`` sends them). The
    first frame carries a foreground click at the centre for object 1; later frames carry
    only the frame (the prompt inputs are optional and omitted)."""
    import tempfile

    from PIL import Image

    from tritonlens.client.sam2.video import encode_frame, read_video
    from tritonlens.client.sam2.video import pan_zoom_frames, write_clip

    if "sam2_video" in inputs.cache:
        return inputs.cache["sam2_video"]
    streams = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, photo in enumerate(inputs.photos[:2]):
            clip = Path(tmp) / f"clip{i}.mp4"
            write_clip(str(clip), pan_zoom_frames(np.asarray(Image.open(photo).convert("RGB")), frames))
            decoded = list(read_video(clip))
            height, width = decoded[0].shape[:2]
            # No frame_index (optional): when a measurement ends, perf_analyzer closes the
            # sequences in flight by sending their stream's last step early, which the
            # tracker would rightly refuse as out of order; without it, that frame is
            # simply the stream's next one.
            steps = [{"image": [encode_frame(f)]} for f in decoded]
            steps[0].update({"point_coords": np.array([[width / 2, height / 2]], np.float32),
                             "point_labels": np.array([1], np.int32),
                             "point_object_ids": np.array([1], np.int32)})
            streams.append(steps)
    inputs.cache["sam2_video"] = streams
    return streams


def sam2_decoder_inputs(inputs: BenchInputs) -> Streams:
    """``sam2_prompt_decoder``: what ``sam2_decode`` hands it after ``sam2_prompts``, i.e.
    every input given (no mask input, multimask output on)."""
    low_res = 4 * (int(sam2_pixels(inputs)[0][0]["pixels"].shape[-1]) // 16)
    return [[{**step, "mask_input": np.zeros((1, low_res, low_res), np.float32),
              "has_mask_input": np.zeros(1, np.float32),
              "multimask_output": np.ones(1, np.bool_)}
             for step in sam2_features_and_click(inputs)[0]]]


def sam2_frames(inputs: BenchInputs) -> Streams:
    """``sam2_frame_preprocess``: the clips' frames (see :func:`sam2_video_streams`)."""
    return [[{"image": step["image"]} for stream in sam2_video_streams(inputs) for step in stream]]


def sam2_tracker_streams(inputs: BenchInputs) -> Streams:
    """``sam2_tracker``: the clips' frames as the ensemble hands them to the tracker: each
    frame's features (the exported image encoder, in-process) and size, with the first
    frame's click; one stream per sequence."""
    from PIL import Image

    from tritonlens.serve.sam2.frames import frame_pixels

    size = int(sam2_pixels(inputs)[0][0]["pixels"].shape[-1])
    streams = []
    for stream in sam2_video_streams(inputs):
        steps = []
        for step in stream:
            image = Image.open(io.BytesIO(step["image"][0])).convert("RGB")
            features = _sam2_encode(inputs, frame_pixels(image, size).numpy()[None])
            steps.append({**{k: v for k, v in step.items() if k != "image"},
                          **dict(zip(("image_embedding", "high_res_feats_0", "high_res_feats_1"),
                                     features)),
                          "orig_size": np.array([image.height, image.width], np.int32)})
        streams.append(steps)
    return streams


def scenarios() -> list[Scenario]:
    """The sam2 family's scenarios: image segmentation, encode-once, video tracking, and
    every model they chain."""
    return [
        Scenario("sam2_segment", "sam2", sam2_image_and_click),
        Scenario("sam2_embed_image", "sam2", sam2_image),
        Scenario("sam2_preprocess", "sam2", sam2_image),
        Scenario("sam2_image_encoder", "sam2", sam2_pixels),
        Scenario("sam2_decode", "sam2", sam2_features_and_click),
        Scenario("sam2_prompts", "sam2", sam2_click),
        Scenario("sam2_prompt_decoder", "sam2", sam2_decoder_inputs),
        Scenario("sam2_track", "sam2", sam2_video_streams, sequence_length=8),
        Scenario("sam2_frame_preprocess", "sam2", sam2_frames),
        Scenario("sam2_tracker", "sam2", sam2_tracker_streams, sequence_length=8),
    ]
