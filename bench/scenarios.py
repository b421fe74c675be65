"""The perf_analyzer scenarios: one record per served model, with real input data.

A scenario names a Triton model and says how to build its perf_analyzer ``--input-data``
from real data (:class:`BenchInputs`: real photos, the exported repository). ``tritonlens
bench`` runs every scenario whose model the server has loaded, over each protocol and
concurrency asked for, and lists served models that have no scenario.

Adding a model is ONE entry in :data:`SCENARIOS` (plus its input builder if no existing one
fits). A stateless model gives one stream whose steps perf_analyzer sends in turn, e.g.::

    Scenario("sam2_segment", "sam2", sam2_image_and_click)

(each step maps input name -> array without the batch axis, or a list of bytes for a BYTES
tensor). A stateful model gives one stream per sequence (consecutive frames of a real
video) and a sequence length; perf_analyzer then sends each stream as one sequence with
START/END flags, correlation IDs from ``--sequence-id-range`` and one frame in flight per
sequence (``--serial-sequences``)::

    Scenario("sam2_track", "sam2", sam2_video_streams, sequence_length=8)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

Streams = list[list[dict]]


@dataclass
class BenchInputs:
    """The real data every input builder draws from.

    Attributes:
        photos: real photographs (JPEG, PNG, WebP files of different sizes and modes).
        repo: the model repository being served (configs, label files, ONNX files).
        labels: the class names the zero-shot head was exported with.
        templates: the prompt templates used for those labels.
        cache: scratch space for builders that share work (e.g. preprocessed pixels).
    """

    photos: list[Path]
    repo: Path
    labels: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """One served model under load.

    Attributes:
        model: the Triton model (or ensemble) name.
        family: the plugin it belongs to (``clip``, ``sam2`` ...); baselines are per family.
        build_inputs: real input data as perf_analyzer streams (see :func:`write_input_data`
            in ``perf_analyzer.py``).
        end_to_end: the family's user-facing path (encoded bytes in, result out); compared
            with the in-process baselines and swept over every concurrency.
        sequence_length: > 0 for stateful models (sequence batcher): requests per sequence.
        shared_memory: also measure with system shared memory (worth it for large tensors
            and for the end-to-end path).
    """

    model: str
    family: str
    build_inputs: Callable[[BenchInputs], Streams]
    end_to_end: bool = False
    sequence_length: int = 0
    shared_memory: bool = False


# -- CLIP inputs ---------------------------------------------------------------------------
def _clip_parameters(repo: Path) -> dict[str, str]:
    from tritonlens.export.config import parse_config

    config = parse_config(repo / "clip_preprocess" / "config.pbtxt")
    return {k: v.string_value for k, v in config.parameters.items()}


def clip_pixels(inputs: BenchInputs) -> list[np.ndarray]:
    """UINT8 [S, S, 3] per photo: open_clip's own eval transform up to ``ToTensor`` (what
    ``clip_preprocess`` reproduces), with the exported image size and resize settings."""
    if "clip_pixels" not in inputs.cache:
        import open_clip
        from PIL import Image

        params = _clip_parameters(inputs.repo)
        transform = open_clip.image_transform(
            int(params["image_size"]), is_train=False,
            resize_mode=params.get("resize_mode", "shortest"),
            interpolation=params.get("interpolation", "bicubic"))
        to_pixels = transform.transforms[:-2]  # drop ToTensor and Normalize
        pixels = []
        for photo in inputs.photos:
            image = Image.open(photo)
            for step in to_pixels:
                image = step(image)
            pixels.append(np.asarray(image, dtype=np.uint8))
        inputs.cache["clip_pixels"] = pixels
    return inputs.cache["clip_pixels"]


def clip_prompts(inputs: BenchInputs) -> list[str]:
    """The label prompts (every label in every template): real texts for the text models."""
    templates = inputs.templates or ["a photo of a {}."]
    return [t.format(label) for label in inputs.labels for t in templates][:64]


def clip_embeddings(inputs: BenchInputs) -> list[np.ndarray]:
    """FP32 [D] per photo: the exported image encoder's embedding of its pixels (computed
    in-process with onnxruntime on the same ONNX file), the zero-shot head's real input."""
    if "clip_embeddings" not in inputs.cache:
        import onnxruntime as ort

        session = ort.InferenceSession(str(inputs.repo / "clip_image_encoder" / "1" / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        batch = np.stack(clip_pixels(inputs))
        inputs.cache["clip_embeddings"] = list(session.run(None, {"pixels": batch})[0])
    return inputs.cache["clip_embeddings"]


def image_bytes(inputs: BenchInputs) -> Streams:
    """``image`` BYTES [1]: each photo's encoded file bytes."""
    return [[{"image": [photo.read_bytes()]} for photo in inputs.photos]]


def pixels(inputs: BenchInputs) -> Streams:
    """``pixels`` UINT8 [S, S, 3]: the photos preprocessed as open_clip does."""
    return [[{"pixels": p} for p in clip_pixels(inputs)]]


def embeddings(inputs: BenchInputs) -> Streams:
    """``embedding`` FP32 [D]: the photos' image embeddings."""
    return [[{"embedding": e.astype(np.float32)} for e in clip_embeddings(inputs)]]


def texts(inputs: BenchInputs) -> Streams:
    """``text`` BYTES [1]: the label prompts as UTF-8."""
    return [[{"text": [t.encode("utf-8")]} for t in clip_prompts(inputs)]]


def token_ids(inputs: BenchInputs) -> Streams:
    """``token_ids`` INT64 [L]: the label prompts through open_clip's tokenizer."""
    import open_clip
    from tritonlens.export.config import parse_config

    config = parse_config(inputs.repo / "clip_tokenize" / "config.pbtxt")
    model = config.parameters["model_name"].string_value
    ids = open_clip.get_tokenizer(model)(clip_prompts(inputs)).numpy().astype(np.int64)
    return [[{"token_ids": row} for row in ids]]


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

    from tritonlens.client.sam2.track import encode_frame, read_video
    from tritonlens.serve.sam2.frames import pan_zoom_frames, write_clip

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


# -- the scenarios: one entry per served model ----------------------------------------------
SCENARIOS: list[Scenario] = [
    Scenario("clip_classify", "clip", image_bytes, end_to_end=True, shared_memory=True),
    Scenario("clip_embed_image", "clip", image_bytes),
    Scenario("clip_preprocess", "clip", image_bytes),
    Scenario("clip_image_encoder", "clip", pixels, shared_memory=True),
    Scenario("clip_zero_shot", "clip", embeddings),
    Scenario("clip_embed_text", "clip", texts),
    Scenario("clip_tokenize", "clip", texts),
    Scenario("clip_text_encoder", "clip", token_ids),
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


def scenarios_for(served: list[str], selected: list[str] | None = None) -> tuple[list[Scenario], list[str]]:
    """The scenarios to run for the ``served`` models, and served models without one.

    Args:
        served: names of the models the server has loaded.
        selected: if given, only these model names (an unknown name raises ValueError).
    """
    known = {s.model for s in SCENARIOS}
    if selected:
        unknown = sorted(set(selected) - known)
        if unknown:
            raise ValueError(f"no scenario for {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [s for s in SCENARIOS if s.model in served and (not selected or s.model in selected)]
    uncovered = sorted(set(served) - known)
    return chosen, uncovered
