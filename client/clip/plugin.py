"""The ``clip`` plugin: ``tritonlens export clip``, ``tritonlens classify``, ``tritonlens embed``."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from tritonlens.client.base import TritonLensError
from tritonlens.client.clip import ClipClient
from tritonlens.client.clip.demo import ClipDemoOptions
from tritonlens.client.options import (DEFAULT_REPO, Protocol, Repo, Url, check_output_path,
                                       check_protocol, console, err_console, fail,
                                       classify_command, run_export, warn_random_weights)
from tritonlens.core.plugins import Plugin, builtin_python_models

CLIP_MODELS = ("clip_preprocess", "clip_image_encoder", "clip_tokenize", "clip_text_encoder",
               "clip_zero_shot", "clip_classify", "clip_embed_image", "clip_embed_text", "clip_rank")


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
    jpeg_draft: Annotated[bool, typer.Option(
        "--jpeg-draft", help="Decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that keeps "
        "both sides >= 2x the input size: large photos cost about what small ones do "
        "(12 MP: 142 -> 29 ms of preprocessing), pixels within a few levels of a full "
        "decode instead of identical to open_clip's")] = False,
    tokenizer: Annotated[Path | None, typer.Option(
        help="Folder with the model's Hugging Face tokenizer (tokenizer.json, "
             "tokenizer_config.json), for SigLIP, SigLIP 2, CLIPA, MetaCLIP 2: copied into the "
             "repository, the server never reaches a hub (docs/clip-families.md)")] = None,
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
            device=device, jpeg_draft=jpeg_draft,
            tokenizer=str(tokenizer) if tokenizer else None)
        run_export("CLIP", export_clip, options, repo)
    except ExportError as err:
        fail(str(err))


# What a folder contributes: the formats the served preprocessing decodes (serve/images.py's
# FORMATS: JPEG, PNG, WebP); other files, BMP included, would only fail one by one.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# Above this many items, `embed` prints a summary instead of one line per vector and no
# similarity table (10,000 texts would print 10,000 lines); --json always prints every item.
PREVIEW_LIMIT = 20


def expand_images(paths: list[Path]) -> list[Path]:
    """Image files from files and folders: a folder gives every file below it (recursive)
    whose extension is one of IMAGE_EXTENSIONS (any case), sorted; a file is kept as given
    (so a missing or bad one is reported as that image's error).

    Raises:
        TritonLensError: a folder holds no image file.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise TritonLensError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                                      "in this folder or below it")
            files += found
        else:
            files.append(path)
    return files


