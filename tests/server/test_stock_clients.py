"""The stock-client recipes of docs/stock-clients.md (curl with JSON, curl with the
binary-data extension, tritonclient, perf_analyzer through ``tritonlens perf`` and
directly), run as written against the real server.

The code blocks between ``<!-- stock-clients:begin -->`` and ``<!-- stock-clients:end -->``
are taken verbatim; only ``localhost:8000`` / ``localhost:8001`` become the test server's HTTP
and gRPC addresses. They run in a folder holding ``photos/cat.jpg`` (scikit-image's cat, as
the Quick start writes it) and ``.tools`` linked from this checkout (perf_analyzer's venv,
installed on first use as ``tritonlens bench`` does). Every classification they print must
be the one ``ClipClient`` gets for the same photo, and every embedding ``ClipClient``'s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tritonlens.client.clip import ClipClient

REPO_ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- stock-clients:begin -->", "<!-- stock-clients:end -->"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def recipes() -> list[tuple[str, str]]:
    """(language, code) of every code block in the stock-client page's recipe section."""
    page = (REPO_ROOT / "docs" / "stock-clients.md").read_text()
    assert BEGIN in page and END in page, "docs/stock-clients.md lost its stock-clients markers"
    section = page.split(BEGIN, 1)[1].split(END, 1)[0]
    return FENCE.findall(section)


def recipe(*needles: str) -> tuple[str, str]:
    found = [(lang, code) for lang, code in recipes() if all(n in code for n in needles)]
    assert len(found) == 1, f"one stock-client recipe with {needles}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from skimage import data

    work = tmp_path_factory.mktemp("stock_clients")
    (work / "photos").mkdir()
    Image.fromarray(data.chelsea()).save(work / "photos" / "cat.jpg")
    (work / ".tools").symlink_to(REPO_ROOT / ".tools", target_is_directory=True)
    (REPO_ROOT / ".tools").mkdir(exist_ok=True)
    return work


def run_recipe(lang: str, code: str, server, work: Path, timeout: float = 600) -> str:
    code = code.replace("localhost:8000", server.http_url).replace("localhost:8001", server.grpc_url)
    command = ["bash", "-ec", code] if lang == "bash" else [sys.executable, "-c", code]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{lang} recipe failed:\n{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def expected(server, workdir):
    """ClipClient's top 3 for the cat and its text embedding of 'a photo of a cat'."""
    client = ClipClient(server.grpc_url, "grpc")
    top3 = client.classify(str(workdir / "photos" / "cat.jpg"), top_k=3)
    text = client.embed_texts(["a photo of a cat"])[0]
    return [(label.index, label.score) for label in top3.labels], text


def classifications(output: str) -> list[list[tuple[int, float]]]:
    """Each printed top-k as [(index, score)], from JSON answers or tritonclient's array."""
    found = [re.findall(r"(\d+\.\d+):(\d+):", line) for line in output.splitlines()]
    return [[(int(i), float(s)) for s, i in line] for line in found if line]


def assert_same_top3(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected], (got, expected)
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-5), (got, expected)


def test_curl_json_with_base64_image(server, workdir, expected):
    output = run_recipe(*recipe("request.json", "clip_embed_text"), server, workdir)
    answers = [json.loads(line) for line in output.replace("}{", "}\n{").splitlines() if line.strip()]
    classify, embed = answers
    assert classify["model_name"] == "clip_classify"
    got = [(int(i), float(s)) for s, i, _ in (v.split(":", 2) for v in classify["outputs"][0]["data"])]
    assert_same_top3(got, expected[0])
    vector = np.array(embed["outputs"][0]["data"], dtype=np.float32)
    assert np.allclose(vector, expected[1], atol=1e-5)


def test_curl_binary_data_extension(server, workdir, expected):
    output = run_recipe(*recipe("Inference-Header-Content-Length"), server, workdir)
    (got,) = classifications(output)
    assert_same_top3(got, expected[0])


def test_tritonclient(server, workdir, expected):
    output = run_recipe(*recipe("import tritonclient.http"), server, workdir)
    (got,) = classifications(output.replace("\n", " "))  # numpy prints one array, maybe wrapped
    assert_same_top3(got, expected[0])


def test_perf_analyzer_through_tritonlens_perf_and_directly(server, workdir):
    output = run_recipe(*recipe("tritonlens perf"), server, workdir, timeout=900)
    # perf_analyzer's own report: one throughput line per concurrency, for each of the three
    # runs (clip_classify at 1 and 2, clip_embed_text with shared memory at 2, direct at 1)
    rates = re.findall(r"Concurrency: (\d+), throughput: ([\d.]+) infer/sec", output)
    assert [c for c, _ in rates] == ["1", "2", "2", "1"], output[-3000:]
    assert all(float(r) > 0 for _, r in rates)
    stats = server_statistics(server)
    assert stats["clip_classify"] > 0 and stats["clip_embed_text"] > 0


def server_statistics(server) -> dict[str, int]:
    """Successful inference counts per model, from Triton's statistics extension."""
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics()
    return {m["name"]: int(m["inference_stats"]["success"]["count"])
            for m in stats["model_stats"]}


def test_tritonlens_perf_sends_the_api_key_for_shared_memory(server, workdir):
    """Registering shared memory is a restricted API: with the server's key (found by port,
    as tritonlens' clients do) the perf recipe above ran; with a wrong key it is refused."""
    tritonlens = str(Path(sys.executable).parent / "tritonlens")
    proc = subprocess.run(
        [tritonlens, "perf", "-m", "clip_embed_text", "-u", server.http_url, "--string-data", "x",
         "--shared-memory", "system", "--concurrency-range", "1"],
        cwd=workdir, env=dict(os.environ, TRITONLENS_API_KEY="not-the-key"),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "restricted" in (proc.stdout + proc.stderr), proc.stdout[-2000:] + proc.stderr[-2000:]
