"""The ``timm`` plugin: everything tritonlens needs to know about this family, on one page.

Registered in this package's pyproject.toml (``[project.entry-points."tritonlens.plugins"]
timm = "tritonlens_timm.plugin:plugin"``); tritonlens itself names it nowhere.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from tritonlens.client.base import TritonLensError
from tritonlens.client.common import map_concurrent
from tritonlens.client.options import (DEFAULT_REPO, Protocol, Repo, Url, check_output_path,
                                       check_protocol, classification_table, console, err_console,
                                       classify_command, fail, run_export, warn_random_weights)
from tritonlens.core.plugins import BenchInputs, Demo, Plugin, Scenario, Streams
from tritonlens.serve.parameters import MODEL_NAME_PARAMETER
from tritonlens_timm import MODEL_REPOSITORY
from tritonlens_timm.client import TimmClient

MODELS = ("timm_preprocess", "timm_model", "timm_classify", "timm_embed")
# What `tritonlens demo` and `tritonlens bench` export: a real ImageNet architecture with
# random weights (this project's hosts reach no model hub).
DEMO_MODEL = "resnet18"


def export(
    model: Annotated[str, typer.Option(help="timm architecture (timm.list_models())")] = DEMO_MODEL,
    checkpoint: Annotated[str, typer.Option(
        help="Local checkpoint file, or 'none' for random weights (flagged in the configs "
             "and by every client)")] = "none",
    labels: Annotated[Path | None, typer.Option(
        help="Class names, one per line, in output order [default: timm's ImageNet names]")] = None,
    repo: Repo = DEFAULT_REPO,
    max_batch_size: Annotated[int, typer.Option(help="Largest batch Triton forms")] = 16,
    instances: Annotated[int, typer.Option(help="Instances of timm_model")] = 1,
    threads: Annotated[int, typer.Option(help="Intra-op threads per instance, 0 = cores / instances")] = 0,
    precision: Annotated[str, typer.Option(
        help="fp32, or int8 (onnxruntime dynamic quantization of the weights, CPU hosts)")] = "fp32",
    profile: Annotated[str, typer.Option(
        help="default, or low-memory (weights memory-mapped, arena off)")] = "default",
    device: Annotated[str, typer.Option(help="cpu or gpu: the instance group's kind")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed for random initialisation (--checkpoint none)")] = 0,
    prefix: Annotated[str, typer.Option(help="Model-name prefix, to serve several exports")] = "timm",
) -> None:
    """Export a timm image model into a Triton model repository.

    Writes timm_preprocess (timm's eval transform), timm_model (pooled features and class
    probabilities, labels wired to Triton's classification extension) and the ensembles
    timm_classify (top-k) and timm_embed (features), with dynamic batching.

    Example: tritonlens export timm --model convnext_tiny --checkpoint ./convnext_tiny.pth
    """
    from tritonlens_timm.export import ExportError, TimmExportOptions, export_timm

    try:
        names = None
        if labels is not None:
            try:
                names = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines()
                         if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise ExportError(f"--labels {labels}: {getattr(err, 'strerror', None) or err}")
        options = TimmExportOptions(model=model, checkpoint=checkpoint, labels=names,
                                    max_batch_size=max_batch_size, instance_count=instances,
                                    threads=threads, seed=seed, prefix=prefix,
                                    precision=precision, profile=profile, device=device)
        run_export("timm", export_timm, options, repo)
    except ExportError as err:
        fail(str(err))


def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, WebP)")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes to show per image")] = 5,
    url: Url = None,
    protocol: Protocol = "grpc",
    concurrency: Annotated[int, typer.Option(help="Requests in flight")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image")] = False,
    prefix: Annotated[str, typer.Option(help="Model-name prefix of the export")] = "timm",
) -> None:
    """Classify images with the served timm model (timm_classify): top-k classes.

    A bad image fails alone, with the server's reason; the exit code is 1 if any did.
    """
    classify_command(TimmClient(url, check_protocol(protocol), prefix=prefix), images, top_k,
                     concurrency, as_json)


def embed(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, WebP)")],
    out: Annotated[Path | None, typer.Option(help="Write FP32 [N, F] here, in .npy format")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image")] = False,
    batch_size: Annotated[int | None, typer.Option(
        help="Images per request \\[default: the model's max_batch_size]")] = None,
    url: Url = None,
    protocol: Protocol = "grpc",
    prefix: Annotated[str, typer.Option(help="Model-name prefix of the export")] = "timm",
) -> None:
    """Embed images with the served timm model (timm_embed): pooled features, FP32 [F] each."""
    check_output_path(out, "--out")
    client = TimmClient(url, check_protocol(protocol), prefix=prefix)
    try:
        client.check_ready(client.embed_model)
        warn_random_weights(client.weights())
        vectors = client.embed(images, batch_size)
    except (TritonLensError, ValueError) as err:
        fail(str(err))
    for index, (image, vector) in enumerate(zip(images, vectors)):
        if as_json:
            record = {"image": str(image), "index": index}
            if out is None:
                record["embedding"] = vector.tolist()
            print(json.dumps(record), flush=True)
        else:
            console.print(f"{image}: dim {vector.shape[0]}, norm {np.linalg.norm(vector):.4f}",
                          highlight=False)
    if out:
        with open(out, "wb") as file:
            np.save(file, vectors)
        (err_console if as_json else console).print(f"wrote {vectors.shape} to {out}", highlight=False)


# -- bench: real input data per served model --------------------------------------------------
def image_bytes(inputs: BenchInputs) -> Streams:
    """``image`` BYTES [1]: each photo's encoded file bytes."""
    return [[{"image": [photo.read_bytes()]} for photo in inputs.photos]]


def pixels(inputs: BenchInputs) -> Streams:
    """``pixels`` UINT8 [H, W, 3]: the photos through the exported eval transform."""
    from PIL import Image

    from tritonlens.export.config import parse_config
    from tritonlens_timm.transform import EvalTransform

    config = parse_config(inputs.repo / "timm_preprocess" / "config.pbtxt")
    transform = EvalTransform.from_parameters({k: v.string_value for k, v in config.parameters.items()})
    return [[{"pixels": transform(Image.open(photo))} for photo in inputs.photos]]


def existing_export(repo: Path, model: str) -> bool:
    """True if ``repo`` holds a timm export of ``model`` (its four models)."""
    from tritonlens.export.config import parse_config

    if not all((repo / name / "config.pbtxt").exists() for name in MODELS):
        return False
    params = parse_config(repo / "timm_model" / "config.pbtxt").parameters
    return params[MODEL_NAME_PARAMETER].string_value == model


class TimmPlugin(Plugin):
    """timm image models: top-k classification and pooled-feature embeddings."""

    name = "timm"
    models = MODELS
    python_models = {"timm_preprocess": MODEL_REPOSITORY / "timm_preprocess" / "1" / "model.py"}
    client = TimmClient
    commands = {"timm-classify": classify, "timm-embed": embed}
    export = staticmethod(export)  # the typer command above

    def scenarios(self):
        return [Scenario("timm_classify", "timm", image_bytes, end_to_end=True, shared_memory=True),
                Scenario("timm_embed", "timm", image_bytes),
                Scenario("timm_preprocess", "timm", image_bytes),
                Scenario("timm_model", "timm", pixels, shared_memory=True)]

    def bench_export(self, settings, report):
        from tritonlens_timm.export import TimmExportOptions, export_timm

        if existing_export(settings.repo, DEMO_MODEL):
            report(f"reusing the timm export in {settings.repo}")
        else:
            export_timm(TimmExportOptions(model=DEMO_MODEL), settings.repo, report=report)
        return {"model": DEMO_MODEL, "title": f"timm {DEMO_MODEL}"}

    def demo_export(self, demo: Demo):
        from tritonlens_timm.export import TimmExportOptions, export_timm

        if existing_export(demo.repo, DEMO_MODEL):
            console.print(f"{demo.repo} already holds timm {DEMO_MODEL}; skipping the export")
            return
        with console.status("exporting timm") as status:
            summary = export_timm(TimmExportOptions(model=DEMO_MODEL), demo.repo,
                                  report=lambda step: status.update(step))
        console.print(f"exported timm {summary['model']} ({summary['weights']} weights, "
                      f"{summary['classes']} ImageNet classes) to {demo.repo}")

    def demo(self, demo: Demo):
        demo.rule(f"timm {DEMO_MODEL}: ImageNet top-5 (gRPC) and embeddings (HTTP)")
        client = TimmClient(demo.server.grpc_url, "grpc")
        weights = client.weights()
        warn_random_weights(weights)
        started = time.monotonic()
        results = map_concurrent(lambda p: client.classify(p, top_k=5), demo.photos)
        elapsed = time.monotonic() - started
        for photo, result in zip(demo.photos, results):
            if isinstance(result, TritonLensError):
                console.print(f"[red]{photo.name}: {result}[/]")
            else:
                console.print(classification_table(result, f"{photo.name} (top-5, weights: {weights})"))
        console.print(f"{len(demo.photos)} photos classified in {elapsed:.2f} s")
        vectors = TimmClient(demo.server.http_url, "http").embed(demo.photos)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        table = Table(title=f"cosine similarity of {DEMO_MODEL}'s pooled features (dim {vectors.shape[1]})")
        table.add_column("photo")
        for photo in demo.photos:
            table.add_column(photo.stem[:12], justify="right")
        for photo, row in zip(demo.photos, unit @ unit.T):
            table.add_row(photo.name, *(f"{v:.3f}" for v in row))
        console.print(table)


plugin = TimmPlugin()
