"""The ``clip`` plugin: ``tritonlens export clip``, ``tritonlens classify``, ``tritonlens embed``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tritonlens.client.base import TritonLensError
from tritonlens.client.clip import Classification, ClipClient, map_concurrent
from tritonlens.client.options import (DEFAULT_REPO, Protocol, Repo, Url, check_output_path,
                                       check_protocol, console, err_console, fail, run_export,
                                       warn_random_weights)
from tritonlens.client.plugins import Plugin

CLIP_MODELS = ("clip_preprocess", "clip_image_encoder", "clip_tokenize", "clip_text_encoder",
               "clip_zero_shot", "clip_classify", "clip_embed_image", "clip_embed_text")


def export(
    labels: Annotated[Path, typer.Option(help="Class names, one per line, in output order")],
    model: Annotated[str, typer.Option(help="open_clip architecture (open_clip.list_models())")] = "ViT-B-32",
    pretrained: Annotated[str, typer.Option(
        help="open_clip pretrained tag, a local checkpoint path, or 'none' for random weights "
             "(flagged in the configs, the server log and every client)")] = "none",
    templates: Annotated[Path | None, typer.Option(
        help="Prompt templates, one per line, '{}' marks the class name "
             "[default: open_clip's 80 ImageNet templates]")] = None,
    format: Annotated[str, typer.Option("--format", help="onnx or torchscript")] = "onnx",
    repo: Repo = DEFAULT_REPO,
    max_batch_size: Annotated[int, typer.Option(help="Largest batch Triton forms (images)")] = 32,
    threads: Annotated[int, typer.Option(help="Intra-op threads per encoder instance, 0 = cores / instances")] = 0,
    instances: Annotated[int, typer.Option(
        help="Instances per encoder model; 0 = automatic (2 on a CPU host in the default "
             "profile, measured faster; 1 in low-memory)")] = 0,
    seed: Annotated[int, typer.Option(help="Seed for random initialisation (--pretrained none)")] = 0,
    precision: Annotated[str, typer.Option(
        help="fp32; int8 (onnxruntime dynamic quantization, CPU hosts); fp16 (with --device gpu)")] = "fp32",
    profile: Annotated[str, typer.Option(
        help="default, or low-memory (CPU: memory-mapped external weights, no memory arena, "
             "pre-packing only with one instance, one preprocessing instance, no text models "
             "unless --text)")] = "default",
    prefix: Annotated[str, typer.Option(
        help="Model-name prefix, to serve variants side by side (e.g. clip_int8)")] = "clip",
    text: Annotated[bool | None, typer.Option(
        "--text/--no-text", help="Export the text path [default: yes, no for low-memory]")] = None,
    device: Annotated[str, typer.Option(
        help="cpu or gpu: instance groups KIND_CPU or KIND_GPU for the encoders and the "
             "zero-shot head (preprocessing stays on the CPU); fp16 needs gpu")] = "cpu",
) -> None:
    """Export an OpenCLIP model into a Triton model repository.

    Writes clip_image_encoder, clip_text_encoder, clip_zero_shot (label embeddings computed
    once, stored as graph constants, labels wired to Triton's classification extension),
    clip_preprocess, clip_tokenize and the ensembles clip_classify, clip_embed_image and
    clip_embed_text, each with dynamic batching.

    Example: tritonlens export clip --model ViT-B-32 --pretrained ./vit_b_32.pt --labels labels.txt
    """
    from tritonlens.export.clip import ClipExportOptions, ExportError, export_clip
    from tritonlens.export.clip.export import read_lines

    try:
        options = ClipExportOptions(
            model=model, pretrained=pretrained, labels=read_lines(labels, "labels"),
            templates=read_lines(templates, "templates") if templates else None, fmt=format,
            max_batch_size=max_batch_size, threads=threads, instance_count=instances, seed=seed,
            precision=precision, profile=profile, prefix=prefix, text=text,
            device=device)
        run_export("CLIP", export_clip, options, repo)
    except ExportError as err:
        fail(str(err))


def classification_table(result: Classification, title: str) -> Table:
    """A rich table of one image's top-k labels: rank, label, probability."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for rank, label in enumerate(result.labels, 1):
        table.add_row(str(rank), label.label, f"{label.score:.4f}")
    return table


def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, WebP)")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels to show per image")] = 5,
    url: Url = None,
    protocol: Protocol = "grpc",
    concurrency: Annotated[int, typer.Option(help="Requests in flight")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of tables")] = False,
    prefix: Annotated[str, typer.Option(help="Model-name prefix of the export")] = "clip",
) -> None:
    """Classify images with the served zero-shot CLIP model (clip_classify).

    Images are sent concurrently, one request each, so Triton's dynamic batcher groups
    them. A bad image fails alone, with the server's reason; the exit code is 1 if any did.
    """
    if top_k < 1:
        fail(f"--top-k must be at least 1, not {top_k}")
    client = ClipClient(url, check_protocol(protocol), prefix=prefix)
    try:
        client.check_ready(client.classify_model)
        weights = client.weights()
    except TritonLensError as err:
        fail(str(err))
    warn_random_weights(weights)
    with Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("", total=len(images))
        results = map_concurrent(lambda image: client.classify(image, top_k), images, concurrency,
                                 on_done=lambda: progress.advance(task))
    failed = 0
    for image, result in zip(images, results):
        if isinstance(result, TritonLensError):
            failed += 1
            err_console.print(f"[bold red]error:[/] {image}: {result}", highlight=False)
        elif as_json:
            print(json.dumps({"image": str(image), "weights": weights, "labels": [
                {"label": l.label, "index": l.index, "score": l.score} for l in result.labels]}))
        else:
            console.print(classification_table(result, str(image)))
    if failed:
        raise typer.Exit(1)


