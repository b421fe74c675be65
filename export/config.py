"""Build and write Triton model configurations through Triton's own schema.

Every ``config.pbtxt`` tritonlens writes is a ``model_config_pb2.ModelConfig`` message
(the protobuf schema that ships in tritonclient) printed with protobuf's text format, so it
parses in Triton exactly as written. Nothing is assembled from string templates.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

# numpy-style names used across tritonlens -> Triton data types.
DTYPES = {
    "bool": mc.TYPE_BOOL, "uint8": mc.TYPE_UINT8, "int32": mc.TYPE_INT32,
    "int64": mc.TYPE_INT64, "fp16": mc.TYPE_FP16, "fp32": mc.TYPE_FP32,
    "bytes": mc.TYPE_STRING,
}


# Where an exported model's instances run. ``gpu`` writes ``KIND_GPU`` instance groups: the
# NGC container's native backends (and tritonlens' Python-based ones, which pick CUDA for a
# GPU instance) then place the model on the GPU. Python-backend pre/post-processing models
# (image decode, tokenizer) stay ``KIND_CPU`` on every device.
DEVICES = ("cpu", "gpu")


def instance_kind(device: str) -> str:
    """Triton's instance-group kind for an export ``device`` (``cpu`` or ``gpu``).

    Raises:
        ValueError: ``device`` is not one of DEVICES.
    """
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    return "KIND_GPU" if device == "gpu" else "KIND_CPU"


@dataclass(frozen=True)
class Tensor:
    """One input or output: name, dtype (a key of DTYPES), dims without the batch axis."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    label_filename: str = ""
    optional: bool = False


def _inputs(tensors: list[Tensor]) -> list[mc.ModelInput]:
    return [mc.ModelInput(name=t.name, data_type=DTYPES[t.dtype], dims=list(t.dims),
                          optional=t.optional) for t in tensors]


def _outputs(tensors: list[Tensor]) -> list[mc.ModelOutput]:
    return [mc.ModelOutput(name=t.name, data_type=DTYPES[t.dtype], dims=list(t.dims),
                           label_filename=t.label_filename) for t in tensors]


def model_config(
    name: str,
    backend: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    *,
    max_batch_size: int = 0,
    batching: str | mc.ModelSequenceBatching = "dynamic",
    max_queue_delay_us: int = 0,
    preferred_batch_sizes: tuple[int, ...] = (),
    instance_count: int = 1,
    instance_kind: str = "KIND_CPU",
    parameters: dict[str, str] | None = None,
    default_model_filename: str = "",
) -> mc.ModelConfig:
    """A model with one instance group, string parameters and its batching.

    Args:
        backend: ``onnxruntime``, ``pytorch`` or ``python``.
        max_batch_size: largest batch Triton forms (> 0 with dynamic batching, which needs
            it; 0, the default, otherwise).
        batching: ``"dynamic"``: Triton's dynamic batcher concatenates requests along a
            first batch axis up to ``max_batch_size``; ``"none"``: no batch axis
            (``max_batch_size`` 0), every request is one item with its own shapes; a
            ``ModelSequenceBatching`` message: no batch axis, requests are routed by Triton's
            sequence batcher (correlation ID, START/END) to a stateful model.
        max_queue_delay_us: how long (microseconds) the dynamic batcher may hold a request
            to form a larger batch; 0 batches only what is already queued.
        instance_kind: ``KIND_CPU`` or ``KIND_GPU``.

    Raises:
        ValueError: dynamic batching with ``max_batch_size`` < 1, a ``max_batch_size`` with
            another batching, or an unknown ``batching``.
    """
    if isinstance(batching, mc.ModelSequenceBatching):
        kind = "sequence"
    elif batching in ("dynamic", "none"):
        kind = batching
    else:
        raise ValueError(f"{name}: batching must be 'dynamic', 'none' or a ModelSequenceBatching")
    if kind == "dynamic" and max_batch_size <= 0:
        raise ValueError(f"{name}: dynamic batching needs max_batch_size > 0")
    if kind != "dynamic" and max_batch_size != 0:
        raise ValueError(f"{name}: max_batch_size is for dynamic batching; give 0, not {max_batch_size}")
    scheduler = {}
    if kind == "dynamic":
        scheduler["dynamic_batching"] = mc.ModelDynamicBatching(
            max_queue_delay_microseconds=max_queue_delay_us,
            preferred_batch_size=list(preferred_batch_sizes))
    elif kind == "sequence":
        scheduler["sequence_batching"] = batching
    config = mc.ModelConfig(
        name=name, backend=backend, max_batch_size=max_batch_size,
        input=_inputs(inputs), output=_outputs(outputs),
        instance_group=[mc.ModelInstanceGroup(
            count=instance_count, kind=getattr(mc.ModelInstanceGroup, instance_kind))],
        default_model_filename=default_model_filename, **scheduler,
    )
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