def read_texts(path: Path) -> list[str]:
    """The texts of a UTF-8 file, one per line (row i of ``--out`` is line i + 1).

    Raises:
        TritonLensError: the file cannot be read, is not UTF-8, or has an empty line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TritonLensError(f"--text-file {path}: {getattr(err, 'strerror', None) or err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise TritonLensError(f"--text-file {path}: line {number} is empty (one text per "
                                  "line; remove empty lines so rows match lines)")
    return lines


def classify(
    images: Annotated[list[Path], typer.Argument(
        help="Image files (JPEG, PNG, WebP) or folders (searched recursively for "
             ".jpg/.jpeg/.png/.webp files, in sorted order)")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels to show per image")] = 5,
    url: Url = None,
    protocol: Protocol = "grpc",
    concurrency: Annotated[int, typer.Option(help="Requests in flight")] = 4,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per image (file, labels) as results arrive")] = False,
    prefix: Annotated[str, typer.Option(help="Model-name prefix of the export")] = "clip",
    labels: Annotated[str | None, typer.Option(
        help="Candidate labels for this request, comma-separated (\"a bee,a flower,a chart\"): "
             "zero-shot with clip_rank instead of the exported labels")] = None,
    labels_file: Annotated[Path | None, typer.Option(
        help="Candidate labels, one per line (UTF-8), as --labels")] = None,
    template: Annotated[list[str] | None, typer.Option(
        help="With --labels/--labels-file: a prompt template, '{}' marks the label, e.g. "
             "'a photo of a {}.' (repeatable; averaged per label as open_clip does)")] = None,
) -> None:
    """Classify images with the served zero-shot CLIP model.

    Without --labels: against the exported labels (clip_classify); images are sent
    concurrently, one request each, so Triton's dynamic batcher groups them. With --labels
    or --labels-file: against those labels (clip_rank), images in chunks of its max_images;
    the server keeps every label's text embedding (clip_rank's text cache), so each is encoded once.
    Results are printed in input order as they arrive. A bad image fails alone, with the
    server's reason; the exit code is 1 if any did.
    """
    client = ClipClient(url, check_protocol(protocol), prefix=prefix)
    if labels is None and labels_file is None:
        if template:
            fail("--template needs --labels or --labels-file")
        classify_command(client, images, top_k, concurrency, as_json, expand=expand_images)
        return
    classify_labels(client, images, labels, labels_file, template, top_k, concurrency, as_json)


def classify_labels(client: ClipClient, images: list[Path], labels: str | None,
                    labels_file: Path | None, templates: list[str] | None, top_k: int,
                    concurrency: int, as_json: bool) -> None:
    """``classify --labels/--labels-file``: check the options, then
    :func:`~tritonlens.client.clip.rank.print_ranked` (exit 1 when any image failed)."""
    from tritonlens.client.clip.rank import parse_labels, print_ranked, read_labels_file

    if labels is not None and labels_file is not None:
        fail("give --labels or --labels-file, not both")
    try:
        candidates = parse_labels(labels) if labels is not None else read_labels_file(labels_file)
    except TritonLensError as err:
        fail(str(err))
    classify_command(client, images, top_k, concurrency, as_json, expand=expand_images,
                     model=client.rank_model, run=lambda files, weights: print_ranked(
                         client, files, candidates, templates or None, top_k, concurrency,
                         as_json, weights))


def embed(
    image: Annotated[list[Path] | None, typer.Option("--image", help="Image file (repeatable)")] = None,
    image_dir: Annotated[list[Path] | None, typer.Option(
        "--image-dir", help="Folder of images, searched recursively for .jpg/.jpeg/.png/.webp "
                            "files, sorted (repeatable)")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Text (repeatable)")] = None,
    text_file: Annotated[Path | None, typer.Option(
        "--text-file", help="UTF-8 file of texts, one per line (no empty lines)")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write the embeddings here, FP32 [N, D]: images first, then texts, in the order "
             "given; .parquet: one row per item with kind, item (file name or text) and "
             "embedding (needs pyarrow: pip install 'tritonlens[parquet]'); any other name: "
             ".npy format (the name is kept as given)")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per item as results arrive: kind, item, index "
                       "(its row in --out), and the embedding when there is no --out")] = False,
    batch_size: Annotated[int | None, typer.Option(
        help="Items per request \\[default: each model's max_batch_size, read from the server]")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight")] = 4,
    url: Url = None,
    protocol: Protocol = "grpc",
    prefix: Annotated[str, typer.Option(help="Model-name prefix of the export")] = "clip",
) -> None:
    """Embed images or texts (clip_embed_image / clip_embed_text): unit-norm FP32 vectors.

    Any number of items: they are sent in chunks of the model's max_batch_size, several
    chunks in flight, with a progress bar on stderr. With both images and texts (up to 20
    of each), also prints their cosine similarities.
    """
    if not image and not image_dir and not text and not text_file:
        fail("give --image FILE, --image-dir DIR, --text TEXT and/or --text-file FILE")
    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be at least 1, not {batch_size}")
    if concurrency < 1:
        fail(f"--concurrency must be at least 1, not {concurrency}")
    check_output_path(out, "--out")
    if out is not None and out.suffix.lower() == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        fail("--out .parquet needs pyarrow: pip install 'tritonlens[parquet]'")
    client = ClipClient(url, check_protocol(protocol), prefix=prefix)
    try:
        images = list(image or []) + (expand_images(image_dir) if image_dir else [])
        texts = list(text or []) + (read_texts(text_file) if text_file else [])
        client.check_ready(*([client.embed_image_model] if images else []),
                           *([client.embed_text_model] if texts else []))
        warn_random_weights(client.weights())
        parts: dict[str, list[np.ndarray]] = {"image": [], "text": []}
        offset = 0
        for kind, items, names, batches in (
                ("image", images, [str(i) for i in images],
                 client.iter_embed_images(images, batch_size, concurrency, True) if images else ()),
                ("text", texts, texts,
                 client.iter_embed_texts(texts, batch_size, concurrency, True) if texts else ())):
            for start, rows in batches:
                parts[kind].append(rows)
                if as_json:
                    for k, vector in enumerate(rows):
                        record = {"kind": kind, "item": names[start + k], "index": offset + start + k}
                        if out is None:
                            record["embedding"] = vector.tolist()
                        print(json.dumps(record), flush=True)
            offset += len(items)
    except TritonLensError as err:
        fail(str(err))
    image_emb, text_emb = (np.concatenate(parts[k]) if parts[k] else None for k in ("image", "text"))
    embeddings = np.concatenate([e for e in (image_emb, text_emb) if e is not None])
    names = [str(i) for i in images] + [repr(t) for t in texts]
    if not as_json and len(names) <= PREVIEW_LIMIT:
        for name, vector in zip(names, embeddings):
            preview = ", ".join(f"{v:+.4f}" for v in vector[:4])
            console.print(f"{name}: dim {vector.shape[0]}, norm {np.linalg.norm(vector):.4f}, "
                          f"[{preview}, ...]", highlight=False)
    elif not as_json:
        console.print(f"embedded {len(images)} images and {len(texts)} texts, dim "
                      f"{embeddings.shape[1]}", highlight=False)
    if (not as_json and image_emb is not None and text_emb is not None
            and len(images) <= PREVIEW_LIMIT and len(texts) <= PREVIEW_LIMIT):
        table = Table(title="cosine similarity")
        table.add_column("image")
        for t in texts:
            table.add_column(repr(t), justify="right")
        for name, row in zip(images, image_emb @ text_emb.T):
            table.add_row(str(name), *(f"{v:.4f}" for v in row))
        console.print(table)
    if out and out.suffix.lower() == ".parquet":
        write_parquet(out, ["image"] * len(images) + ["text"] * len(texts),
                      [str(i) for i in images] + texts, embeddings)
    elif out:
        with open(out, "wb") as file:  # np.save(path) would append ".npy" to other names
            np.save(file, embeddings)
        (err_console if as_json else console).print(f"wrote {embeddings.shape} to {out}",
                                                    highlight=False)


def write_parquet(path: Path, kinds: list[str], items: list[str], embeddings: np.ndarray) -> None:
    """A Parquet file with one row per item: ``kind`` ("image" or "text"), ``item`` (the file
    name or the text) and ``embedding`` (FP32, a fixed-size list of D values)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).ravel()), embeddings.shape[1])
    pq.write_table(pa.table({"kind": kinds, "item": items, "embedding": vectors}), path)


