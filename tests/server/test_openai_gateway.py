"""The OpenAI-compatible embeddings gateway (launcher/openai_gateway.py) in front of the
session's real tritonserver, called by the clients its users run: the ``openai`` package and
curl. Its vectors must be the ones ``clip_embed_text`` / ``clip_embed_image`` return to
tritonclient (cosine >= 0.9999), in float and base64; bad input fails alone, with OpenAI's
error JSON, while other requests go on; a key, when asked for, is required; and
``tritonlens serve --replicas 2 --openai-port`` serves it through nginx.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tritonlens.client.clip import ClipClient
from tritonlens.launcher.openai_process import OpenAIGateway
from tritonlens.serve.headers import api_key_file

openai = pytest.importorskip("openai", reason="the openai package (tritonlens[test]) is the client under test")

TEXTS = ["a photo of a cat", "a diagram of a bee", "une tasse de café ☕"]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    """An open gateway on a free port in front of the session server's gRPC endpoint."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with OpenAIGateway(server.grpc_url, port=0, log_file=log) as running:
        yield running


@pytest.fixture(scope="module")
def reference(server, photos):
    """What tritonclient gets from clip_embed_text / clip_embed_image: (texts [T, D], photos [P, D])."""
    client = ClipClient(server.grpc_url, "grpc")
    return client.embed_texts(TEXTS), client.embed_images([p.read_bytes() for p in photos])


def data_url(path: Path) -> str:
    media = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}[path.suffix.lower()]
    return f"data:image/{media};base64,{base64.b64encode(path.read_bytes()).decode()}"


def client_for(gateway: OpenAIGateway, key: str = "unused") -> "openai.OpenAI":
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=120)


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_package_texts_and_images_equal_the_served_models(gateway, reference, photos, encoding_format):
    texts_ref, photos_ref = reference
    # texts and images mixed in one list; images as data URLs and as plain base64 files
    inputs, expected = [], []
    for i, path in enumerate(photos):
        inputs.append(data_url(path) if i % 2 == 0 else base64.b64encode(path.read_bytes()).decode())
        expected.append(photos_ref[i])
        if i < len(TEXTS):
            inputs.append(TEXTS[i])
            expected.append(texts_ref[i])
    response = client_for(gateway).embeddings.create(model="clip", input=inputs,
                                                     encoding_format=encoding_format)
    assert [d.index for d in response.data] == list(range(len(inputs)))
    # the package decodes base64 itself only when it chose the format (no encoding_format given)
    got = np.array([np.frombuffer(base64.b64decode(d.embedding), "<f4") if encoding_format == "base64"
                    else d.embedding for d in response.data])
    assert got.shape == np.array(expected).shape
    assert cosines(got, expected).min() >= MIN_COSINE
    assert response.model == "clip" and response.usage.prompt_tokens == len(inputs)


def test_openai_package_single_string_and_models(gateway, reference):
    client = client_for(gateway)
    response = client.embeddings.create(model="clip", input=TEXTS[0])  # the package asks for base64
    assert len(response.data) == 1 and len(response.data[0].embedding) == reference[0].shape[1]
    assert cosines(response.data[0].embedding, reference[0][0]) >= MIN_COSINE
    assert [m.id for m in client.models.list()] == ["clip"]
    assert client.models.retrieve("clip").id == "clip"


def curl(gateway: OpenAIGateway, path: str, body: dict | None, tmp_path: Path,
         headers: tuple[str, ...] = ()) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of curl against the gateway."""
    command = ["curl", "-sS", "-w", "\n%{http_code}", gateway.url + path]
    for header in headers:
        command += ["-H", header]
    if body is not None:
        (tmp_path / "body.json").write_text(json.dumps(body))
        command += ["-H", "Content-Type: application/json", "--data-binary", f"@{tmp_path / 'body.json'}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    text, status = done.stdout.rsplit("\n", 1)
    return int(status), json.loads(text)


@pytest.mark.tools("curl")
@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_curl(gateway, reference, photos, tmp_path, encoding_format):
    status, answer = curl(gateway, "/v1/embeddings", {
        "model": "clip", "input": [TEXTS[1], data_url(photos[0])],
        "encoding_format": encoding_format}, tmp_path)
    assert status == 200, answer
    vectors = [d["embedding"] for d in answer["data"]]
    if encoding_format == "base64":
        vectors = [np.frombuffer(base64.b64decode(v), "<f4") for v in vectors]
    assert cosines(vectors, [reference[0][1], reference[1][0]]).min() >= MIN_COSINE
    status, models = curl(gateway, "/v1/models", None, tmp_path)
    assert status == 200 and models["data"][0]["id"] == "clip"


@pytest.mark.tools("curl")
def test_modality_field(gateway, reference, photos, tmp_path):
    """infinity's field: modality "text" embeds a URL-looking string as text; "image" needs images."""
    status, answer = curl(gateway, "/v1/embeddings", {
        "model": "clip", "input": ["https://example.com"], "modality": "text"}, tmp_path)
    assert status == 200 and len(answer["data"][0]["embedding"]) == reference[0].shape[1]
    status, answer = curl(gateway, "/v1/embeddings", {
        "model": "clip", "input": [data_url(photos[1]), "a cat"], "modality": "image"}, tmp_path)
    assert status == 400 and answer["error"]["param"] == "input[1]", answer


