"""clip_rank through a real tritonserver: labels chosen at request time, equal to open_clip's
zero-shot in-process; every text encoded once (clip_rank's text-embedding cache, counted in
Triton's metrics and shown by ``tritonlens status``; the text encoder's statistics count what
was encoded); bad input
refused alone; the CLI's ``classify --labels``; the docs page's recipe run verbatim.

The module exports CLIP alone (ViT-S-32, the suite's seeded checkpoint, 8 images per batch)
and serves it, so the run stays small (no SAM 2) and the statistics count only its traffic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from tests.helpers import CLIP_TEST_LABELS, CLIP_TEST_MODEL, CLIP_TEST_TEMPLATES, reference_image_embeddings
from tritonlens.client.base import InferenceError
from tritonlens.client.cache_status import text_cache_counts
from tritonlens.client.clip import ClipClient, bytes_tensor
from tritonlens.client.clip.rank import query_tensor
from tritonlens.export.config import warmup_image
from tritonlens.launcher import TritonServer

REPO_ROOT = Path(__file__).resolve().parents[2]
LABELS = [line for line in (REPO_ROOT / "examples" / "labels.txt").read_text().splitlines() if line]
DOCS = REPO_ROOT / "docs" / "clip-request-time.md"
INVALID = ("StatusCode.INVALID_ARGUMENT", "400")


@pytest.fixture(scope="module")
def rank_repo(tmp_path_factory, clip_checkpoint) -> Path:
    from tritonlens.export.clip import ClipExportOptions, export_clip

    path = tmp_path_factory.mktemp("rank_repository")
    export_clip(ClipExportOptions(model=CLIP_TEST_MODEL, pretrained=str(clip_checkpoint),
                                  labels=CLIP_TEST_LABELS, templates=CLIP_TEST_TEMPLATES,
                                  max_batch_size=8), path)
    return path


@pytest.fixture(scope="module")
def rank_server(rank_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("rank_logs") / "tritonserver.log"
    with TritonServer(rank_repo, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def hundred_photos(photos, tmp_path_factory) -> list[Path]:
    """100 different real photos: crops of scikit-image's sample photos at seeded places and
    sizes, as JPEG files."""
    out = tmp_path_factory.mktemp("hundred_photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(100):
        image = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        path = out / f"photo_{i:03d}.jpg"
        image.crop((x, y, x + cw, y + ch)).save(path, quality=90)
        paths.append(path)
    return paths


def reference_rank(clip_reference, paths, labels, templates=("{}",)) -> np.ndarray:
    """open_clip's zero-shot in-process: build_zero_shot_classifier over ``labels`` x
    ``templates``, softmax of the model's logit scale x cosine."""
    model, _, tokenizer = clip_reference
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, labels, list(templates),
                                                          device="cpu")
        features = torch.from_numpy(reference_image_embeddings(clip_reference, paths))
        return (model.logit_scale.exp() * features @ classifier).softmax(dim=-1).numpy()


def text_encoder_stats(client: ClipClient, server) -> dict[str, int]:
    """What the text encoder ran (Triton's statistics) and clip_rank's text-cache lookups
    (Triton's metrics)."""
    stats = client.connection.get_inference_statistics("clip_text_encoder", as_json=True)
    entry = stats["model_stats"][0]
    metrics = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    counts = text_cache_counts(metrics, "clip_rank") or {"hits": 0, "misses": 0}
    return {"inferences": int(entry["inference_count"]), "hits": int(counts["hits"]),
            "misses": int(counts["misses"])}


def test_100_photos_x_27_labels_encode_each_label_once(rank_server, hundred_photos, clip_reference):
    """The seed's 27 labels sent with every photo, one request per photo, 4 in flight: the
    text encoder runs at most 27 inferences, every other lookup is a cache hit, and the
    probabilities equal open_clip's zero-shot with those labels."""
    client = ClipClient(rank_server.grpc_url, "grpc")
    before = text_encoder_stats(client, rank_server)  # warm-up (model_warmup) already counted
    served = client.rank(hundred_photos, LABELS, batch_size=1, concurrency=4)
    after = text_encoder_stats(client, rank_server)
    assert len(LABELS) == 27 and served.shape == (100, 27)
    encoded = after["inferences"] - before["inferences"]
    print(f"100 photos x 27 labels: {encoded} text-encoder inferences, "
          f"{after['hits'] - before['hits']} cache hits, {after['misses'] - before['misses']} misses")
    assert 0 < encoded <= 27
    assert after["misses"] - before["misses"] == encoded  # each inference was a cache miss
    assert after["hits"] - before["hits"] >= 27  # later requests were answered by the cache
    expected = reference_rank(clip_reference, hundred_photos, LABELS)
    assert np.abs(served - expected).max() <= 1e-4
    # a second pass is answered from the cache alone
    client.rank(hundred_photos[:8], LABELS)
    assert text_encoder_stats(client, rank_server)["inferences"] == after["inferences"]


