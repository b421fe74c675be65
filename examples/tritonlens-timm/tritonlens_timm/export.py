"""Export a timm model into a Triton model repository, as a classifier and an embedding model.

================ =========== ============================================================
model            backend     what it does
================ =========== ============================================================
timm_preprocess  python      image bytes -> UINT8 [H, W, 3], timm's eval transform
timm_model       onnxruntime UINT8 [H, W, 3] -> ``embedding`` FP32 [F] (pooled features,
                             ``forward_head(pre_logits=True)``), ``probabilities`` FP32 [C]
                             (softmax of the logits; labels.txt)
timm_classify    ensemble    image bytes -> probabilities (``class_count=k``: top-k)
timm_embed       ensemble    image bytes -> embedding
================ =========== ============================================================

Built only on tritonlens' public export core: ``tritonlens.export.core`` (the options base
every family shares, ``ExportError``, ``save_graph`` with the int8 and low-memory variants),
``tritonlens.export.onnx_variants`` (their config parameters) and ``tritonlens.export.config``
(configs through Triton's schema, ``write_model``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch

from tritonlens.export.config import (Step, Tensor, ensemble_config, instance_kind, model_config,
                                      write_model)
from tritonlens.export.core import ExportError, ExportOptions, save_graph
from tritonlens.export.onnx_variants import onnxruntime_parameters, precision_parameters
from tritonlens.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from tritonlens.serve.parameters import FAMILY_PARAMETER, MODEL_NAME_PARAMETER, WEIGHTS_PARAMETER
from tritonlens_timm import MODEL_REPOSITORY
from tritonlens_timm.transform import EvalTransform


@dataclass
class TimmExportOptions(ExportOptions):
    """What ``tritonlens export timm`` was asked to do: the options every family takes
    (``ExportOptions``: max batch size, instances, threads, seed, opset, precision, profile,
    device) and these.

    Attributes:
        model: a timm architecture name (``timm.list_models()``), e.g. resnet18.
        checkpoint: a local checkpoint file (timm's ``load_checkpoint``: a state dict, or
            a dict holding one), or None / "none" for random weights seeded with ``seed``
            (flagged in the configs and by every client).
        labels: class names in output order; None: timm's ImageNet class names for the
            model's label set (``infer_imagenet_subset``), else the export asks for them.
            With labels, the classifier has ``len(labels)`` outputs.
        prefix: model names are ``<prefix>_preprocess`` ..., so exports can share a repository.
    """

    FORMATS: ClassVar[tuple[str, ...]] = ("onnx",)
    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "int8")

    model: str = "resnet18"
    checkpoint: str | None = None
    labels: list[str] | None = None
    max_batch_size: int = 16
    prefix: str = "timm"


class TimmGraph(torch.nn.Module):
    """UINT8 [B, H, W, 3] RGB -> (pooled features FP32 [B, F], probabilities FP32 [B, C]).

    ``ToTensor`` and ``Normalize(mean, std)`` of timm's transform, then the model:
    ``forward_features``, ``forward_head(pre_logits=True)`` (the embedding) and
    ``forward_head`` (the logits), as timm defines them.
    """

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor):
        x = pixels.permute(0, 3, 1, 2).float().div(255)
        x = (x - self.mean) / self.std
        features = self.model.forward_features(x)
        embedding = self.model.forward_head(features, pre_logits=True)
        logits = self.model.forward_head(features)
        return embedding, logits.softmax(dim=-1)


def load_timm(name: str, checkpoint: str | None, num_classes: int | None, seed: int = 0):
    """A timm model in eval mode on the CPU, and where its weights came from.

    Raises:
        ExportError: unknown architecture, missing or unloadable checkpoint.
    """
    import timm

    if not timm.is_model(name):
        raise ExportError(f"unknown timm model {name!r}; see timm.list_models()")
    if checkpoint in (None, "", "none"):
        checkpoint = None
    elif not os.path.isfile(checkpoint):
        raise ExportError(f"--checkpoint {checkpoint}: no such file (a local checkpoint, or 'none')")
    torch.manual_seed(seed)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(name, pretrained=False, checkpoint_path=checkpoint or "", **kwargs)
    except (RuntimeError, KeyError, OSError) as err:
        raise ExportError(f"could not load {checkpoint} into {name}: {' '.join(str(err).split())[:300]}")
    return model.eval(), checkpoint or "random"


def imagenet_labels(model) -> list[str]:
    """timm's class names (``ImageNetInfo``) for the model's ImageNet label set.

    Raises:
        ExportError: the model's label set is not one timm knows, or its size differs.
    """
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    info = ImageNetInfo(subset) if subset else None
    if info is None or info.num_classes() != model.num_classes:
        raise ExportError(f"{model.default_cfg.get('architecture', 'model')} has "
                          f"{model.num_classes} classes and no ImageNet label set timm knows: "
                          "give --labels FILE (one class name per line)")
    return [info.index_to_description(i) for i in range(info.num_classes())]


def export_timm(options: TimmExportOptions, repo: Path,
                report: Callable[[str], None] = lambda step: None) -> dict[str, str]:
    """Export per ``options`` into ``repo``; returns a summary (name -> value).

    Raises:
        ExportError: bad options, model, checkpoint, labels or data config (checked before
            the first file is written).
    """
    import timm.data

    options.check()
    if not options.prefix.isidentifier():
        raise ExportError(f"--prefix must be letters, digits and underscores, not {options.prefix!r}")
    if options.labels is not None and len(set(options.labels)) != len(options.labels):
        raise ExportError("the labels file names a class more than once")
    report(f"loading {options.model} ({options.checkpoint or 'random weights'})")
    model, weights = load_timm(options.model, options.checkpoint,
                               len(options.labels) if options.labels else None, options.seed)
    config = timm.data.resolve_data_config({}, model=model)
    try:
        transform = EvalTransform.from_data_config(config)
    except ValueError as err:
        raise ExportError(f"{options.model}: {err}") from None
    labels = options.labels or imagenet_labels(model)

    name = lambda part: f"{options.prefix}_{part}"  # noqa: E731
    instances = max(1, options.instance_count)
    threads = options.threads or max(1, (os.cpu_count() or 1) // instances)
    common = {FAMILY_PARAMETER: "timm", MODEL_NAME_PARAMETER: options.model,
              WEIGHTS_PARAMETER: weights}
    graph_parameters = {**common, **onnxruntime_parameters(options.profile, instances, threads),
                        **precision_parameters(options.precision)}
    image = Tensor("image", "bytes", (1,))
    pixels = Tensor("pixels", "uint8", (transform.height, transform.width, 3))
    embedding = Tensor("embedding", "fp32", (int(model.num_features),))
    probabilities = Tensor("probabilities", "fp32", (len(labels),), label_filename="labels.txt")
    labels_txt = "\n".join(labels) + "\n"
    batching = dict(max_batch_size=options.max_batch_size,
                    max_queue_delay_us=options.max_queue_delay_us)
    repo.mkdir(parents=True, exist_ok=True)

    report(f"exporting {name('model')} (onnx {options.precision} {options.profile}, "
           f"{transform.height}x{transform.width})")
    graph = TimmGraph(model, config["mean"], config["std"]).eval()
    example = torch.zeros(2, transform.height, transform.width, 3, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        # timm's shape checks are constants for a fixed input size: tracing them is right.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        files = save_graph(graph, (example,), ("pixels",), ("embedding", "probabilities"),
                           {t: {0: "batch"} for t in ("pixels", "embedding", "probabilities")},
                           "onnx", options.opset, Path(tmp), precision=options.precision,
                           profile=options.profile)
        write_model(repo, model_config(
            name("model"), "onnxruntime", [pixels], [embedding, probabilities],
            instance_count=instances, instance_kind=instance_kind(options.device),
            parameters=graph_parameters, **batching), files, extra={"labels.txt": labels_txt})

    report(f"writing {name('preprocess')} and the ensembles")
    write_model(repo, model_config(
        name("preprocess"), "python", [image], [pixels], instance_count=1,
        parameters={**common, **transform.parameters(), "max_image_bytes": str(DEFAULT_MAX_BYTES),
                    "max_image_pixels": str(DEFAULT_MAX_PIXELS)}, **batching),
        {"model.py": MODEL_REPOSITORY / "timm_preprocess" / "1" / "model.py"})
    preprocess = Step(name("preprocess"), {"image": "image"}, {"pixels": "pixels"})
    write_model(repo, ensemble_config(
        name("classify"), [image], [probabilities],
        [preprocess, Step(name("model"), {"pixels": "pixels"}, {"probabilities": "probabilities"})],
        max_batch_size=options.max_batch_size), extra={"labels.txt": labels_txt})
    write_model(repo, ensemble_config(
        name("embed"), [image], [embedding],
        [preprocess, Step(name("model"), {"pixels": "pixels"}, {"embedding": "embedding"})],
        max_batch_size=options.max_batch_size))
    return {"model": options.model, "weights": weights,
            "input": f"{transform.height}x{transform.width} ({transform.crop_mode}, crop_pct "
                     f"{transform.crop_pct}, {transform.interpolation})",
            "embedding_dim": str(embedding.dims[0]), "classes": str(len(labels)),
            "models": ", ".join(name(p) for p in ("preprocess", "model", "classify", "embed")),
            "repository": str(repo)}
