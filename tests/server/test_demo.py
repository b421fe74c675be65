"""``tritonlens demo``'s requests (each built-in family's ``Plugin.demo``) against the session
server: the README's first command exercised without its full-size exports."""

from __future__ import annotations

from tritonlens.client.options import console
from tritonlens.client.sam2.demo import demo_clip
from tritonlens.client.sam2.video import write_demo_clip
from tritonlens.core.plugins import Demo, load_plugins


def test_every_built_in_family_demo_runs_against_a_real_server(server, photos, tmp_path):
    plugins = load_plugins()
    demo = Demo(repo=server.model_repository, photos=photos, out=tmp_path / "samples",
                results=tmp_path / "results", options={"frames": 8}, console=console,
                server=server)
    demo.out.mkdir()
    write_demo_clip(str(demo_clip(demo)), "chelsea", count=8)
    for family in ("clip", "sam2"):
        plugins[family].demo(demo)
    assert (demo.results / "chelsea_mask.png").stat().st_size > 0
    assert (demo.results / "chelsea_overlay.png").stat().st_size > 0
    tracked = demo.results / "tracked"
    assert (tracked / "overlay.mp4").stat().st_size > 0
    assert len(list(tracked.glob("frame*_object1.png"))) == 8
