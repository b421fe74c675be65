"""The clip family's part of ``tritonlens demo``: export CLIP, then classify every photo
over gRPC and embed photos and texts over HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from tritonlens.client.base import TritonLensError
from tritonlens.client.clip import ClipClient, map_concurrent
from tritonlens.client.options import classification_table, console, warn_random_weights
from tritonlens.core.plugins import Demo
from tritonlens.serve.parameters import MODEL_NAME_PARAMETER, WEIGHTS_PARAMETER

DEMO_LABELS = Path(__file__).resolve().parent.parent / "data" / "demo_labels.txt"


@dataclass
class ClipDemoOptions:
    """CLIP's options of ``tritonlens demo`` (``--model``, ``--pretrained``)."""

    model: str = field(default="ViT-B-32", metadata={"help": "open_clip architecture"})
    pretrained: str = field(default="none", metadata={"help": "Tag, checkpoint path or 'none'"})


def existing_export(repo: Path, model: str, pretrained: str) -> bool:
    """True if ``repo`` already holds a CLIP export of ``model`` with these weights, with every
    model today's default export writes (an older export without ``clip_rank`` is exported
    again)."""
    from tritonlens.export.config import parse_config

    config_path = repo / "clip_image_encoder" / "config.pbtxt"
    if not all((repo / name / "config.pbtxt").exists()
               for name in ("clip_image_encoder", "clip_classify", "clip_rank")):
        return False
    params = parse_config(config_path).parameters
    weights = "random" if pretrained in ("", "none") else pretrained
    return (params[MODEL_NAME_PARAMETER].string_value == model
            and params[WEIGHTS_PARAMETER].string_value == weights)


def demo_export(demo: Demo, options: ClipDemoOptions) -> None:
    """Export CLIP (``options``' model and pretrained weights, the demo's 27 labels)
    into ``demo.repo`` unless it already holds that export."""
    from tritonlens.export.clip import ClipExportOptions, ExportError, export_clip
    from tritonlens.export.clip.export import read_lines

    model, pretrained = options.model, options.pretrained
    if existing_export(demo.repo, model, pretrained):
        console.print(f"{demo.repo} already holds {model} ({pretrained}); skipping the export")
        return
    export_options = ClipExportOptions(model=model, pretrained=pretrained,
                                       labels=read_lines(DEMO_LABELS, "labels"))
    try:
        with console.status("exporting") as status:
            summary = export_clip(export_options, demo.repo, report=lambda s: status.update(s))
    except ExportError as err:
        raise TritonLensError(str(err)) from None
    console.print(f"exported {summary['model']} ({summary['weights']} weights, "
                  f"{summary['labels']} labels) to {demo.repo}")


def demo(demo: Demo) -> None:
    """Classify every photo (gRPC, concurrent requests) and embed three photos and three
    texts (HTTP), printing the top-5 tables and the cosine similarities."""
    photos, server = demo.photos, demo.server
    demo.rule("classify (gRPC, concurrent requests, dynamic batching)")
    client = ClipClient(server.grpc_url, "grpc")
    weights = client.weights()
    warn_random_weights(weights)
    started = time.monotonic()
    results = map_concurrent(lambda p: client.classify(p, top_k=5), photos, concurrency=4)
    elapsed = time.monotonic() - started
    for photo, result in zip(photos, results):
        if isinstance(result, TritonLensError):
            console.print(f"[red]{photo.name}: {result}[/]")
            continue
        console.print(classification_table(result, f"{photo.name} (top-5, weights: {weights})"))
    console.print(f"{len(photos)} photos classified in {elapsed:.2f} s")

    demo.rule("embed (HTTP)")
    http = ClipClient(server.http_url, "http")
    texts = ["a photo of a cat", "a photo of a rocket", "a cup of coffee"]
    similarity = http.embed_images(photos[:3]) @ http.embed_texts(texts).T
    table = Table(title="cosine similarity, image x text")
    table.add_column("image")
    for text in texts:
        table.add_column(text, justify="right")
    for photo, row in zip(photos[:3], similarity):
        table.add_row(photo.name, *(f"{v:.3f}" for v in row))
    console.print(table)
    warn_random_weights(weights)
