"""The ``sam2`` plugin: ``tritonlens export sam2`` and ``tritonlens segment``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tritonlens.client.base import TritonLensError
from tritonlens.client.common import read_image
from tritonlens.client.options import (DEFAULT_REPO, Protocol, Repo, Url, check_output_path,
                                       check_protocol, console, fail, run_export,
                                       warn_random_weights)
from tritonlens.core.plugins import Plugin, builtin_python_models
from tritonlens.client.sam2 import Sam2Client, prompt_arrays
from tritonlens.client.sam2.demo import Sam2DemoOptions
from tritonlens.client.sam2.track_cli import track

SAM2_MODELS = ("sam2_preprocess", "sam2_image_encoder", "sam2_prompts", "sam2_prompt_decoder",
               "sam2_segment", "sam2_embed_image", "sam2_decode",
               "sam2_frame_preprocess", "sam2_tracker", "sam2_track")
# The image size of tritonlens bench's SAM 2 export (SAM 2's released checkpoints use 1024).
BENCH_IMAGE_SIZE = 512


def export(
    config: Annotated[str, typer.Option(
        help="sam2.1_hiera_t|s|b+|l (or sam2_hiera_*), or a path to a SAM 2 config YAML")] = "sam2.1_hiera_t",
    checkpoint: Annotated[str, typer.Option(
        help="Local SAM 2 checkpoint (.pt, as Meta publishes them), or 'none' for random "
             "weights (flagged in the configs, the server log and every client)")] = "none",
    image_size: Annotated[int, typer.Option(
        help="Square input size in pixels (1024 for the released checkpoints; smaller is faster)")] = 1024,
    format: Annotated[str, typer.Option(
        "--format", help="auto (measured: TorchScript image encoder, ONNX prompt decoder), "
                         "onnx or torchscript (both models)")] = "auto",
    repo: Repo = DEFAULT_REPO,
    max_batch_size: Annotated[int, typer.Option(help="Largest image batch for the image encoder")] = 4,
    threads: Annotated[int, typer.Option(help="Intra-op threads per model instance, 0 = cores / instances")] = 0,
    seed: Annotated[int, typer.Option(help="Seed for random initialisation (--checkpoint none)")] = 0,
    precision: Annotated[str, typer.Option(
        help="fp32, or int8 (onnxruntime dynamic quantization of the image encoder, CPU hosts)")] = "fp32",
    profile: Annotated[str, typer.Option(
        help="default, or low-memory (CPU: ONNX graphs with memory-mapped external weights, no "
             "memory arena, one preprocessing instance, no video tracker unless --video)")] = "default",
    instances: Annotated[int, typer.Option(
        help="Instances of the image encoder and prompt decoder (threads are split between them)")] = 1,
    video: Annotated[bool | None, typer.Option(
        "--video/--no-video", help="Export the video tracker [default: yes, no for low-memory]")] = None,
    device: Annotated[str, typer.Option(
        help="cpu or gpu: instance groups KIND_CPU or KIND_GPU for the image encoder, prompt "
             "decoder and tracker (image decoding and prompt checks stay on the CPU)")] = "cpu",
    max_streams: Annotated[int, typer.Option(
        help="Video streams the tracker holds at once; a new stream beyond it is refused "
             "with a clear error (not queued)")] = 64,
    stream_idle_seconds: Annotated[float, typer.Option(
        help="A video stream with no frame for this long is evicted and its state freed")] = 60.0,
) -> None:
    """Export SAM 2 (image segmentation) into a Triton model repository.

    Writes sam2_preprocess, sam2_image_encoder (dynamic batching), sam2_prompts,
    sam2_prompt_decoder and the ensembles sam2_segment (image + points -> masks),
    sam2_embed_image and sam2_decode (encode once, prompt many times).

    Example: tritonlens export sam2 --config sam2.1_hiera_t --checkpoint ./sam2.1_hiera_tiny.pt

    Low-memory CPU host: tritonlens export sam2 --precision int8 --profile low-memory
    """
    from tritonlens.export.sam2 import ExportError, Sam2ExportOptions, export_sam2

    try:
        options = Sam2ExportOptions(config=config, checkpoint=checkpoint, image_size=image_size,
                                    fmt=format.lower(), max_batch_size=max_batch_size,
                                    threads=threads, seed=seed, precision=precision.lower(),
                                    profile=profile.lower(), instance_count=instances, video=video,
                                    device=device.lower(), max_streams=max_streams,
                                    stream_idle_seconds=stream_idle_seconds)
        run_export("SAM 2", export_sam2, options, repo)
    except ExportError as err:
        fail(str(err))


def parse_point(text: str) -> tuple[float, float, int]:
    """``"x,y"`` or ``"x,y,label"`` -> (x, y, label); label 1 (foreground) by default."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) == 2:
            return float(parts[0]), float(parts[1]), 1
        if len(parts) == 3:
            return float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise typer.BadParameter(f"{text!r}: a point is x,y or x,y,label (label 1 foreground, "
                             "0 background), in pixels", param_hint="--point")


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` -> the box's corners in pixels."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise typer.BadParameter(f"{text!r}: a box is x0,y0,x1,y1 in pixels", param_hint="--box")
    return values  # type: ignore[return-value]


def segment(
    image: Annotated[Path, typer.Argument(help="Image file (JPEG, PNG, WebP)")],
    point: Annotated[list[str] | None, typer.Option(
        "--point", help="x,y[,label] in pixels; label 1 foreground (default), 0 background. Repeatable")] = None,
    box: Annotated[str | None, typer.Option(help="x0,y0,x1,y1 in pixels")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the best mask here as a PNG")] = None,
    overlay: Annotated[Path | None, typer.Option(
        "--overlay", help="Write the photo with the masks, clicks and box drawn on it")] = None,
    multimask: Annotated[bool, typer.Option(
        "--multimask/--single-mask", help="3 candidate masks (ambiguous clicks) or 1")] = True,
    url: Url = None,
    protocol: Protocol = "grpc",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Segment an object in a photo from clicks and/or a box (SAM 2, sam2_segment).

    Example: tritonlens segment cat.jpg --point 220,150 --point 80,40,0 --overlay overlay.png
    """
    from tritonlens.client.sam2.render import mask_image, overlay as draw_overlay

    points = [parse_point(p) for p in point or []]
    box_corners = parse_box(box) if box else None
    if not points and box_corners is None:
        fail("give at least one --point x,y[,label] or a --box x0,y0,x1,y1")
    check_output_path(out, "--out")
    check_output_path(overlay, "--overlay")
    client = Sam2Client(url, check_protocol(protocol))
    try:
        data = read_image(image)
        client.check_ready(client.segment_model)
        weights = client.weights()
        result = client.segment(data, [p[:2] for p in points], [p[2] for p in points],
                                box_corners, multimask)
    except (TritonLensError, ValueError) as err:
        fail(str(err))
    warn_random_weights(weights)
    order = sorted(range(len(result.iou_scores)), key=lambda i: -result.iou_scores[i])
    if out:
        mask_image(result.masks[result.best]).save(out)
    if overlay:
        coords, labels = prompt_arrays([p[:2] for p in points], [p[2] for p in points], box_corners)
        draw_overlay(data, result.masks, order, coords, labels).save(overlay)
    height, width = result.masks.shape[1:]
    if as_json:
        print(json.dumps({"image": str(image), "weights": weights, "size": [height, width],
                          "masks": [{"index": i, "iou_score": float(result.iou_scores[i]),
                                     "area": int(result.masks[i].sum())} for i in order],
                          "out": str(out) if out else None,
                          "overlay": str(overlay) if overlay else None}))
        return
    table = Table(title=f"{image} ({width}x{height})", title_justify="left")
    for column in ("mask", "predicted IoU", "area (px)", "share of image"):
        table.add_column(column, justify="right")
    for i in order:
        area = int(result.masks[i].sum())
        table.add_row(str(i) + (" (best)" if i == result.best else ""),
                      f"{result.iou_scores[i]:.4f}", str(area), f"{area / (height * width):.1%}")
    console.print(table)
    for what, path in (("best mask", out), ("overlay", overlay)):
        if path:
            console.print(f"wrote {what} to {path}", highlight=False)



class Sam2Plugin(Plugin):
    """SAM 2 image segmentation from points and boxes, and video tracking."""

    name = "sam2"
    models = SAM2_MODELS
    python_models = builtin_python_models("sam2_preprocess", "sam2_prompts",
                                          "sam2_frame_preprocess", "sam2_tracker")
    client = Sam2Client
    commands = {"segment": segment, "track": track}
    demo_options = Sam2DemoOptions
    export = staticmethod(export)  # the typer command above

    def scenarios(self):
        from tritonlens.client.sam2.scenarios import scenarios

        return scenarios()

    def bench_export(self, settings, report):
        """SAM 2.1 hiera-tiny, random weights, image models and video tracker, at 512 px,
        unless the repository already holds a SAM 2 export (at whatever size)."""
        repo = settings.repo
        from tritonlens.export.config import parse_config
        from tritonlens.export.sam2 import Sam2ExportOptions, export_sam2

        existing = repo / "sam2_preprocess" / "config.pbtxt"
        if existing.exists():
            size = parse_config(existing).parameters["image_size"].string_value
            report(f"reusing the SAM 2 export in {repo} ({size} px)")
            return {"title": f"SAM 2 ({size} px)"}
        report(f"exporting SAM 2.1 hiera-tiny at {BENCH_IMAGE_SIZE} px into {repo}")
        export_sam2(Sam2ExportOptions(config="sam2.1_hiera_t", image_size=BENCH_IMAGE_SIZE), repo,
                    report=report)
        return {"model": "sam2.1_hiera_t", "title": f"SAM 2.1 hiera-tiny ({BENCH_IMAGE_SIZE} px)",
                "weights": "random"}

    def demo_export(self, demo):
        from tritonlens.client.sam2.demo import demo_export

        demo_export(demo, demo.options_for(self))

    def demo(self, demo):
        from tritonlens.client.sam2.demo import demo as run

        run(demo)


plugin = Sam2Plugin()
