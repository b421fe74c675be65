"""Export SAM 2 (image segmentation) into a Triton model repository.

``export_sam2`` writes these models (contracts in docs/sam2-images.md; S = image size, E = S / 16,
L = S / 4):

================== =========== =============================================================
model              backend     what it does
================== =========== =============================================================
sam2_preprocess    python      image bytes -> FP32 [1, 3, S, S] (sam2's transform), orig size
sam2_image_encoder pytorch     FP32 [3, S, S] -> image embedding + 2 high-res feature maps
                               (TorchScript; dynamic batching)
sam2_prompts       python      checks the prompts, fills the optional inputs' defaults
sam2_prompt_decoder onnxruntime features + points/labels (+ mask) -> masks, IoU, low-res logits
sam2_segment       ensemble    image bytes + points -> masks (the one-call contract)
sam2_embed_image   ensemble    image bytes -> features + orig size ("encode once" ...)
sam2_decode        ensemble    features + prompts -> masks ("... prompt many times")
================== =========== =============================================================

Formats (``fmt="auto"``) were chosen by measurement on this project's 2-core x86 CPU host,
fp32, 2 threads, hiera-tiny (``python -m tritonlens.bench.sam2.formats`` repeats it; median
seconds per call): the image encoder is fastest as TorchScript (1024 px: 2.46 s vs 2.49
eager torch vs 2.88 onnxruntime; 512 px: 0.55 vs 0.56 vs 0.56), the prompt decoder under
onnxruntime (1024 px: 92 ms vs 105 TorchScript vs 149 eager; 512 px: 17 vs 18 vs 26 ms).
Each config records its reason in ``tritonlens.format_reason``.

Precision and memory variants (as for CLIP): ``precision="int8"`` quantizes the
image encoder's weights with onnxruntime (the prompt decoder is small and mask-sensitive: it
stays fp32); ``profile="low-memory"`` stores both graphs' weights as 64 KiB-aligned ONNX
external data that onnxruntime memory-maps, turns the memory arena and patterns off, serves
one preprocessing instance and leaves the video tracker out unless ``video=True`` (it holds
a full torch copy of the model). Both variants are onnxruntime graphs, so they need
``fmt`` ``auto`` or ``onnx``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from tritonlens.export.config import (Step, Tensor, add_warmup, ensemble_config, instance_kind,
                                      model_config, warmup_image, write_model)
from tritonlens.export.core import ExportError, ExportOptions, save_graph
from tritonlens.export.onnx_variants import onnxruntime_parameters, precision_parameters
from tritonlens.export.repository import python_model_source
from tritonlens.export.sam2.modules import ImageEncoder, PromptDecoder
from tritonlens.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from tritonlens.serve.parameters import (DEVICE_PARAMETER, FAMILY_PARAMETER, FORMAT_PARAMETER,
                                         FORMAT_REASON_PARAMETER, IMAGE_SIZE_PARAMETER,
                                         PRECISION_PARAMETER, PROFILE_PARAMETER, WEIGHTS_PARAMETER)

# Short names -> sam2's packaged Hydra configs (sam2 1.1.0: configs/sam2 and configs/sam2.1).
CONFIG_NAMES = {
    f"{version}_hiera_{size}": f"configs/{version}/{version}_hiera_{size}.yaml"
    for version in ("sam2", "sam2.1") for size in ("t", "s", "b+", "l")
}
# What "auto" picks, and why (figures measured on this project's 2-core CPU host, fp32).
AUTO_FORMAT = {
    "sam2_image_encoder": ("torchscript", "fastest measured on a 2-core x86 CPU, fp32, 2 threads, "
                           "hiera-tiny: TorchScript 2.46 s vs onnxruntime 2.88 s per 1024-px "
                           "image (0.55 vs 0.56 s at 512 px)"),
    "sam2_prompt_decoder": ("onnx", "fastest measured on a 2-core x86 CPU, fp32, 2 threads, "
                            "hiera-tiny: onnxruntime 92 ms vs TorchScript 105 ms per prompt at "
                            "1024 px (17 vs 18 ms at 512 px)"),
}
# SAM2Transforms' normalisation (ImageNet mean/std, sam2/utils/transforms.py).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
DECODER_INPUTS = ("image_embedding", "high_res_feats_0", "high_res_feats_1", "point_coords",
                  "point_labels", "mask_input", "has_mask_input", "multimask_output", "orig_size")
DECODER_OUTPUTS = ("masks", "iou_scores", "low_res_masks")
ENCODER_OUTPUTS = ("image_embedding", "high_res_feats_0", "high_res_feats_1")


@dataclass(kw_only=True)
class Sam2ExportOptions(ExportOptions):
    """What ``tritonlens export sam2`` was asked to do (the options every family takes
    come from :class:`~tritonlens.export.core.ExportOptions`, with SAM 2's defaults).

    Attributes:
        config: a short name (``sam2.1_hiera_t``, ``sam2.1_hiera_s``, ``sam2.1_hiera_b+``,
            ``sam2.1_hiera_l``, or ``sam2_hiera_*``), a sam2 config name
            (``configs/sam2.1/sam2.1_hiera_t.yaml``) or a path to a Hydra YAML file.
        checkpoint: a local SAM 2 checkpoint (``{"model": state_dict}``, as Meta publishes
            them), or None/"none" for random initialisation (seeded with ``seed``; flagged
            in every config as ``tritonlens.weights: random``).
        image_size: S, the square input size in pixels (1024 for the released checkpoints;
            a multiple of 32; smaller is faster and coarser). One exported model per size:
            Hiera's window sizes and padding are fixed at trace time.
        fmt: ``auto`` (the measured choice per model, see AUTO_FORMAT), ``onnx`` or
            ``torchscript`` (the prompt decoder then follows too).
        max_batch_size: largest batch of images Triton forms for the image encoder.
        threads: intra-op threads per model instance (0: the host's cores / instances).
        max_queue_delay_us: the image encoder's dynamic batching delay in microseconds.
        precision: ``fp32`` or ``int8`` (onnxruntime dynamic quantization of the image
            encoder's weights; inputs and outputs keep their dtypes).
        profile: ``default`` or ``low-memory`` (see the module docstring).
        video: also export the video tracker (None: yes, except in the low-memory profile).
        device: ``cpu`` or ``gpu``: the image encoder's, prompt decoder's and tracker's
            instance groups are ``KIND_CPU`` or ``KIND_GPU``; image decoding and prompt
            checking (Python models) always run on the CPU.
        max_streams: video streams the tracker holds at once; a START beyond it is refused
            with a message naming the limit (``TrackerExportOptions.max_streams``).
        stream_idle_seconds: a video stream with no frame for this long is evicted and its
            state freed (``TrackerExportOptions.idle_us``).
    """

    FORMATS = ("auto", "onnx", "torchscript")
    PRECISIONS = ("fp32", "int8")
    FAMILY_NOTE = " for SAM 2"

    config: str = "sam2.1_hiera_t"
    checkpoint: str | None = None
    image_size: int = 1024
    fmt: str = "auto"
    max_batch_size: int = 4
    video: bool | None = None
    max_streams: int = 64
    stream_idle_seconds: float = 60.0


def resolve_config(config: str) -> tuple[str, Path | None]:
    """``(hydra config name, directory)``: directory is None for sam2's packaged configs.

    Raises:
        ExportError: neither a known short name, a packaged config, nor an existing file.
    """
    if config in CONFIG_NAMES:
        return CONFIG_NAMES[config], None
    path = Path(config)
    if path.is_file():
        return path.name, path.resolve().parent
    import sam2

    if (Path(sam2.__path__[0]) / config).is_file():
        return config, None
    raise ExportError(f"unknown SAM 2 config {config!r}: give one of "
                      f"{', '.join(CONFIG_NAMES)} or a path to a config YAML file")


def load_sam2(config: str, checkpoint: str | None, image_size: int, seed: int = 0):
    """Build SAM 2 through sam2's own ``build_sam2`` (CPU, eval mode).

    ``++model.image_size=<image_size>`` is passed as a Hydra override, so the prompt
    encoder, mask decoder and embedding sizes follow it. Returns ``(model, weights)`` where
    ``weights`` is ``"random"`` or the checkpoint path.

    Raises:
        ExportError: unknown config, missing or incompatible checkpoint.
    """
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2

    if image_size < 64 or image_size % 32:
        raise ExportError(f"--image-size must be a multiple of 32 and at least 64, not {image_size}")
    name, directory = resolve_config(config)
    if checkpoint in (None, "", "none"):
        checkpoint = None
        torch.manual_seed(seed)
    elif not os.path.isfile(checkpoint):
        raise ExportError(f"checkpoint file not found: {checkpoint} (SAM 2 checkpoints are "
                          "downloaded from Meta; pass the local .pt file, or 'none')")
    overrides = [f"++model.image_size={image_size}"]
    try:
        if directory is None:
            model = build_sam2(name, checkpoint, device="cpu", hydra_overrides_extra=overrides)
        else:
            GlobalHydra.instance().clear()
            try:
                with initialize_config_dir(config_dir=str(directory), version_base="1.2"):
                    model = build_sam2(name, checkpoint, device="cpu",
                                       hydra_overrides_extra=overrides)
            finally:
                GlobalHydra.instance().clear()
                initialize_config_module("sam2", version_base="1.2")
    except ExportError:
        raise
    except Exception as err:  # hydra, torch.load and load_state_dict fail in many types
        what = f"checkpoint {checkpoint}" if checkpoint else f"config {config}"
        raise ExportError(f"could not build SAM 2 from {what}: "
                          f"{type(err).__name__}: {err}".rstrip(": ")) from None
    return model.eval(), ("random" if checkpoint is None else str(checkpoint))


def _formats(fmt: str, precision: str = "fp32", profile: str = "default") -> dict[str, tuple[str, str]]:
    """model -> (format, reason) for the two exported graphs."""
    if fmt == "auto" and (precision, profile) != ("fp32", "default"):
        reason = (f"--precision {precision} --profile {profile} is an onnxruntime variant "
                  "(auto picks TorchScript for the fp32 default image encoder)")
        return {model: ("onnx", reason) for model in AUTO_FORMAT}
    if fmt == "auto":
        return dict(AUTO_FORMAT)
    reason = f"--format {fmt} was asked for (auto would pick: " \
             + ", ".join(f"{m} {f}" for m, (f, _) in AUTO_FORMAT.items()) + ")"
    return {model: (fmt, reason) for model in AUTO_FORMAT}


def check_options(options: Sam2ExportOptions) -> None:
    """Raise ExportError for option values or combinations that cannot be exported."""
    options.check()
    if options.fmt == "torchscript" and (options.precision, options.profile) != ("fp32", "default"):
        raise ExportError(f"--precision {options.precision} --profile {options.profile} is an "
                          "ONNX Runtime variant: use --format onnx or auto (TorchScript exports "
                          "are fp32 default)")
    if options.device == "gpu" and (options.precision, options.profile) != ("fp32", "default"):
        raise ExportError("--precision int8 and --profile low-memory are ONNX Runtime CPU "
                          "variants: use them with --device cpu")
    if options.instance_count < 1:
        raise ExportError("instance count must be at least 1")
    if options.max_streams < 1 or not options.stream_idle_seconds > 0:
        raise ExportError("--max-streams must be at least 1 and --stream-idle-seconds above 0")


def export_sam2(options: Sam2ExportOptions, repo: Path,
                report: Callable[[str], None] = lambda step: None) -> dict[str, str]:
    """Export SAM 2 per ``options`` into ``repo``; returns a summary (name -> value).

    ``report`` is called with a short description at the start of each step (the CLI
    shows it as a progress display).

    Raises:
        ExportError: bad options, config or checkpoint (all checked before the first file
            is written).
    """
    check_options(options)
    report(f"building {options.config} at {options.image_size} px "
           f"({'random weights' if options.checkpoint in (None, '', 'none') else options.checkpoint})")
    sam, weights = load_sam2(options.config, options.checkpoint, options.image_size, options.seed)
    size, embed = options.image_size, options.image_size // 16
    low_res = 4 * embed
    formats = _formats(options.fmt, options.precision, options.profile)
    video = options.video if options.video is not None else options.profile != "low-memory"
    # The encoder's instances share the cores (the video tracker takes them all too:
    # encoder_threads says why).
    from tritonlens.export.sam2.tracker import encoder_threads
    threads = options.threads or encoder_threads(options.instance_count)
    common = {FAMILY_PARAMETER: "sam2", "tritonlens.config": options.config,
              WEIGHTS_PARAMETER: weights, IMAGE_SIZE_PARAMETER: str(size),
              PRECISION_PARAMETER: "fp32", PROFILE_PARAMETER: options.profile,
              DEVICE_PARAMETER: options.device}
    kind = instance_kind(options.device)
    repo.mkdir(parents=True, exist_ok=True)

    def engine(model: str) -> tuple[str, str, dict[str, str]]:
        """(backend, output-name suffix, parameters) of an exported graph."""
        fmt, reason = formats[model]
        params = {**common, FORMAT_PARAMETER: fmt, FORMAT_REASON_PARAMETER: reason}
        if model == "sam2_image_encoder":
            params[PRECISION_PARAMETER] = options.precision
            params.update(precision_parameters(options.precision))
        if fmt == "onnx":
            return "onnxruntime", "", {**params, **onnxruntime_parameters(
                options.profile, options.instance_count, threads)}
        # The native pytorch backend names outputs <name>__<index>.
        return "pytorch", "__{}", {**params, "INTRA_OP_THREAD_COUNT": str(threads)}

    features = [Tensor("image_embedding", "fp32", (256, embed, embed)),
                Tensor("high_res_feats_0", "fp32", (32, 4 * embed, 4 * embed)),
                Tensor("high_res_feats_1", "fp32", (64, 2 * embed, 2 * embed))]
    one = [Tensor(t.name, t.dtype, (1, *t.dims)) for t in features]  # one image, no batching
    orig_size = Tensor("orig_size", "int32", (2,))
    decoder_inputs = [*one, Tensor("point_coords", "fp32", (-1, 2)),
                      Tensor("point_labels", "int32", (-1,)),
                      Tensor("mask_input", "fp32", (1, low_res, low_res)),
                      Tensor("has_mask_input", "fp32", (1,)),
                      Tensor("multimask_output", "bool", (1,)), orig_size]
    results = [Tensor("masks", "bool", (-1, -1, -1)), Tensor("iou_scores", "fp32", (-1,)),
               Tensor("low_res_masks", "fp32", (-1, low_res, low_res))]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # -- image encoder: dynamic batching over images --------------------------------
        backend, suffix, params = engine("sam2_image_encoder")
        report(f"exporting sam2_image_encoder ({formats['sam2_image_encoder'][0]}, "
               "the slow step)")
        out_names = tuple(n + suffix.format(i) for i, n in enumerate(ENCODER_OUTPUTS))
        work = tmp / "encoder"
        work.mkdir()
        files = save_graph(ImageEncoder(sam, size), (torch.zeros(2, 3, size, size),),
                           ("pixels",), out_names,
                           {n: {0: "batch"} for n in ("pixels", *out_names)},
                           formats["sam2_image_encoder"][0], options.opset, work,
                           precision=options.precision, profile=options.profile)
        encoder_config = model_config(
            "sam2_image_encoder", backend, [Tensor("pixels", "fp32", (3, size, size))],
            [Tensor(n, t.dtype, t.dims) for n, t in zip(out_names, features)],
            max_batch_size=options.max_batch_size, max_queue_delay_us=options.max_queue_delay_us,
            instance_count=options.instance_count, instance_kind=kind, parameters=params)
        # Zero pixels are a valid (mid-grey after normalisation) image: every instance runs
        # the encoder once at load instead of on the first client request.
        write_model(repo, encoder_config, files,
                    extra=add_warmup(encoder_config, {"pixels": "zero"}))
        encoder_map = dict(zip(out_names, ENCODER_OUTPUTS))

        # -- prompt decoder: one image per request, any number of points ----------------
        backend, suffix, params = engine("sam2_prompt_decoder")
        report(f"exporting sam2_prompt_decoder ({formats['sam2_prompt_decoder'][0]})")
        with torch.no_grad():
            example_features = ImageEncoder(sam, size).eval()(torch.zeros(1, 3, size, size))
        example = (*example_features, torch.tensor([[10.0, 20.0], [30.0, 40.0]]),
                   torch.tensor([1, 0], dtype=torch.int32), torch.zeros(1, low_res, low_res),
                   torch.zeros(1), torch.tensor([True]),
                   torch.tensor([size, size], dtype=torch.int32))
        out_names = tuple(n + suffix.format(i) for i, n in enumerate(DECODER_OUTPUTS))
        work = tmp / "decoder"
        work.mkdir()
        files = save_graph(PromptDecoder(sam), example, DECODER_INPUTS, out_names,
                           {"point_coords": {0: "points"}, "point_labels": {0: "points"},
                            out_names[0]: {0: "masks", 1: "height", 2: "width"},
                            out_names[1]: {0: "masks"}, out_names[2]: {0: "masks"}},
                           formats["sam2_prompt_decoder"][0], options.opset, work,
                           profile=options.profile)
        # No batching: every request is one image with its own prompts and original size,
        # so requests are never concatenated (their point and mask counts differ).
        # No model_warmup: point_coords / point_labels have a variable dim (-1), which a
        # warmup sample must make concrete, and add_warmup's only non-BYTES data are zero
        # (orig_size 0 x 0: empty masks) or random (orig_size of any int32) samples.
        write_model(repo, model_config(
            "sam2_prompt_decoder", backend, decoder_inputs,
            [Tensor(n, t.dtype, t.dims) for n, t in zip(out_names, results)], batching="none",
            instance_count=options.instance_count, instance_kind=kind, parameters=params), files)
        decoder_map = dict(zip(out_names, DECODER_OUTPUTS))

    report("writing sam2_preprocess, sam2_prompts and the ensembles")
    image = Tensor("image", "bytes", (1,))
    preprocess_config = model_config(
        "sam2_preprocess", "python", [image],
        [Tensor("pixels", "fp32", (1, 3, size, size)), orig_size], batching="none",
        instance_count=1 if options.profile == "low-memory" else max(1, min(2, threads)),
        parameters={**common, "image_size": str(size),
                    "pixel_mean": ",".join(map(str, PIXEL_MEAN)),
                    "pixel_std": ",".join(map(str, PIXEL_STD)),
                    "max_image_pixels": str(DEFAULT_MAX_PIXELS),
                    "max_image_bytes": str(DEFAULT_MAX_BYTES)})
    write_model(repo, preprocess_config, {"model.py": python_model_source("sam2_preprocess")},
                extra=add_warmup(preprocess_config, {"image": warmup_image()}))

    prompt_inputs = [Tensor("point_coords", "fp32", (-1, 2)), Tensor("point_labels", "int32", (-1,)),
                     orig_size, Tensor("multimask_output", "bool", (1,), optional=True),
                     Tensor("mask_input", "fp32", (1, low_res, low_res), optional=True)]
    # image_embedding (optional, unread) orders sam2_prompts after the encoder in sam2_segment:
    # Triton 2.51 leaks an ensemble request whose step fails while a sibling step is still
    # running (shutdown then waits on its "in-flight inferences"), so no two steps run at once.
    write_model(repo, model_config(
        "sam2_prompts", "python", [*prompt_inputs, Tensor(one[0].name, "fp32", one[0].dims, optional=True)],
        [Tensor("checked_" + t.name, t.dtype, t.dims) for t in decoder_inputs[3:8]],
        batching="none", parameters={**common, "mask_input_size": str(low_res)}),
        {"model.py": python_model_source("sam2_prompts")})

    def prompts(*optional: str) -> Step:
        names = ("point_coords", "point_labels", "orig_size", *optional)
        return Step("sam2_prompts", {n: n for n in names},
                    {"checked_" + n: "checked_" + n for n in DECODER_INPUTS[3:8]})

    decode = Step("sam2_prompt_decoder",
                  {**{n: n for n in (*ENCODER_OUTPUTS, "orig_size")},
                   **{n: "checked_" + n for n in DECODER_INPUTS[3:8]}},
                  decoder_map)
    preprocess = Step("sam2_preprocess", {"image": "image"},
                      {"pixels": "pixels", "orig_size": "orig_size"})
    encode = Step("sam2_image_encoder", {"pixels": "pixels"}, encoder_map)
    segment = ensemble_config(
        "sam2_segment", [image, *prompt_inputs[:2], prompt_inputs[3]], results,
        [preprocess, encode, prompts("multimask_output", "image_embedding"), decode], max_batch_size=0)
    write_model(repo, segment)
    write_model(repo, ensemble_config("sam2_embed_image", [image], [*one, orig_size],
                                      [preprocess, encode], max_batch_size=0))
    write_model(repo, ensemble_config("sam2_decode", [*one, *prompt_inputs], results,
                                      [prompts("multimask_output", "mask_input"), decode],
                                      max_batch_size=0))
    if video:  # the video tracker: sam2_frame_preprocess, sam2_tracker, sam2_track
        from tritonlens.export.sam2.tracker import export_tracker_beside_image_models
        report("writing sam2_frame_preprocess, sam2_tracker and the sam2_track ensemble")
        tracker = export_tracker_beside_image_models(sam, repo, options, common)
    return {"config": options.config, "weights": weights, "image_size": str(size),
            "device": options.device,
            "precision": options.precision, "profile": options.profile,
            "video tracker": (tracker.get("tracker", "yes") if video else "no (--video to add it)"),
            "image_encoder": formats["sam2_image_encoder"][0],
            "prompt_decoder": formats["sam2_prompt_decoder"][0],
            "embedding": f"256x{embed}x{embed}", "low_res_masks": f"{low_res}x{low_res}",
            "repository": str(repo)}