def test_templates_equal_open_clip_and_clip_classify(rank_server, photos, clip_reference, protocol):
    """With the export's labels and templates, clip_rank answers what clip_classify (label
    embeddings as graph constants) and open_clip in-process answer; ranking is the order."""
    client = ClipClient(rank_server.url(protocol), protocol)
    served = client.rank(photos, CLIP_TEST_LABELS, CLIP_TEST_TEMPLATES)
    expected = reference_rank(clip_reference, photos, CLIP_TEST_LABELS, CLIP_TEST_TEMPLATES)
    assert np.abs(served - expected).max() <= 1e-4
    assert np.abs(served - client.probabilities(photos)).max() <= 1e-4
    result = client.infer("clip_rank", {"image": query_tensor([photos[0].read_bytes()]),
                                        "text": query_tensor([t.encode() for t in CLIP_TEST_LABELS])})
    probabilities, ranking = result.as_numpy("probabilities"), result.as_numpy("ranking")
    assert probabilities.shape == ranking.shape == (1, 1, len(CLIP_TEST_LABELS))
    assert ranking.dtype == np.int32
    assert (probabilities[0, 0, ranking[0, 0]] == np.sort(probabilities[0, 0])[::-1]).all()


def test_several_queries_in_one_request(rank_server, photos):
    """B = 2 rows: each query is ranked against its own candidates."""
    client = ClipClient(rank_server.grpc_url, "grpc")
    images = np.array([[photos[0].read_bytes(), photos[1].read_bytes()],
                       [photos[2].read_bytes(), photos[3].read_bytes()]], dtype=np.object_)
    texts = np.array([[b"a cat", b"a rocket"], [b"a coffee", b"a horse"]], dtype=np.object_)
    both = client.infer("clip_rank", {"image": images, "text": texts}).as_numpy("probabilities")
    assert both.shape == (2, 2, 2)
    np.testing.assert_allclose(both[0], client.rank(photos[:2], ["a cat", "a rocket"]), atol=1e-6)
    np.testing.assert_allclose(both[1], client.rank(photos[2:4], ["a coffee", "a horse"]), atol=1e-6)


def bad_requests(photos) -> dict[str, tuple[dict[str, np.ndarray], str]]:
    """name -> (inputs, a phrase the error must contain)."""
    image = query_tensor([photos[0].read_bytes()])
    text = query_tensor([b"a cat", b"a dog"])
    return {
        "empty candidate list": ({"image": image, "text": np.empty((1, 0), np.object_)},
                                 "empty candidate list"),
        "too many candidates": ({"image": image, "text": query_tensor([f"{i}".encode() for i in range(1001)])},
                                "1001 candidate texts, over the limit of 1000"),
        "over-long text": ({"image": image, "text": query_tensor([b"a cat", b"x" * 3000])},
                           "candidate 1: text is 3000 bytes, over the limit of 2048 bytes"),
        "too many images": ({"image": query_tensor([photos[0].read_bytes()] * 9), "text": text},
                            "9 images, over the limit of 8 per request (max_images)"),
        "mismatched shapes": ({"image": np.concatenate([image, image]), "text": text},
                              "input 'image' batch size does not match other inputs"),
        "template without {}": ({"image": image, "text": text, "templates": query_tensor([b"a photo"])},
                                "template 0 'a photo' has no '{}'"),
        "not an image": ({"image": query_tensor([photos[0].read_bytes(), b"name,value\n"]), "text": text},
                         "image 1 of the request: not a JPEG, PNG or WebP image"),
        "1-D input": ({"image": image.reshape(-1), "text": text}, "unexpected shape for input 'image'"),
    }


def test_bad_input_fails_alone(rank_server, photos, protocol):
    client = ClipClient(rank_server.url(protocol), protocol)
    good = client.rank(photos[:2], ["a cat", "a dog"])
    for name, (inputs, phrase) in bad_requests(photos).items():
        with pytest.raises(InferenceError) as info:
            client.infer("clip_rank", inputs)
        message = str(info.value)
        assert phrase in message, f"{name}: {message}"
        assert info.value.status in INVALID, (name, info.value.status)
        np.testing.assert_allclose(client.rank(photos[:2], ["a cat", "a dog"]), good, atol=1e-6)


def test_bad_requests_in_concurrent_traffic(rank_server, photos):
    """Bad requests batched with good ones by clip_rank's dynamic batcher: each good one gets
    its own right answer, each bad one its own error."""
    client = ClipClient(rank_server.grpc_url, "grpc")
    labels = ["a cat", "a coffee", "a rocket"]
    expected = client.rank(photos[:1], labels)
    bad = list(bad_requests(photos).values())

    def call(i):
        if i % 2:
            inputs, phrase = bad[i // 2 % len(bad)]
            try:
                client.infer("clip_rank", inputs)
            except InferenceError as err:
                return phrase in str(err)
            return False
        return np.abs(client.rank(photos[:1], labels) - expected).max() <= 1e-6

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(call, range(32)))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "tritonlens"), *args],
                          capture_output=True, text=True, timeout=300)


