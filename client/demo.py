"""``tritonlens demo``: the main job on real input, start to finish.

Real photos (scikit-image's sample photographs, written as JPEG, PNG and WebP files), a
real video clip (an H.264 pan/zoom over one of those photos, encoded with PyAV), a real
tritonserver, real requests over gRPC and HTTP: CLIP zero-shot classification and
embeddings, SAM 2 segmentation from a click, SAM 2 video tracking streamed frame by frame.
Nothing here is simulated; without checkpoints the weights are random, and every output
says so.
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


def existing_sam2_export(repo: Path, image_size: int) -> bool:
    """True if ``repo`` already holds a SAM 2 export (with the tracker) at ``image_size``."""
    from tritonlens.export.config import parse_config

    config_path = repo / "sam2_preprocess" / "config.pbtxt"
    if not (config_path.exists() and (repo / "sam2_track" / "config.pbtxt").exists()):
        return False
    return parse_config(config_path).parameters["image_size"].string_value == str(image_size)


def export_sam2_if_needed(repo: Path, image_size: int) -> None:
    """SAM 2.1 hiera-tiny with random weights at ``image_size`` px (image models + tracker)."""
    from tritonlens.export.sam2.export import ExportError, Sam2ExportOptions, export_sam2

    if existing_sam2_export(repo, image_size):
        console.print(f"{repo} already holds SAM 2 at {image_size} px; skipping the export")
        return
    try:
        with console.status("exporting SAM 2") as status:
            export_sam2(Sam2ExportOptions(config="sam2.1_hiera_t", image_size=image_size), repo,
                        report=lambda step: status.update(step))
    except ExportError as err:
        raise TritonLensError(str(err)) from None
    console.print(f"exported SAM 2.1 hiera-tiny (random weights) at {image_size} px to {repo}")


def run_demo(repo: Path, model: str, pretrained: str, out: Path, sam2_size: int = 512,
             frames: int = 24) -> None:
    """Export (if needed), serve, classify, embed, segment and track; see the module doc."""
    from tritonlens.client.sam2.plugin import segment
    from tritonlens.client.sam2.track_cli import track
    from tritonlens.export.clip import ClipExportOptions, ExportError, export_clip
    from tritonlens.export.clip.export import read_lines
    from tritonlens.serve import TritonServer
    from tritonlens.serve.sam2.frames import write_demo_clip

    photos = write_sample_photos(out)
    clip_path = out / "chelsea_pan_zoom.mp4"
    if not clip_path.exists():
        write_demo_clip(str(clip_path), "chelsea", count=frames)
    console.rule("1. real photos and a real video clip")
    console.print(f"{len(photos)} photos in {out}: " + ", ".join(p.name for p in photos))
    console.print(f"video: {clip_path} ({frames} frames, H.264, a pan/zoom over the chelsea photo)")

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
    export_sam2_if_needed(repo, sam2_size)

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

        console.rule("6. segment a photo from one click (SAM 2, sam2_segment)")
        results = out.parent / "demo_results"
        results.mkdir(parents=True, exist_ok=True)
        segment(photos[0], point=["225,150"], box=None, out=results / "chelsea_mask.png",
                overlay=results / "chelsea_overlay.png", multimask=True, url=server.grpc_url,
                protocol="grpc", as_json=False)

        console.rule("7. track through a video, streamed frame by frame (SAM 2, sam2_track)")
        track(clip_path, point=["0:160,110"], box=None, out=results / "tracked", max_frames=None,
              fps=12, url=server.grpc_url, protocol="grpc")
    console.print(f"tritonserver stopped; pictures and the overlay video are in {results}")