@dataclass(frozen=True)
class Step:
    """One step of an ensemble: model name, {model input: ensemble tensor},
    {model output: ensemble tensor}."""

    model: str
    input_map: dict[str, str]
    output_map: dict[str, str]


def ensemble_config(name: str, inputs: list[Tensor], outputs: list[Tensor], steps: list[Step],
                    *, max_batch_size: int) -> mc.ModelConfig:
    """An ensemble (Triton's ``platform: "ensemble"``) wiring ``steps`` together."""
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size,
                            input=_inputs(inputs), output=_outputs(outputs))
    for step in steps:
        config.ensemble_scheduling.step.append(mc.ModelEnsembling.Step(
            model_name=step.model, model_version=-1,
            input_map=step.input_map, output_map=step.output_map))
    return config


def add_warmup(config: mc.ModelConfig, samples: dict[str, bytes | str]) -> dict[str, bytes]:
    """Add one ``model_warmup`` sample (batch size 1) to ``config``, so that Triton runs it
    through every instance at load and the first client request does not pay for first-run
    allocations, lazy imports or graph preparation.

    Args:
        samples: per input of ``config``: ``"zero"`` (``zero_data``: valid for token ids,
            pixels, embeddings) or ``"random"`` (``random_data``), or ``bytes``, one element
            of a BYTES input (an encoded image, a UTF-8 text), stored in the model's
            ``warmup/`` folder in Triton's serialisation: a 4-byte little-endian length, then
            the bytes.

    Returns:
        The files to write beside ``config.pbtxt`` (``write_model``'s ``extra``):
        ``{"warmup/<input>": serialised bytes}``.

    Raises:
        ValueError: a sample for an input ``config`` does not have, an input without a
            sample, or ``bytes`` for a non-BYTES input.
    """
    inputs = {i.name: i for i in config.input}
    if set(samples) != set(inputs):
        raise ValueError(f"{config.name}: warmup samples for {sorted(samples)}, inputs are {sorted(inputs)}")
    sample, files = mc.ModelWarmup(name=f"{config.name}_warmup", batch_size=1), {}
    for name, value in samples.items():
        warm = sample.inputs[name]
        warm.data_type, warm.dims[:] = inputs[name].data_type, inputs[name].dims
        if isinstance(value, bytes):
            if inputs[name].data_type != mc.TYPE_STRING:
                raise ValueError(f"{config.name}: bytes warmup data for non-BYTES input {name}")
            warm.input_data_file = name
            files[f"warmup/{name}"] = len(value).to_bytes(4, "little") + value
        elif value in ("zero", "random"):
            setattr(warm, f"{value}_data", True)
        else:
            raise ValueError(f"{config.name}: warmup sample for {name} must be bytes, 'zero' or 'random'")
    config.model_warmup.append(sample)
    return files


def warmup_image(width: int = 96, height: int = 64) -> bytes:
    """A small RGB gradient PNG (``width`` x ``height`` pixels, 8-bit), the ``model_warmup``
    sample of the image-decoding Python models (``clip_preprocess``, ``sam2_preprocess``,
    ``sam2_frame_preprocess``): decoded, resized and normalised as any client image is."""
    import io

    import numpy as np
    from PIL import Image

    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    pixels = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def to_text(config: mc.ModelConfig) -> str:
    """The ``config.pbtxt`` text of ``config``."""
    return text_format.MessageToString(config)


def parse_config(path: str | Path) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` with Triton's schema (raises ``text_format.ParseError``)."""
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def write_model(repo: Path, config: mc.ModelConfig, files: dict[str, Path | bytes | str] = {},
                *, version: int = 1, extra: dict[str, Path | bytes | str] = {}) -> Path:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/<version>/<file>``.

    ``files`` go into the version folder (``model.onnx``, ``model.py`` ...); ``extra`` go
    beside ``config.pbtxt`` (label files). A value is a source path to copy, or the content.
    A previous version folder of the same number is replaced, so a re-export never leaves
    stale weight files behind. Returns the model directory.
    """
    model_dir = repo / config.name
    version_dir = model_dir / str(version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    for target_dir, entries in ((version_dir, files), (model_dir, extra)):
        for filename, content in entries.items():
            target = target_dir / filename
            target.parent.mkdir(exist_ok=True)  # warmup/ samples
            if isinstance(content, Path):
                shutil.copy2(content, target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
    (model_dir / "config.pbtxt").write_text(to_text(config))
    return model_dir