def corrupt_png(photos) -> str:
    png = next(p for p in photos if p.suffix == ".png").read_bytes()
    return "data:image/png;base64," + base64.b64encode(png[: len(png) // 3]).decode()


BAD_REQUESTS = {
    # name: (body, HTTP status, param, what the message must say)
    "bad base64": ({"model": "clip", "input": ["a cat", "data:image/png;base64,@@@@"]}, 400,
                   "input[1]", "not valid base64"),
    "remote URL": ({"model": "clip", "input": "https://example.com/cat.jpg"}, 400, "input[0]",
                   "does not fetch URLs"),
    "empty input": ({"model": "clip", "input": []}, 400, "input", "empty list"),
    "empty string": ({"model": "clip", "input": ["a", ""]}, 400, "input[1]", "empty string"),
    "unknown model": ({"model": "text-embedding-3-small", "input": "a cat"}, 404, "model",
                      "not served by this gateway"),
    "token array": ({"model": "clip", "input": [101, 2023]}, 400, "input", "token array"),
    # refused inside Triton (clip_tokenize / clip_preprocess), named by the request's position
    "over-long text": ({"model": "clip", "input": ["ok", "fine", "cat " * 1000]}, 400, "input[2]",
                       "over the limit of 2048 bytes"),
    "corrupt image": (None, 400, "input[1]", "corrupt or truncated PNG"),
    "not an image": ({"model": "clip", "input": ["a", "data:image/png;base64,aGVsbG8gd29ybGQ="]}, 400,
                     "input[1]", "not a JPEG, PNG or WebP image"),
    "dimensions": ({"model": "clip", "input": "a cat", "dimensions": 7}, 400, "dimensions",
                   "cannot be shortened"),
}


def test_bad_input_fails_alone_while_other_traffic_goes_on(gateway, reference, photos):
    """Good requests from 4 threads (openai package) run the whole time; each bad request gets
    its own clear error as the openai package raises it; none of the good ones fails."""
    good = [TEXTS[0], data_url(photos[0])]
    stop, results = threading.Event(), []

    def traffic():
        client = client_for(gateway)
        while not stop.is_set():
            response = client.embeddings.create(model="clip", input=good)
            results.append(cosines([d.embedding for d in response.data],
                                   [reference[0][0], reference[1][0]]).min())

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(traffic) for _ in range(4)]
        try:
            client = client_for(gateway)
            for name, (body, status, param, phrase) in BAD_REQUESTS.items():
                if body is None:
                    body = {"model": "clip", "input": ["a cat", corrupt_png(photos)]}
                extra = {k: v for k, v in body.items() if k not in ("model", "input")}
                with pytest.raises(openai.APIStatusError) as caught:
                    client.embeddings.create(model=body["model"], input=body["input"], extra_body=extra)
                error = caught.value
                assert error.status_code == status, (name, error.body)
                assert error.body["param"] == param and phrase in error.body["message"], (name, error.body)
                assert error.body["type"] == "invalid_request_error", (name, error.body)
        finally:
            stop.set()
            for worker in workers:
                worker.result()  # a failed good request raises here
    assert len(results) >= 4 and min(results) >= MIN_COSINE


@pytest.mark.tools("curl")
def test_non_json_body(gateway, tmp_path):
    done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
                           "--data-binary", "{not json", gateway.url + "/v1/embeddings"],
                          capture_output=True, text=True, timeout=60, check=True)
    text, status = done.stdout.rsplit("\n", 1)
    assert status == "400" and json.loads(text)["error"]["code"] == "invalid_json"


