"""docs/openai.md's recipe runs as written.

The bash block between ``<!-- recipe:openai:begin -->`` and ``<!-- recipe:openai:end -->`` is
taken verbatim and run in a fresh working folder holding only what a fresh clone has after
``make setup`` and that the block uses (``.venv`` and ``examples/``, linked from this
checkout), as the README's Quick start is run (tests/server/test_readme_quickstart.py): the
lines before ``tritonlens serve`` as one bash script, serve in the background as in its own
terminal until it prints ``ready`` (the gateway is up by then), the lines after it as a second
script in the environment the first left, then Ctrl-C. Every line must succeed (``set -e``).

One substitution keeps the run short: ``ViT-B-32`` becomes ``ViT-S-32``. The block uses fixed
ports (Triton's 8000-8002, the gateway's 9000): the run happens in a private network
namespace (``unshare -rn``); without one it runs on the host's ports if they are free, and is
skipped otherwise.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import marked_block, run_recipe, split_at_serve

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = REPO_ROOT / "docs" / "openai.md"
BEGIN, END = "<!-- recipe:openai:begin -->", "<!-- recipe:openai:end -->"
PORTS = (8000, 8001, 8002, 9000)


def recipe() -> tuple[str, str, str]:
    """(script before serve, the serve command without its comment, script after)."""
    return split_at_serve(marked_block(PAGE.read_text(), BEGIN, END, "docs/openai.md"))


def test_recipe_is_runnable_shell():
    before, serve, after = recipe()
    for script in (before, after):
        check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    assert serve == "tritonlens serve --openai-port 9000"
    assert "--pretrained none" in before and "from openai import OpenAI" in after


@pytest.mark.tools("curl", "tritonserver")
def test_recipe_runs_as_written(tmp_path):
    lines = [line.replace("ViT-B-32", "ViT-S-32")
             for line in marked_block(PAGE.read_text(), BEGIN, END, "docs/openai.md")]
    work, result = run_recipe(lines, tmp_path, ports=PORTS)
    code, output = result["before"]
    assert code == 0, f"the lines before `tritonlens serve` failed:\n{output}"
    code, output = result["after"]
    assert code == 0, f"the lines after `tritonlens serve` failed:\n{output}\n--- serve:\n{result['serve'][1]}"
    # /v1/models lists clip; both curl answers are embeddings (floats, then base64); the
    # openai package's three vectors have ViT-S-32's 384 dimensions and print two cosines
    assert '"id":"clip"' in output, output
    assert output.count('{"object":"list","model":"clip","data":[{"object":"embedding","index":0,"embedding":') == 2
    assert re.search(r'"embedding":\[-?\d', output) and re.search(r'"embedding":"[A-Za-z0-9+/]', output)
    found = re.search(r"^384-d embeddings; cosine\(photo, 'a photo of a cat'\) = (-?[01]\.\d{3}), "
                      r"cosine\(photo, 'a photo of a dog'\) = (-?[01]\.\d{3})$", output, re.MULTILINE)
    assert found, output
    code, log = result["serve"]
    assert re.search(r"^OpenAI embeddings API: http://127\.0\.0\.1:9000/v1\s+models: clip\s+open, no key",
                     log, re.MULTILINE), log
    assert code == 0 and "tritonserver stopped (exit code 0)" in log, log