def embed(
    image: Annotated[list[Path] | None, typer.Option("--image", help="Image file (repeatable)")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Text (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write the embeddings here, in .npy format, FP32 [N, D] (the name is kept as given)")] = None,
    url: Url = None,
    protocol: Protocol = "grpc",
    prefix: Annotated[str, typer.Option(help="Model-name prefix of the export")] = "clip",
) -> None:
    """Embed images or texts (clip_embed_image / clip_embed_text): unit-norm FP32 vectors.

    With both --image and --text, also prints their cosine similarities.
    """
    if not image and not text:
        fail("give --image FILE and/or --text TEXT")
    check_output_path(out, "--out")
    client = ClipClient(url, check_protocol(protocol), prefix=prefix)
    try:
        client.check_ready(*([client.embed_image_model] if image else []),
                           *([client.embed_text_model] if text else []))
        warn_random_weights(client.weights())
        image_emb = client.embed_images(image) if image else np.zeros((0, 0), np.float32)
        text_emb = client.embed_texts(text) if text else np.zeros((0, 0), np.float32)
    except TritonLensError as err:
        fail(str(err))
    names = [str(i) for i in image or []] + [repr(t) for t in text or []]
    rows = [e for e in (image_emb, text_emb) if e.size]
    embeddings = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    for name, vector in zip(names, embeddings):
        preview = ", ".join(f"{v:+.4f}" for v in vector[:4])
        console.print(f"{name}: dim {vector.shape[0]}, norm {np.linalg.norm(vector):.4f}, [{preview}, ...]",
                      highlight=False)
    if image_emb.size and text_emb.size:
        table = Table(title="cosine similarity")
        table.add_column("image")
        for t in text:
            table.add_column(repr(t), justify="right")
        for name, row in zip(image, image_emb @ text_emb.T):
            table.add_row(str(name), *(f"{v:.4f}" for v in row))
        console.print(table)
    if out:
        with open(out, "wb") as file:  # np.save(path) would append ".npy" to other names
            np.save(file, embeddings)
        console.print(f"wrote {embeddings.shape} to {out}", highlight=False)


plugin = Plugin(
    name="clip",
    summary="OpenCLIP image/text encoders and zero-shot classification",
    export=export,
    commands={"classify": classify, "embed": embed},
    models=CLIP_MODELS,
)
