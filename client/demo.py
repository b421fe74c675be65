"""``tritonlens demo``: the main job on real input, start to finish, for every plugin.

Real photos (scikit-image's sample photographs, written as JPEG, PNG and WebP files), a
real tritonserver, real requests over gRPC and HTTP. Each installed model family adds its
part through its plugin (``Plugin.demo_export`` before the server starts, ``Plugin.demo``
once it serves): CLIP zero-shot classification and embeddings, SAM 2 segmentation from a
click and video tracking streamed frame by frame, and whatever a third-party plugin shows.
Nothing here is simulated; without checkpoints the weights are random, and every output
says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

from tritonlens.client.base import TritonLensError
from tritonlens.client.options import console
from tritonlens.core.plugins import Demo, load_plugins

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


def run_demo(repo: Path, options: dict[str, Any], out: Path) -> None:
    """Write the photos, let every plugin export, serve, let every plugin send its
    requests; see the module doc. ``options`` are the demo command's (``Demo.options``)."""
    from tritonlens.launcher import TritonServer

    plugins = load_plugins()
    demo = Demo(repo=repo, photos=write_sample_photos(out), out=out,
                results=out.parent / "demo_results", options=options, console=console)
    demo.rule("real photos")
    console.print(f"{len(demo.photos)} photos in {out}: " + ", ".join(p.name for p in demo.photos))

    demo.rule("export: " + ", ".join(plugins))
    for plugin in plugins.values():
        plugin.demo_export(demo)

    demo.rule("serve")
    log_file = repo.parent / f"{repo.name}.server.log"
    started = time.monotonic()
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0, log_file=log_file) as server:
        console.print(f"tritonserver ready in {time.monotonic() - started:.1f} s: gRPC "
                      f"{server.grpc_url}, HTTP {server.http_url} (log: {log_file})")
        demo.server = server
        for plugin in plugins.values():
            plugin.client(server.grpc_url, "grpc").check_ready(*plugin.models)
            plugin.demo(demo)
    console.print(f"tritonserver stopped; what the demo wrote is in {demo.results}")
