"""The clip family's benchmark scenarios: real input data for every CLIP model.

Each builder turns :class:`~tritonlens.core.plugins.BenchInputs` (real photos, the served
repository, the zero-shot labels) into perf_analyzer streams; ``tritonlens bench`` runs
:func:`scenarios` for every model the server has loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonlens.core.plugins import BenchInputs, Scenario, Streams
from tritonlens.export.clip.export import read_lines
from tritonlens.serve.clip import names


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
            int(params[names.IMAGE_SIZE]), is_train=False,
            resize_mode=params.get(names.RESIZE_MODE, names.DEFAULT_RESIZE_MODE),
            interpolation=params.get(names.INTERPOLATION, names.DEFAULT_INTERPOLATION))
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
    """The label prompts (every label in every template): real texts for the text models.

    The labels are the served zero-shot head's (``clip_zero_shot/labels.txt``); the templates
    those ``tritonlens bench`` exported with (``clip_zero_shot/templates.txt``, which it
    writes), else open_clip's plain "a photo of a {}."."""
    head = inputs.repo / "clip_zero_shot"
    labels = read_lines(head / "labels.txt", "labels")
    templates = (read_lines(head / "templates.txt", "templates")
                 if (head / "templates.txt").exists() else ["a photo of a {}."])
    return [t.format(label) for label in labels for t in templates][:64]


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


def rank_queries(inputs: BenchInputs) -> Streams:
    """clip_rank's ``image`` BYTES [1] (one photo) and ``text`` BYTES [C] (the served zero-shot
    head's labels) per query: a client sending the same labels with every photo, whose texts
    clip_rank's text cache answers after the first request."""
    labels = read_lines(inputs.repo / "clip_zero_shot" / "labels.txt", "labels")
    return [[{"image": [photo.read_bytes()], "text": [label.encode("utf-8") for label in labels]}
             for photo in inputs.photos]]


def scenarios() -> list[Scenario]:
    """The clip family's scenarios: the ensembles and every model they chain."""
    return [
        Scenario("clip_classify", "clip", image_bytes, end_to_end=True, shared_memory=True),
        Scenario("clip_embed_image", "clip", image_bytes),
        Scenario("clip_preprocess", "clip", image_bytes),
        Scenario("clip_image_encoder", "clip", pixels, shared_memory=True),
        Scenario("clip_zero_shot", "clip", embeddings),
        Scenario("clip_embed_text", "clip", texts),
        Scenario("clip_tokenize", "clip", texts),
        Scenario("clip_text_encoder", "clip", token_ids),
        # one query waits on several BLS calls: about a second on a loaded 2-core host
        Scenario("clip_rank", "clip", rank_queries, min_window_ms=3000),
    ]
