"""The sam2 family's part of ``tritonlens demo``: export SAM 2 and write a real video
clip, then segment a photo from one click and track an object through the clip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tritonlens.client.base import TritonLensError
from tritonlens.client.options import console
from tritonlens.core.plugins import Demo


def existing_export(repo: Path, image_size: int) -> bool:
    """True if ``repo`` already holds a SAM 2 export (with the tracker) at ``image_size``."""
    from tritonlens.export.config import parse_config

    config_path = repo / "sam2_preprocess" / "config.pbtxt"
    if not (config_path.exists() and (repo / "sam2_track" / "config.pbtxt").exists()):
        return False
    return parse_config(config_path).parameters["image_size"].string_value == str(image_size)


def demo_clip(demo: Demo) -> Path:
    """The demo's video: an H.264 pan/zoom over the chelsea photo (``frames`` frames)."""
    return demo.out / "chelsea_pan_zoom.mp4"


@dataclass
class Sam2DemoOptions:
    """SAM 2's options of ``tritonlens demo`` (``--sam2-size``, ``--frames``)."""

    sam2_size: int = field(default=512, metadata={"help": "SAM 2 input size in pixels (1024 is SAM 2's own)"})
    frames: int = field(default=24, metadata={"help": "Frames in the demo video clip"})


def demo_export(demo: Demo, options: Sam2DemoOptions) -> None:
    """Write the demo's video clip, and export SAM 2.1 hiera-tiny with random weights at
    ``options.sam2_size`` px (image models + tracker) unless ``demo.repo`` holds it."""
    from tritonlens.export.sam2.export import ExportError, Sam2ExportOptions, export_sam2
    from tritonlens.client.sam2.video import write_demo_clip

    frames, image_size = options.frames, options.sam2_size
    clip = demo_clip(demo)
    if not clip.exists():
        write_demo_clip(str(clip), "chelsea", count=frames)
    console.print(f"video: {clip} ({frames} frames, H.264, a pan/zoom over the chelsea photo)")
    if existing_export(demo.repo, image_size):
        console.print(f"{demo.repo} already holds SAM 2 at {image_size} px; skipping the export")
        return
    try:
        with console.status("exporting SAM 2") as status:
            export_sam2(Sam2ExportOptions(config="sam2.1_hiera_t", image_size=image_size),
                        demo.repo, report=lambda step: status.update(step))
    except ExportError as err:
        raise TritonLensError(str(err)) from None
    console.print(f"exported SAM 2.1 hiera-tiny (random weights) at {image_size} px to {demo.repo}")


def demo(demo: Demo) -> None:
    """Segment the first photo from one click (mask and overlay PNGs) and track an object
    through the clip frame by frame (mask PNGs and an overlay video) in ``demo.results``."""
    from tritonlens.client.sam2.plugin import segment
    from tritonlens.client.sam2.track_cli import track

    server, results = demo.server, demo.results
    demo.rule("segment a photo from one click (SAM 2, sam2_segment)")
    results.mkdir(parents=True, exist_ok=True)
    segment(demo.photos[0], point=["225,150"], box=None, out=results / "chelsea_mask.png",
            overlay=results / "chelsea_overlay.png", multimask=True, url=server.grpc_url,
            protocol="grpc", as_json=False)

    demo.rule("track through a video, streamed frame by frame (SAM 2, sam2_track)")
    track([str(demo_clip(demo))], point=["0:160,110"], box=None, out=str(results / "tracked"),
          max_frames=None, fps=12, url=server.grpc_url, protocol="grpc")