def test_body_over_the_limit_is_413(server, photos, tmp_path):
    with OpenAIGateway(server.grpc_url, port=0, max_body_bytes=100_000,
                       log_file=tmp_path / "gateway.log") as small:
        client = client_for(small)
        with pytest.raises(openai.APIStatusError) as caught:
            client.embeddings.create(model="clip", input=[data_url(p) for p in photos])
        assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"
        assert "limit of 100000 bytes" in caught.value.body["message"]
        assert len(client.embeddings.create(model="clip", input=TEXTS).data) == 3  # goes on


@pytest.mark.tools("curl")
def test_key_when_asked_for(server, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with OpenAIGateway(server.grpc_url, port=0, api_key="k-42-secret",
                       log_file=tmp_path / "gateway.log") as keyed:
        assert api_key_file(keyed.port).read_text() == "k-42-secret"
        assert oct(api_key_file(keyed.port).stat().st_mode & 0o777) == "0o600"
        for key in ("wrong", ""):
            with pytest.raises(openai.AuthenticationError) as caught:
                client_for(keyed, key or "unused").embeddings.create(model="clip", input="a cat")
            assert caught.value.status_code == 401
            assert caught.value.body["code"] == "invalid_api_key"
        status, answer = curl(keyed, "/v1/embeddings", {"model": "clip", "input": "a cat"}, tmp_path)
        assert status == 401 and "no API key" in answer["error"]["message"]
        status, _ = curl(keyed, "/v1/models", None, tmp_path)
        assert status == 401
        response = client_for(keyed, "k-42-secret").embeddings.create(model="clip", input=TEXTS[0])
        assert cosines(response.data[0].embedding, reference[0][0]) >= MIN_COSINE
    assert not api_key_file(keyed.port).exists()


@pytest.mark.tools("nginx")
def test_serve_replicas_with_openai_port_and_key(repo, reference, photos, tmp_path):
    """``tritonlens serve --replicas 2 --openai-port 0 --openai-require-key``: the gateway
    talks to nginx, requires the server's API key, and stops with the command."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), TRITONLENS_API_KEY="replica-key-7")
    log = open(tmp_path / "serve.log", "w+")
    serve = subprocess.Popen(
        [sys.executable, "-m", "tritonlens.client.cli", "serve", "--repo", str(repo), "--replicas", "2",
         "--http-port", "0", "--grpc-port", "0", "--model-control-mode", "explicit",
         "--load-model", "clip_embed_text", "--load-model", "clip_embed_image",
         "--openai-port", "0", "--openai-require-key"],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, found = time.monotonic() + 600, None
        while time.monotonic() < deadline and serve.poll() is None and not found:
            time.sleep(1)
            log.seek(0)
            found = re.search(r"OpenAI embeddings API: (http://\S+/v1)\s+models: clip\s+key required",
                              log.read())
        log.seek(0)
        assert found, log.read()[-4000:]
        client = openai.OpenAI(base_url=found.group(1), api_key="replica-key-7", max_retries=0, timeout=120)
        response = client.embeddings.create(model="clip", input=[TEXTS[2], data_url(photos[2])])
        assert cosines([d.embedding for d in response.data],
                       [reference[0][2], reference[1][2]]).min() >= MIN_COSINE
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=found.group(1), api_key="wrong", max_retries=0).models.list()
    finally:
        serve.send_signal(signal.SIGINT)
        code = serve.wait(120)
        log.seek(0)
        output = log.read()
        log.close()
    assert code == 0 and "replicas and nginx stopped" in output, output[-4000:]
    port = int(found.group(1).rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):  # the gateway stopped with the command
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_benchmark_runs(repo, capsys):
    """``python -m tritonlens.bench.clip.openai_gateway``, cut to one short round of texts: both arms
    give the same vectors and the table has both rows."""
    from tritonlens.bench.clip.openai_gateway import main

    main(["--repo", str(repo), "--seconds", "1", "--rounds", "1", "--kinds", "text", "--concurrency", "2"])
    out = capsys.readouterr().out
    assert "text: cosine(direct, gateway) = 1.000000" in out, out
    assert re.search(r"^\| text \| direct \| [\d.]+ \| 1\.00x \|", out, re.MULTILINE), out
    assert re.search(r"^\| text \| gateway \| [\d.]+ \| [\d.]+x \| [\d.]+ \| [\d.]+ \|", out, re.MULTILINE), out
