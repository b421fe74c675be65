"""``tritonlens demo``: the main job on real input, start to finish.

Real photos (scikit-image's sample photographs, written as JPEG, PNG and WebP files), a
real tritonserver, real requests over gRPC and HTTP. Nothing here is simulated; with
``--pretrained none`` the weights are random, and every output says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image
from rich.table import Table

from tritonlens.client.base import TritonLensError
from tritonlens.client.clip import ClipClient, map_concurrent
from tritonlens.client.clip.plugin import classification_table
from tritonlens.client.options import console, warn_random_weights

DEMO_LABELS = Path(__file__).parent / "data" / "demo_labels.txt"
# scikit-image sample -> (file name, format). Different sizes, modes and formats on purpose.
SAMPLE_PHOTOS = {
    "chelsea": ("chelsea_cat.jpg", "JPEG"),
    "coffee": ("coffee.png", "PNG"),
    "astronaut": ("astronaut.webp", "WEBP"),
    "rocket": ("rocket.jpg", "JPEG"),
    "camera": ("cameraman_gray.png", "PNG"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "JPEG"),
}


def write_sample_photos(out: Path) -> list[Path]:
    """Write scikit-image's sample photos into ``out``; returns their paths.

    Raises:
        TritonLensError: scikit-image is not installed (``pip install tritonlens[samples]``).
    """
    try:
        from skimage import data
    except ImportError:
        raise TritonLensError("the sample photos come from scikit-image: "
                              "pip install 'tritonlens[samples]'") from None
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample, (filename, fmt) in SAMPLE_PHOTOS.items():
        path = out / filename
        if not path.exists():
            Image.fromarray(getattr(data, sample)()).save(path, fmt, quality=92)
        paths.append(path)
    return paths


def existing_export(repo: Path, model: str, pretrained: str) -> bool:
    """True if ``repo`` already holds a CLIP export of ``model`` with these weights."""
    from tritonlens.export.config import parse_config

    config_path = repo / "clip_image_encoder" / "config.pbtxt"
    if not (config_path.exists() and (repo / "clip_classify" / "config.pbtxt").exists()):
        return False
    params = parse_config(config_path).parameters
    weights = "random" if pretrained in ("", "none") else pretrained
    return (params["tritonlens.model_name"].string_value == model
            and params["tritonlens.weights"].string_value == weights)


def run_demo(repo: Path, model: str, pretrained: str, out: Path) -> None:
    """Export (if needed), serve, classify and embed the sample photos; see the module doc."""
    from tritonlens.export.clip import ClipExportOptions, ExportError, export_clip
    from tritonlens.export.clip.export import read_lines
    from tritonlens.serve import TritonServer

    photos = write_sample_photos(out)
    console.rule("1. real photos")
    console.print(f"{len(photos)} photos in {out}: " + ", ".join(p.name for p in photos))

    console.rule("2. export")
    if existing_export(repo, model, pretrained):
        console.print(f"{repo} already holds {model} ({pretrained}); skipping the export")
    else:
        options = ClipExportOptions(model=model, pretrained=pretrained,
                                    labels=read_lines(DEMO_LABELS, "labels"))
        try:
            with console.status("exporting") as status:
                summary = export_clip(options, repo, report=lambda s: status.update(s))
        except ExportError as err:
            raise TritonLensError(str(err)) from None
        console.print(f"exported {summary['model']} ({summary['weights']} weights, "
                      f"{summary['labels']} labels) to {repo}")

    console.rule("3. serve")
    log_file = repo.parent / f"{repo.name}.server.log"
    started = time.monotonic()
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, log_file=log_file) as server:
        console.print(f"tritonserver ready in {time.monotonic() - started:.1f} s: gRPC "
                      f"{server.grpc_url}, HTTP {server.http_url} (log: {log_file})")

        console.rule("4. classify (gRPC, concurrent requests, dynamic batching)")
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

        console.rule("5. embed (HTTP)")
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
    console.print("tritonserver stopped")
