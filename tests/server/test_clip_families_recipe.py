"""docs/clip-families.md's SigLIP recipe runs as written.

The bash block between ``<!-- recipe:siglip:begin -->`` and ``<!-- recipe:siglip:end -->``
is run verbatim the way tests/server/test_readme_quickstart.py runs the README's Quick start
(its driver: the lines before ``tritonlens serve`` as one script, serve in the background
until ready, the lines after as another script, then Ctrl-C; a private network namespace so
the default ports do not collide). The one thing the page asks the reader to bring, the
``siglip-tokenizer/`` folder saved from the Hugging Face Hub, is stood in for by a
SigLIP-shaped tokenizer trained locally (tests/helpers.py): no hub is reachable.

The export is the real ViT-B-16-SigLIP (203 M parameters, random weights): minutes on a
2-core host, so the run is marked ``slow``; the block's shape is checked in the default run.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import t5_like
from tests.helpers import marked_block, run_recipe, split_at_serve

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = REPO_ROOT / "docs" / "clip-families.md"
BEGIN, END = "<!-- recipe:siglip:begin -->", "<!-- recipe:siglip:end -->"


def recipe_lines() -> list[str]:
    """The recipe's shell lines, without the fence."""
    return marked_block(PAGE.read_text(), BEGIN, END, PAGE.name)


def test_recipe_is_runnable_shell():
    before, serve, after = split_at_serve(recipe_lines())
    for script in (before, after):
        check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    assert serve == "tritonlens serve --repo siglip_repository"
    assert "--tokenizer siglip-tokenizer" in before and "--model ViT-B-16-SigLIP" in before
    labels = re.search(r"--labels (\S+)", before).group(1)
    assert (REPO_ROOT / labels).is_file()


@pytest.mark.slow
def test_recipe_runs_as_written(tmp_path):
    pytest.importorskip("transformers")
    work, result = run_recipe(recipe_lines(), tmp_path, env={"HF_HUB_OFFLINE": "1"},
                              prepare=lambda work: t5_like(work / "siglip-tokenizer", vocab_size=1000))
    code, output = result["before"]
    assert code == 0, f"the export failed:\n{output}"
    tokenize = work / "siglip_repository" / "clip_tokenize"
    assert (tokenize / "1" / "tokenizer.json").is_file()
    assert "huggingface" in (tokenize / "config.pbtxt").read_text()
    code, output = result["after"]
    assert code == 0, f"the queries failed:\n{output}\n--- serve:\n{result['serve'][1]}"
    labels = (REPO_ROOT / "examples" / "labels.txt").read_text().split("\n")
    assert "cat.jpg" in output and any(label and label in output for label in labels)
    # SigLIP's cleaning makes "a photo of a cat" and "A_PHOTO of a cat!!" one text: the
    # image's two cosines in embed's table are equal
    rows = [re.findall(r"-?\d\.\d{4}", line) for line in output.splitlines()
            if "cat.jpg" in line and "│" in line]
    assert [len(set(row)) for row in rows if len(row) == 2] == [1], output
    code, log = result["serve"]
    assert re.search(r"^ready\s", log, re.MULTILINE) and code == 0, log
