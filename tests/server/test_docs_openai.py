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

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = REPO_ROOT / "docs" / "openai.md"
BEGIN, END = "<!-- recipe:openai:begin -->", "<!-- recipe:openai:end -->"
SERVE = re.compile(r"^tritonlens serve\b")
PORTS = (8000, 8001, 8002, 9000)

# Runs inside the namespace: part A, serve in the background until "ready", part B, then
# Ctrl-C (SIGINT) to serve. Prints one JSON line with every step's outcome.
DRIVER = r'''
import json, os, re, signal, subprocess, sys, time
work, before, serve, after = sys.argv[1:5]
env_file = os.path.join(work, ".env_after_part_a")
result = {}
a = subprocess.run(["bash", "-ec", before + f'\nenv -0 > "{env_file}"'], cwd=work,
                   capture_output=True, text=True, timeout=900)
result["before"] = [a.returncode, (a.stdout + a.stderr)[-6000:]]
if a.returncode == 0:
    env = dict(item.split("=", 1) for item in open(env_file).read().split("\0") if "=" in item)
    log = open(os.path.join(work, "serve.log"), "w+")
    srv = subprocess.Popen(["bash", "-ec", "exec " + serve], cwd=work, env=env, stdout=log,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and srv.poll() is None:
        log.seek(0)
        if re.search(r"^(ready|serving, NOT ready)\b", log.read(), re.MULTILINE):
            break
        time.sleep(0.5)
    try:
        b = subprocess.run(["bash", "-ec", after], cwd=work, env=env, capture_output=True,
                           text=True, timeout=600)
        result["after"] = [b.returncode, (b.stdout + b.stderr)[-8000:]]
    finally:
        srv.send_signal(signal.SIGINT)
        try:
            code = srv.wait(60)
        except subprocess.TimeoutExpired:
            srv.kill()
            code = srv.wait()
    log.seek(0)
    result["serve"] = [code, log.read()[-8000:]]
print(json.dumps(result))
'''


def recipe() -> tuple[str, str, str]:
    """(script before serve, the serve command without its comment, script after)."""
    page = PAGE.read_text()
    assert BEGIN in page and END in page, "docs/openai.md lost its recipe markers"
    lines = page.split(BEGIN, 1)[1].split(END, 1)[0].strip().splitlines()
    assert lines[0] == "```bash" and lines[-1] == "```", "the recipe is one bash block"
    lines = lines[1:-1]
    index = [i for i, line in enumerate(lines) if SERVE.match(line)]
    assert len(index) == 1, "the recipe has exactly one `tritonlens serve` line"
    serve = lines[index[0]].split("#", 1)[0].strip()
    return "\n".join(lines[:index[0]]), serve, "\n".join(lines[index[0] + 1:])


def namespace_prefix() -> list[str] | None:
    """A command prefix running in a private network namespace with loopback up, or None."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    if subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True).returncode:
        return None
    return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def ports_free() -> bool:
    for port in PORTS:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def test_recipe_is_runnable_shell():
    before, serve, after = recipe()
    for script in (before, after):
        check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    assert serve == "tritonlens serve --openai-port 9000"
    assert "--pretrained none" in before and "from openai import OpenAI" in after


@pytest.mark.tools("curl", "tritonserver")
def test_recipe_runs_as_written(tmp_path):
    before, serve, after = recipe()
    before = before.replace("ViT-B-32", "ViT-S-32")
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(REPO_ROOT / ".venv")
    (work / "examples").symlink_to(REPO_ROOT / "examples")
    prefix = namespace_prefix()
    if prefix is None and not ports_free():
        pytest.skip(f"no network namespace available and ports {PORTS} are busy")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("TRITONLENS_API_KEY", None)
    proc = subprocess.run([*(prefix or []), sys.executable, "-c", DRIVER, str(work), before, serve, after],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
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