@dataclass
class ClipBenchOptions:
    """CLIP's options of ``tritonlens bench`` (``--clip-model``)."""

    clip_model: str | None = field(default=None, metadata={
        "help": "open_clip architecture (default ViT-B-32; ViT-S-32 with --quick)"})


class ClipPlugin(Plugin):
    """OpenCLIP image/text encoders and zero-shot classification."""

    name = "clip"
    models = CLIP_MODELS
    python_models = builtin_python_models("clip_preprocess", "clip_tokenize", "clip_rank")
    client = ClipClient
    commands = {"classify": classify, "embed": embed}
    demo_options = ClipDemoOptions
    bench_options = ClipBenchOptions
    bench_quick = True  # its in-process baselines are the benchmark's reference comparison
    export = staticmethod(export)  # the typer command above

    def scenarios(self):
        from tritonlens.client.clip.scenarios import scenarios

        return scenarios()

    # The benchmark steps live in the bench layer (bench/clip/steps.py); this plugin module
    # is the family's hub, the one client module that may import its own family's bench code.
    def bench_export(self, settings, report):
        from tritonlens.bench.clip import steps

        return steps.export(settings, settings.options_for(self), report)

    def bench_baselines(self, inputs, settings, exported, report):
        from tritonlens.bench.clip import steps

        return steps.run_baselines(inputs, settings, exported, report) if exported else {}

    def bench_tuning(self, server, measure, settings, report):
        from tritonlens.bench.clip import steps

        return steps.run_tuning(server, measure, settings, report)

    def bench_summary(self, results):
        from tritonlens.bench.clip import steps

        return steps.summary(results)

    def demo_export(self, demo):
        from tritonlens.client.clip.demo import demo_export

        demo_export(demo, demo.options_for(self))

    def demo(self, demo):
        from tritonlens.client.clip.demo import demo as run

        run(demo)


plugin = ClipPlugin()
