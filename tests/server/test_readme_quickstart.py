"""The README's Quick start runs as written.

The shell block between ``<!-- quickstart:begin -->`` and ``<!-- quickstart:end -->`` in
README.md is taken verbatim and run in a fresh working folder that holds only what a fresh
clone has after ``make setup`` and that the block uses (``.venv`` and ``examples/``, linked
from this checkout). The ``tritonlens serve`` line runs in the background as in its own
terminal; the lines before it run as one bash script, the lines after it as another (in
the environment the first left, as a second terminal after ``source .venv/bin/activate``).
Every line must succeed (``set -e``), serve must print ``ready`` and stop cleanly on Ctrl-C.

One substitution, so that the default run stays short: the CLIP architecture ``ViT-B-32``
becomes ``$TRITONLENS_QUICKSTART_MODEL`` (default ``ViT-S-32``, the suite's small model).
The block uses the default ports (8000-8002): the whole run happens in a private network
namespace (``unshare -rn``) so that other servers on this host do not collide; without
namespaces it runs on the host's ports if they are free, and is skipped otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.helpers import marked_block, run_recipe, split_at_serve

REPO_ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
MODEL = os.environ.get("TRITONLENS_QUICKSTART_MODEL", "ViT-S-32")

def quickstart_block(readme: str) -> list[str]:
    """The Quick start's shell lines, without the fence (bash joins continued lines)."""
    return marked_block(readme, BEGIN, END, "README.md's Quick start")


def test_quickstart_block_is_runnable_shell():
    """The block parses: bash accepts it, it uses the shipped labels file, and every path
    it reads is created by the block itself or ships with the repository."""
    before, serve, after = split_at_serve(quickstart_block((REPO_ROOT / "README.md").read_text()))
    for script in (before, after):
        check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    assert serve == "tritonlens serve"
    labels = re.search(r"--labels (\S+)", before).group(1)
    assert (REPO_ROOT / labels).is_file(), f"{labels} is not in the repository"
    assert "--pretrained none" in before


def test_quickstart_runs_as_written(tmp_path):
    lines = [line.replace("ViT-B-32", MODEL) for line in quickstart_block((REPO_ROOT / "README.md").read_text())]
    work, result = run_recipe(lines, tmp_path)
    code, output = result["before"]
    assert code == 0, f"the lines before `tritonlens serve` failed:\n{output}"
    assert (work / "model_repository" / "clip_classify" / "config.pbtxt").is_file()
    code, output = result["after"]
    assert code == 0, f"the lines after `tritonlens serve` failed:\n{output}\n--- serve:\n{result['serve'][1]}"
    # what the commands print: both photos classified with a label of examples/labels.txt,
    # a cosine similarity, and the status table with the classifier READY
    labels = (REPO_ROOT / "examples" / "labels.txt").read_text().split("\n")
    assert "cat.jpg" in output and "coffee.png" in output
    assert any(label and label in output for label in labels)
    assert "cosine" in output.lower() or "similarit" in output.lower(), output
    assert re.search(r"clip_classify\s.*READY", output), output
    code, log = result["serve"]
    assert re.search(r"^ready\s", log, re.MULTILINE) and code == 0, log
    assert "tritonserver stopped (exit code 0)" in log, log
