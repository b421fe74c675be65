"""The docs site (mkdocs.yml, docs/) builds with ``mkdocs build --strict``: every page in the
nav, every link and anchor resolving, and the Python API rendered by mkdocstrings from the
docstrings of the code in this checkout. The build runs offline (no plugin that downloads).

Also: docs/getting-started.md shows the README's Quick start exactly as the README has it
(the README's copy is the one tests/server/test_readme_quickstart.py runs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```bash\n.*?^```$", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.fail("mkdocs is not installed: `make setup` installs the docs extra "
                    "(pip install -e '.[docs]')")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                            str(ROOT / "mkdocs.yml"), "-d", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stderr[-6000:]}"
    return out


def test_every_nav_page_is_built(site):
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    for page in pages:
        html = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert html.is_file(), f"docs/{page}.md was not built"


def test_python_api_is_rendered_from_the_docstrings(site):
    """mkdocstrings found the sources (tritonlens.<folder> through package-dir): the page
    holds each documented object with the first line of its docstring as the code has it."""
    html = (site / "python-api" / "index.html").read_text()
    from tritonlens.client.clip import ClipClient
    from tritonlens.export.clip.export import export_clip
    from tritonlens.launcher import TritonServer

    for obj in (TritonServer, ClipClient, export_clip):
        assert f'id="tritonlens.' in html and obj.__name__ in html
        first_line = obj.__doc__.strip().splitlines()[0]
        words = re.sub(r"[`*:]", "", first_line).split()[:4]
        assert " ".join(words) in re.sub(r"<[^>]+>", "", html), (obj.__name__, words)


def test_getting_started_shows_the_readme_quickstart():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- quickstart:begin -->", 1)[1].split("<!-- quickstart:end -->", 1)[0]
    page = (ROOT / "docs" / "getting-started.md").read_text()
    section = page.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert FENCE.findall(block) == FENCE.findall(section), \
        "docs/getting-started.md's Quick start differs from the README's: copy it over"
