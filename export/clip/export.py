"""Export an OpenCLIP model into a Triton model repository.

``export_clip`` writes these models (contracts in docs/clip.md):

==================== =========== =====================================================
model                backend     what it does
==================== =========== =====================================================
clip_preprocess      python      image bytes -> UINT8 [S, S, 3], open_clip's eval transform
clip_image_encoder   onnxruntime UINT8 [S, S, 3] -> FP32 [D] unit-norm embedding
clip_tokenize        python      text -> INT64 [L] token ids, open_clip's tokenizer
clip_text_encoder    onnxruntime INT64 [L] -> FP32 [D] unit-norm embedding
clip_zero_shot       onnxruntime FP32 [D] -> FP32 [C] label probabilities, labels.txt
clip_classify        ensemble    image bytes -> probabilities (class_count gives top-k)
clip_embed_image     ensemble    image bytes -> embedding
clip_embed_text      ensemble    text -> embedding
clip_rank            python      images + candidate texts -> probabilities (BLS, rank.py)
==================== =========== =====================================================

(``pytorch`` instead of ``onnxruntime`` with ``fmt="torchscript"``.)
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from tritonlens.export.clip.hf_tokenizer import prepare_hf_tokenizer
from tritonlens.export.clip.modules import ImageEncoder, TextEncoder, ZeroShotHead
from tritonlens.export.clip.rank import write_rank_model
from tritonlens.export.config import (Step, Tensor, add_warmup, ensemble_config, instance_kind,
                                      model_config, warmup_image, write_model)
from tritonlens.export.core import ExportError, ExportOptions, save_graph
from tritonlens.export.onnx_variants import onnxruntime_parameters, precision_parameters
from tritonlens.export.repository import python_model_source
from tritonlens.serve.clip import names
from tritonlens.serve.clip.names import (DEFAULT_INTERPOLATION, DEFAULT_RESIZE_MODE, INTERPOLATIONS,
                                         RESIZE_MODES)
from tritonlens.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from tritonlens.serve.parameters import (DEVICE_PARAMETER, FAMILY_PARAMETER, FORMAT_PARAMETER,
                                         INSTANCES_REASON_PARAMETER, MODEL_NAME_PARAMETER,
                                         PRECISION_PARAMETER, PROFILE_PARAMETER,
                                         TOKENIZER_SOURCE_PARAMETER, WEIGHTS_PARAMETER)



@dataclass(kw_only=True)
class ClipExportOptions(ExportOptions):
    """What ``tritonlens export clip`` was asked to do (the options every family takes
    come from :class:`~tritonlens.export.core.ExportOptions`, with CLIP's defaults).

    Attributes:
        model: an open_clip architecture name (``open_clip.list_models()``), e.g. ViT-B-32.
        pretrained: an open_clip pretrained tag, a local checkpoint path, or None/"none"
            for random initialisation (seeded with ``seed``; flagged everywhere).
        labels: class names, one per label, in output order.
        templates: prompt templates with ``{}`` for the class name; None uses open_clip's
            80 ImageNet templates (``OPENAI_IMAGENET_TEMPLATES``).
        fmt: ``onnx`` (served by the onnxruntime backend) or ``torchscript`` (pytorch).
        max_batch_size: largest batch Triton forms for the image models (text: twice).
        instance_count: instances per encoder model (0: automatic, see AUTO_INSTANCES_REASON).
        threads: intra-op threads per encoder instance (0: the host's cores / instances).
        max_queue_delay_us: dynamic batching delay in microseconds.
        precision: ``fp32``; ``int8`` (onnxruntime dynamic quantization of the encoders'
            weights, for CPU hosts); ``fp16`` (the towers in fp16; needs ``device="gpu"``).
        device: ``cpu`` or ``gpu``: the encoders' and zero-shot head's instance groups are
            ``KIND_CPU`` or ``KIND_GPU`` (one instance per GPU by default); preprocessing and
            tokenizer models always run on the CPU.
        profile: ``default`` or ``low-memory`` (CPU: weights as 64 KiB-aligned external
            data that onnxruntime memory-maps, weight pre-packing, memory arena and memory
            patterns off, one preprocessing instance, and no text models unless ``text``).
        prefix: model names are ``<prefix>_image_encoder`` ..., so variants can share a
            repository (``clip_int8`` beside ``clip``).
        text: export the text path (tokenizer, text encoder, ``<prefix>_embed_text``);
            None: yes, except in the low-memory profile (zero-shot classification needs no
            text model at serving time: the label embeddings are graph constants).
        jpeg_draft: clip_preprocess decodes JPEGs with libjpeg's DCT scaling to the smallest
            size >= 2 x the input size (``serve.clip.preprocess.ClipPreprocess``): a 12 MP
            photo's preprocessing 142 -> 29 ms, pixels within a few levels of open_clip's
            full decode instead of identical. Off by default (exact parity).
        tokenizer: a local folder with the model's Hugging Face tokenizer (SigLIP, SigLIP 2,
            CLIPA, MetaCLIP 2: models whose open_clip config names ``hf_tokenizer_name``),
            copied into ``<prefix>_tokenize`` (``export.clip.hf_tokenizer``); None for models
            on open_clip's own tokenizer.
    """

    PRECISIONS = ("fp32", "fp16", "int8")

    model: str = "ViT-B-32"
    pretrained: str | None = None
    labels: list[str] = field(default_factory=list)
    templates: list[str] | None = None
    instance_count: int = 0
    prefix: str = "clip"
    text: bool | None = None
    jpeg_draft: bool = False
    tokenizer: str | None = None


# model_warmup samples (export/config.add_warmup): a text for clip_tokenize, and a small
# PNG for clip_preprocess (export/config.warmup_image: decoded, resized and cropped as any
# client image is).
WARMUP_TEXT = b"a photo of a cat"


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file (labels or templates)."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise ExportError(f"{what} file not found: {path}") from None
    except UnicodeDecodeError:
        raise ExportError(f"{what} file is not UTF-8 text: {path}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise ExportError(f"{what} file is empty: {path}")
    return lines


def load_open_clip(model: str, pretrained: str | None, seed: int = 0):
    """Build an open_clip model (eval mode, CPU) and say where its weights came from.

    Returns ``(model, preprocess_cfg, weights)`` where ``weights`` is ``"random"`` or the
    pretrained tag / checkpoint path.

    Raises:
        ExportError: unknown architecture, or weights that cannot be loaded (hub tags need
            network access to the model hub; pass a local checkpoint path instead).
    """
    import open_clip

    if model not in open_clip.list_models():
        raise ExportError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
    if pretrained in (None, "", "none"):
        torch.manual_seed(seed)
        pretrained = None
    elif not os.path.exists(pretrained) and pretrained not in open_clip.list_pretrained_tags_by_model(model):
        raise ExportError(f"--pretrained {pretrained!r} is neither a local checkpoint file nor a "
                          f"pretrained tag of {model} (tags: "
                          f"{', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'})")
    try:
        clip = open_clip.create_model(model, pretrained=pretrained, device="cpu")
    except Exception as err:  # hub download failures come in many exception types
        raise ExportError(f"could not load weights {pretrained!r} for {model}: {err}. A pretrained "
                          "tag downloads from a model hub; offline, pass a local checkpoint path")
    clip.eval()
    cfg = open_clip.get_model_preprocess_cfg(clip)
    return clip, cfg, ("random" if pretrained is None else str(pretrained))


def label_embeddings(clip, model: str, labels: list[str], templates: list[str] | None,
                     show_progress: bool = False, tokenizer=None) -> torch.Tensor:
    """fp32 [D, C]: open_clip's ``build_zero_shot_classifier`` over labels x templates.

    Each class name is put into every template, the texts are encoded, their unit-norm
    embeddings averaged and the mean renormalised (Radford et al. 2021, prompt ensembling).
    ``tokenizer`` (texts -> INT64 numpy [N, L]) replaces ``open_clip.get_tokenizer(model)``:
    the served Hugging Face tokenizer (``export.clip.hf_tokenizer``).
    """
    import open_clip
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    if templates is not None:
        bad = [t for t in templates if "{}" not in t]
        if bad:
            raise ExportError(f"template without '{{}}' for the class name: {bad[0]!r}")
    encode = open_clip.get_tokenizer(model) if tokenizer is None else (
        lambda texts: torch.from_numpy(tokenizer(texts)))
    with torch.no_grad():
        return open_clip.build_zero_shot_classifier(
            clip, encode, labels, templates or OPENAI_IMAGENET_TEMPLATES,
            num_classes_per_batch=8, device="cpu", use_tqdm=show_progress)


def check_options(options: ClipExportOptions) -> None:
    """Refuse bad options and bad combinations before anything is loaded or written.

    Raises:
        ExportError: naming the option and what to do instead.
    """
    options.check()
    if options.precision != "fp32" and options.fmt != "onnx":
        raise ExportError(f"--precision {options.precision} is an ONNX Runtime variant: "
                          "use --format onnx (TorchScript exports are fp32)")
    if options.profile == "low-memory" and options.fmt != "onnx":
        raise ExportError("--profile low-memory is an ONNX Runtime CPU profile: use --format onnx")
    if options.precision == "fp16" and options.device != "gpu":
        raise ExportError("--precision fp16 is for GPU instances (onnxruntime's CPU provider has "
                          "no fp16 kernels for these graphs): add --device gpu, or use fp32/int8")
    if options.device == "gpu" and (options.precision == "int8" or options.profile == "low-memory"):
        raise ExportError("--precision int8 and --profile low-memory are ONNX Runtime CPU "
                          "variants: use them with --device cpu (fp32 or fp16 on GPUs)")
    if not options.labels:
        raise ExportError("no labels: give a labels file with one class name per line")
    if len(set(options.labels)) != len(options.labels):
        dup = next(l for l in options.labels if options.labels.count(l) > 1)
        raise ExportError(f"label {dup!r} appears more than once in the labels file")
    if not options.prefix.isidentifier():
        raise ExportError(f"--prefix must be letters, digits and underscores, not {options.prefix!r}")


# Why ``instance_count=0`` (automatic) serves two instances per encoder in the default CPU
# profile: measured on the 2-core host, ViT-B-32 fp32, clip_classify over gRPC, 1 x 2 threads
# vs 2 x 1 thread: 12.98/12.56 vs 14.39/16.06 req/s at concurrency 8 (A/B twice), 11.10 vs
# 14.89 in bench's tuning run; 9.86/10.38 vs 11.56/11.25 at concurrency 2 (12.32 vs 13.09 in
# bench/studies/profiles.py). While one instance waits on its batch's tail, the other computes. It
# costs one more private copy of the weights (~+650 MB peak for ViT-B-32), which the default
# profile spends and the low-memory profile does not (one instance there).
AUTO_INSTANCES_REASON = ("2 instances x (cores / 2) threads: +6-22% clip_classify throughput at "
                         "concurrency 2, +11-34% at 8, vs 1 x cores on the 2-core host (ViT-B-32 "
                         "fp32), for one more copy of the weights")
# The text encoder does not get the second instance: texts come in large batches (bulk
# embedding, chunked to max_batch_size), where one instance with all the cores is as fast.
# Measured side by side on the 2-core AVX2 host, ViT-B-32 default export, 1500 texts through
# ClipClient: 2 x 1 thread 16 and 15 texts/s, 1 x 2 threads 18 and 15 texts/s (clip_classify
# unchanged within noise); the server's idle PSS 1554 -> 1278 MB, after the load 2294 -> 1799 MB.
TEXT_INSTANCES_REASON = ("1 instance x cores threads: texts/s equal to 2 x (cores / 2) on the 2-core "
                         "host (ViT-B-32 fp32, bulk batches), for one copy of the weights less "
                         "(server PSS 1554 -> 1278 MB idle)")


def engine_settings(options: ClipExportOptions, tower: str = "image") -> tuple[int, int, dict[str, str]]:
    """(instances, intra-op threads per instance, backend parameters) of the ``image`` tower's
    models (image encoder, zero-shot head) or of the ``text`` encoder.

    ``instance_count=0`` picks min(2, cores) instances of the image tower for ONNX CPU
    exports in the default profile (see ``AUTO_INSTANCES_REASON``, recorded in the configs),
    one text encoder with all the cores (``TEXT_INSTANCES_REASON``), and 1 otherwise
    (low-memory: one copy of the weights; TorchScript and GPU instances: not measured).
    Parameter names are the native backends' (pytorch: ``INTRA_OP_THREAD_COUNT``; onnxruntime:
    see ``onnxruntime_parameters``), so the NGC container honours them too.
    """
    cores = os.cpu_count() or 1
    auto = (options.instance_count < 1 and options.profile == "default" and options.fmt == "onnx"
            and options.device == "cpu")
    if auto:
        instances = min(2, cores) if tower == "image" else 1
    else:
        instances = max(1, options.instance_count)
    # Instances x threads must not oversubscribe the host's cores.
    threads = options.threads or max(1, cores // instances)
    if options.fmt == "torchscript":
        return instances, threads, {"INTRA_OP_THREAD_COUNT": str(threads)}
    params = onnxruntime_parameters(options.profile, instances, threads)
    if auto:
        params[INSTANCES_REASON_PARAMETER] = (AUTO_INSTANCES_REASON if tower == "image"
                                                 else TEXT_INSTANCES_REASON)
    return instances, threads, params


def export_clip(options: ClipExportOptions, repo: Path,
                report: Callable[[str], None] = lambda step: None,
                show_progress: bool = False) -> dict[str, str]:
    """Export CLIP per ``options`` into ``repo``; returns a summary (name -> value).

    ``report`` is called with a short description at the start of each step (the CLI shows
    it as a progress display). Model names are ``<prefix>_image_encoder`` etc.
    (``clip_...`` by default), so variants can share one repository.

    Raises:
        ExportError: bad options, labels, templates or weights (nothing is half-written for
            such errors: they are all checked before the first file is written).
    """
    check_options(options)
    hf_tokenizer = prepare_hf_tokenizer(options.model, options.tokenizer)
    report(f"loading {options.model} ({options.pretrained or 'random weights'})")
    clip, cfg, weights = load_open_clip(options.model, options.pretrained, options.seed)
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    if isinstance(cfg["size"], (tuple, list)) and cfg["size"][0] != cfg["size"][1]:
        raise ExportError(f"{options.model}: non-square input {cfg['size']} is not supported")
    if cfg.get("resize_mode", DEFAULT_RESIZE_MODE) not in RESIZE_MODES:
        raise ExportError(f"{options.model}: resize_mode {cfg['resize_mode']!r} not supported")
    if cfg.get("interpolation", DEFAULT_INTERPOLATION) not in INTERPOLATIONS:
        raise ExportError(f"{options.model}: interpolation {cfg['interpolation']!r} not supported")
    context_length = int(getattr(clip, "context_length", 77))
    logit_bias = getattr(clip, "logit_bias", None)

    report(f"encoding {len(options.labels)} labels x "
           f"{len(options.templates) if options.templates else 80} prompt templates")
    classifier = label_embeddings(clip, options.model, options.labels, options.templates,
                                  show_progress,  # always in fp32, before any precision change
                                  hf_tokenizer.tokenizer if hf_tokenizer else None)
    logit_scale = clip.logit_scale.exp().item()
    embed_dim = int(classifier.shape[0])
    text = options.text if options.text is not None else options.profile != "low-memory"

    instances, threads, engine_params = engine_settings(options)
    backend = "onnxruntime" if options.fmt == "onnx" else "pytorch"
    suffix = "" if options.fmt == "onnx" else "__0"  # native pytorch backend output naming
    name = lambda part: f"{options.prefix}_{part}"  # noqa: E731
    common = {
        FAMILY_PARAMETER: "clip",
        MODEL_NAME_PARAMETER: options.model,
        WEIGHTS_PARAMETER: weights,
        FORMAT_PARAMETER: options.fmt,
        PRECISION_PARAMETER: options.precision,
        PROFILE_PARAMETER: options.profile,
        DEVICE_PARAMETER: options.device,
        **engine_params,
    }
    kind = instance_kind(options.device)
    mbs, text_mbs = options.max_batch_size, 2 * options.max_batch_size
    batching = dict(max_queue_delay_us=options.max_queue_delay_us, instance_count=instances,
                    instance_kind=kind)
    tower_dtype = torch.float16 if options.precision == "fp16" else torch.float32
    repo.mkdir(parents=True, exist_ok=True)
    pixels = Tensor("pixels", "uint8", (size, size, 3))
    token_ids = Tensor("token_ids", "int64", (context_length,))
    n_labels = len(options.labels)
    labels_txt = "\n".join(options.labels) + "\n"

    graphs = [(name("image_encoder"), ImageEncoder(clip, cfg["mean"], cfg["std"], tower_dtype),
               torch.zeros(2, size, size, 3, dtype=torch.uint8), pixels,
               Tensor("embedding" + suffix, "fp32", (embed_dim,)), mbs, options.precision)]
    if text:
        graphs.append((name("text_encoder"), TextEncoder(clip, tower_dtype),
                       torch.zeros(2, context_length, dtype=torch.int64), token_ids,
                       Tensor("embedding" + suffix, "fp32", (embed_dim,)), text_mbs, options.precision))
    # The zero-shot head is one small matmul: it stays fp32 in every precision.
    graphs.append((name("zero_shot"), ZeroShotHead(classifier, logit_scale,
                                                   None if logit_bias is None else logit_bias.item()),
                   torch.zeros(2, embed_dim), Tensor("embedding", "fp32", (embed_dim,)),
                   Tensor("probabilities" + suffix, "fp32", (n_labels,), label_filename="labels.txt"),
                   text_mbs, "fp32"))
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, module, example, inp, out, model_mbs, precision in graphs:
            report(f"exporting {model_name} ({options.fmt}, {precision}, {options.profile})")
            work = Path(tmp) / model_name
            work.mkdir()
            files = save_graph(module, (example,), (inp.name,), (out.name,),
                               {inp.name: {0: "batch"}, out.name: {0: "batch"}},
                               options.fmt, options.opset, work, precision=precision,
                               profile=options.profile)
            tower = "text" if model_name == name("text_encoder") else "image"
            model_instances, _, model_engine_params = engine_settings(options, tower)
            params = dict(common, **model_engine_params, **{PRECISION_PARAMETER: precision},
                          **precision_parameters(precision))
            config = model_config(model_name, backend, [inp], [out], max_batch_size=model_mbs,
                                  parameters=params, **dict(batching, instance_count=model_instances))
            extra = {"labels.txt": labels_txt} if out.label_filename else {}
            extra.update(add_warmup(config, {inp.name: "zero"}))  # valid pixels, token ids, embeddings
            write_model(repo, config, files, extra=extra)

    report(f"writing {name('preprocess')}, the ensembles" + (f" and {name('tokenize')}" if text else ""))
    preprocess_instances = 1 if options.profile == "low-memory" else max(1, min(2, os.cpu_count() or 1))
    preprocess_config = model_config(
        name("preprocess"), "python", [Tensor("image", "bytes", (1,))], [pixels],
        max_batch_size=mbs, max_queue_delay_us=0, instance_count=preprocess_instances,
        parameters={names.IMAGE_SIZE: str(size),
                    names.RESIZE_MODE: cfg.get("resize_mode", DEFAULT_RESIZE_MODE),
                    names.INTERPOLATION: cfg.get("interpolation", DEFAULT_INTERPOLATION),
                    "max_image_pixels": str(DEFAULT_MAX_PIXELS),
                    "max_image_bytes": str(DEFAULT_MAX_BYTES),
                    names.APPLY_EXIF_ORIENTATION: "false",
                    names.JPEG_DRAFT: "true" if options.jpeg_draft else "false",
                    FAMILY_PARAMETER: "clip",
                    PROFILE_PARAMETER: options.profile})
    write_model(repo, preprocess_config, {"model.py": python_model_source("clip_preprocess")},
                extra=add_warmup(preprocess_config, {"image": warmup_image()}))

    image = Tensor("image", "bytes", (1,))
    embedding = Tensor("embedding", "fp32", (embed_dim,))
    preprocess = Step(name("preprocess"), {"image": "image"}, {"pixels": "pixels"})
    encode = Step(name("image_encoder"), {"pixels": "pixels"}, {"embedding" + suffix: "embedding"})
    write_model(repo, ensemble_config(
        name("classify"), [image],
        [Tensor("probabilities", "fp32", (n_labels,), label_filename="labels.txt")],
        [preprocess, encode, Step(name("zero_shot"), {"embedding": "embedding"},
                                  {"probabilities" + suffix: "probabilities"})],
        max_batch_size=mbs), extra={"labels.txt": labels_txt})
    write_model(repo, ensemble_config(name("embed_image"), [image], [embedding],
                                      [preprocess, encode], max_batch_size=mbs))
    if text:
        tokenize_config = model_config(
            name("tokenize"), "python", [Tensor("text", "bytes", (1,))], [token_ids],
            max_batch_size=text_mbs, parameters={"model_name": options.model,
                                                 "context_length": str(context_length),
                                                 FAMILY_PARAMETER: "clip",
                                                 **(hf_tokenizer.parameters if hf_tokenizer else {})})
        write_model(repo, tokenize_config, {"model.py": python_model_source("clip_tokenize"),
                                            **(hf_tokenizer.files if hf_tokenizer else {})},
                    extra=add_warmup(tokenize_config, {"text": WARMUP_TEXT}))
        write_model(repo, ensemble_config(
            name("embed_text"), [Tensor("text", "bytes", (1,))], [embedding],
            [Step(name("tokenize"), {"text": "text"}, {"token_ids": "token_ids"}),
             Step(name("text_encoder"), {"token_ids": "token_ids"}, {"embedding" + suffix: "embedding"})],
            max_batch_size=text_mbs))
        write_rank_model(repo, options.prefix, max_queries=mbs, image_batch=mbs, text_batch=text_mbs,
                         encoder_output="embedding" + suffix, logit_scale=logit_scale,
                         logit_bias=None if logit_bias is None else logit_bias.item(),
                         parameters=common)
    return {"model": options.model, "weights": weights, "format": options.fmt,
            "device": options.device,
            "precision": options.precision, "profile": options.profile,
            "models": ", ".join(sorted(p.name for p in repo.iterdir()
                                       if p.name.startswith(options.prefix + "_"))),
            "image_size": str(size), "embedding_dim": str(embed_dim), "labels": str(n_labels),
            "tokenizer": (hf_tokenizer.parameters[TOKENIZER_SOURCE_PARAMETER] if hf_tokenizer
                          else "open_clip's"),
            "threads x instances": f"{threads} x {instances}" + (
                "" if not text else " (text encoder: {1} x {0})".format(*engine_settings(options, "text"))),
            "repository": str(repo)}