def test_classify_with_labels(rank_server, hundred_photos, tmp_path, clip_reference):
    """--labels and --labels-file: every image in input order, top-k, JSON lines; a bad file
    fails alone; the exported labels stay the default without them."""
    images = hundred_photos[:10]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    url = rank_server.grpc_url
    proc = run_cli("classify", *map(str, images[:3]), str(bad), *map(str, images[3:]),
                   "--labels", "a cat, a cup of coffee,a rocket", "-k", "2", "--json", "--url", url)
    assert proc.returncode == 1 and "broken.jpg" in proc.stderr and "not a JPEG" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    expected = reference_rank(clip_reference, images, ["a cat", "a cup of coffee", "a rocket"])
    for line, row in zip(lines, expected):
        scores = [label["score"] for label in line["labels"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
        assert all(abs(label["score"] - row[label["index"]]) <= 1e-4 for label in line["labels"])
        assert abs(scores[0] - row.max()) <= 1e-4
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(LABELS) + "\n")
    proc = run_cli("classify", str(images[0]), "--labels-file", str(labels_file), "--url", url)
    assert proc.returncode == 0, proc.stderr
    assert sum(label in proc.stdout for label in LABELS) >= 5  # the top 5 of the file's labels
    proc = run_cli("classify", str(images[0]), "--json", "--url", url)  # the exported labels
    assert {l["label"] for l in json.loads(proc.stdout)["labels"]} <= set(CLIP_TEST_LABELS)
    for args, phrase in ((["--labels", "a,,b"], "label 2 is empty"),
                         (["--labels", "a", "--labels-file", str(labels_file)], "not both"),
                         (["--template", "a {}"], "--template needs --labels")):
        proc = run_cli("classify", str(images[0]), *args, "--url", url)
        assert proc.returncode == 1 and phrase in proc.stderr, proc.stderr


def test_status_shows_the_text_cache(rank_server):
    ClipClient(rank_server.grpc_url).rank([warmup_image()], ["a cat", "a dog"])
    metrics = ["--metrics-url", rank_server.metrics_url]
    proc = run_cli("status", "--url", rank_server.http_url, "--protocol", "http", "--json", *metrics)
    models = {m["name"]: m for m in json.loads(proc.stdout)["models"]}
    assert re.fullmatch(r"text: \d+ hits, [1-9]\d* misses, \d+\.\d MiB", models["clip_rank"]["details"]["cache"])
    assert "cache" not in models["clip_text_encoder"]["details"]
    proc = run_cli("status", "--url", rank_server.http_url, "--protocol", "http", *metrics)
    assert "cache" in proc.stdout and re.search(r"clip_rank.*\d+ hits", proc.stdout)


def test_repeated_bad_token_ids_fail_every_time(rank_server, protocol):
    """Why the text cache is clip_rank's and not Triton's response cache: the same invalid
    request to the text encoder fails every time (Triton 2.51's response cache would answer
    the second one with an empty success)."""
    client = ClipClient(rank_server.url(protocol), protocol)
    good = client.infer("clip_tokenize", {"text": bytes_tensor([b"a photo of a cat"])}).as_numpy("token_ids")
    bad = np.full_like(good, 10**9)
    for _ in range(3):
        with pytest.raises(InferenceError, match="out of data bounds"):
            client.infer("clip_text_encoder", {"token_ids": bad})


def docs_recipe(name: str) -> str:
    page = DOCS.read_text()
    begin, end = f"<!-- recipe:{name}:begin -->", f"<!-- recipe:{name}:end -->"
    assert begin in page and end in page, f"{DOCS.name} lost its {name} recipe markers"
    block = page.split(begin, 1)[1].split(end, 1)[0].strip().splitlines()
    assert block[0] == "```bash" and block[-1] == "```", "the recipe is one bash block"
    return "\n".join(block[1:-1])


def test_docs_recipe_runs_as_written(rank_server, tmp_path):
    """The page's recipe, verbatim but for the server's ports, in a folder holding the Quick
    start's photos and this checkout's .venv."""
    from skimage import data

    (tmp_path / "photos").mkdir()
    Image.fromarray(data.chelsea()).save(tmp_path / "photos" / "cat.jpg")
    Image.fromarray(data.coffee()).save(tmp_path / "photos" / "coffee.png")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    code = docs_recipe("rank").replace("localhost:8000", rank_server.http_url) \
                              .replace("localhost:8001", rank_server.grpc_url) \
                              .replace("localhost:8002", f"{rank_server.host}:{rank_server.metrics_port}")
    proc = subprocess.run(["bash", "-ec", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert "cat.jpg" in out and "coffee.png" in out and "a rocket" in out
    answers = [json.loads(line) for line in out.splitlines() if line.startswith('{"image"')]
    assert len(answers) == 2 and all(len(a["labels"]) == 4 for a in answers)
    curl = next(json.loads(line) for line in out.splitlines() if line.startswith('{"model_name"'))
    outputs = {o["name"]: o for o in curl["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 1, 3]
    assert abs(sum(outputs["probabilities"]["data"]) - 1) < 1e-5
    assert re.search(r"clip_rank.*\d+ hits", out)
