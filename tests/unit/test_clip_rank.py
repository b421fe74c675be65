"""serve/clip/rank.py without a server: the request checks (each refusal names its problem),
the prompts, and open_clip's zero-shot recipe against open_clip in-process; the client's
label parsing and top-k; the launcher's response-cache flag; the export's clip_rank config."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from tests.helpers import CLIP_TEST_MODEL, command
from tritonlens.client.base import TritonLensError
from tritonlens.client.clip.rank import parse_labels, read_labels_file, top_labels
from tritonlens.export.clip.rank import write_rank_model
from tritonlens.export.config import parse_config
from tritonlens.launcher import TritonServer
from tritonlens.serve.clip.rank import (RankLimits, TextEmbeddingCache, build_prompts, candidate_embeddings,
                                        check_template, parse_request, query_rows, rank_scores,
                                        ranking)
from tritonlens.serve.errors import RequestError
from tritonlens.launcher.server import DEFAULT_RESPONSE_CACHE_BYTES
from tritonlens.serve.model_config import read_model_config

LIMITS = RankLimits(max_images=4, max_candidates=5, max_templates=3, max_prompts=8,
                    max_text_bytes=64)


def texts(*items: str | bytes) -> np.ndarray:
    return np.array([i if isinstance(i, bytes) else i.encode() for i in items], dtype=np.object_)


IMAGES = texts("<jpeg bytes>", "<png bytes>")


def test_a_good_request_gives_candidate_major_prompts():
    request = parse_request(IMAGES, texts("a bee", "a chart"),
                            texts("a photo of {}.", "{}, drawn"), LIMITS)
    assert request.images == [b"<jpeg bytes>", b"<png bytes>"]
    assert request.candidates == ["a bee", "a chart"]
    assert request.prompts == ["a photo of a bee.", "a bee, drawn", "a photo of a chart.",
                               "a chart, drawn"]
    assert request.templates == ("a photo of {}.", "{}, drawn")
    plain = parse_request(IMAGES, texts("a bee", "a chart"), None, LIMITS)
    assert plain.prompts == ["a bee", "a chart"] and plain.templates == ()


@pytest.mark.parametrize("images, candidates, templates, phrase", [
    (texts(), texts("a"), None, "no images"),
    (None, texts("a"), None, "no images"),
    (texts(*["x"] * 5), texts("a"), None, "5 images, over the limit of 4 per request (max_images)"),
    (IMAGES, texts(), None, "empty candidate list"),
    (IMAGES, None, None, "empty candidate list"),
    (IMAGES, texts(*"abcdef"), None, "6 candidate texts, over the limit of 5 per request (max_candidates)"),
    (IMAGES, texts("a", "  "), None, "candidate 1 is empty"),
    (IMAGES, texts("a", "b" * 65), None, "candidate 1: text is 65 bytes, over the limit of 64 bytes"),
    (IMAGES, texts("a", b"caf\xe9"), None, "candidate 1: text is not UTF-8"),
    (IMAGES, texts("a"), texts(), "input 'templates' is empty"),
    (IMAGES, texts("a"), texts("{}", "{}", "{}", "{}"), "4 templates, over the limit of 3"),
    (IMAGES, texts("a"), texts("a photo"), "template 0 'a photo' has no '{}'"),
    (IMAGES, texts("a"), texts("{} {name}"), "template 0 '{} {name}' is not a one-field format"),
    (IMAGES, texts("a"), texts("{} {"), "is not a one-field format"),
    (IMAGES, texts(*"abc"), texts("{}", "{}!", "{}?"), "3 candidates x 3 templates = 9 prompts, over the limit of 8"),
    (IMAGES, texts("b" * 60), texts("a photo of {}"), "prompt 0 (candidate 0 in template 0): text is 71 bytes"),
])
def test_bad_requests_are_refused_naming_the_problem(images, candidates, templates, phrase):
    with pytest.raises(RequestError) as info:
        parse_request(images, candidates, templates, LIMITS)
    assert phrase in str(info.value)


def test_queries_are_rows_of_matching_inputs():
    rows = query_rows(IMAGES.reshape(1, 2), texts("a", "b", "c").reshape(1, 3), None)
    assert len(rows) == 1 and rows[0][0].tolist() == IMAGES.tolist() and rows[0][2] is None
    two = query_rows(np.stack([IMAGES, IMAGES]), np.stack([texts("a"), texts("b")]),
                     np.stack([texts("{}"), texts("{}!")]))
    assert [row[1].tolist() for row in two] == [[b"a"], [b"b"]]
    assert [row[2].tolist() for row in two] == [[b"{}"], [b"{}!"]]


def test_literal_braces_in_templates():
    check_template("{{a}} {}")
    assert build_prompts(["cat"], ["{{x}} {}"]) == ["{x} cat"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(7)
    model = open_clip.create_model(CLIP_TEST_MODEL, pretrained=None)
    return model.eval(), open_clip.get_tokenizer(CLIP_TEST_MODEL)


def test_candidates_and_scores_equal_open_clip_zero_shot(clip):
    """build_zero_shot_classifier + softmax(logit_scale * image @ classifier), in-process,
    against the module's functions on the same model's prompt and image embeddings."""
    model, tokenizer = clip
    candidates = ["a bee", "a flower", "a chart", "a diagram"]
    templates = ["a photo of {}.", "a drawing of {}.", "{}"]
    with torch.no_grad():
        expected_classifier = open_clip.build_zero_shot_classifier(
            model, tokenizer, candidates, templates, num_classes_per_batch=2, device="cpu")
        prompts = build_prompts(candidates, templates)
        prompt_embeddings = model.encode_text(tokenizer(prompts), normalize=True).numpy()
        images = model.encode_image(torch.rand(3, 3, 224, 224), normalize=True)
        scale = model.logit_scale.exp().item()
        expected = (scale * images @ expected_classifier).softmax(dim=-1).numpy()
    ours = candidate_embeddings(prompt_embeddings, len(candidates))
    np.testing.assert_allclose(ours, expected_classifier.T.numpy(), atol=1e-6)
    probabilities = rank_scores(images.numpy(), ours, scale)
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    assert (ranking(probabilities) == np.argsort(-expected, axis=1)).all()


def test_sigmoid_scores_with_a_logit_bias():
    """SigLIP-style models: independent sigmoid(scale * cosine + bias), as ZeroShotHead."""
    image = np.array([[1.0, 0.0]], np.float32)
    candidates = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    scores = rank_scores(image, candidates, 10.0, -5.0)
    np.testing.assert_allclose(scores, [[1 / (1 + np.exp(-5)), 1 / (1 + np.exp(5))]], rtol=1e-6)


def test_ranking_keeps_the_request_order_for_ties():
    assert ranking(np.array([[0.2, 0.4, 0.2, 0.2]], np.float32)).tolist() == [[1, 0, 2, 3]]


def test_labels_from_the_command_line_and_files(tmp_path):
    assert parse_labels(" a bee, a flower ,a chart") == ["a bee", "a flower", "a chart"]
    for bad, phrase in (("", "no labels"), ("a,,b", "label 2 is empty"),
                        ("a,b,a", "label 'a' is given twice")):
        with pytest.raises(TritonLensError, match=phrase):
            parse_labels(bad)
    path = tmp_path / "labels.txt"
    path.write_text("a bee\n\n a chart \n", encoding="utf-8")
    assert read_labels_file(path) == ["a bee", "a chart"]
    with pytest.raises(TritonLensError, match="--labels-file .*missing"):
        read_labels_file(tmp_path / "missing")


def test_top_labels_best_first():
    best = top_labels(np.array([0.1, 0.6, 0.3], np.float32), ["a", "b", "c"], 2)
    assert [(l.label, l.index) for l in best] == [("b", 1), ("c", 2)]
    assert best[0].score == pytest.approx(0.6)


def test_launcher_sizes_the_response_cache(tmp_path):
    assert DEFAULT_RESPONSE_CACHE_BYTES == 0  # off unless asked: Triton 2.51 caches error responses
    assert not any("cache-config" in a for a in command(TritonServer(tmp_path)))
    assert "--cache-config=local,size=1048576" in command(TritonServer(tmp_path, response_cache_bytes=1 << 20))
    own = command(TritonServer(tmp_path, response_cache_bytes=1 << 20,
                               extra_args=["--cache-config", "local,size=1000"]))
    assert [a for a in own if "cache-config" in a] == ["--cache-config=local,size=1000"]
    with pytest.raises(ValueError, match="response_cache_bytes"):
        TritonServer(tmp_path, response_cache_bytes=-1)


def test_text_cache_keeps_what_fits_and_evicts_the_least_recently_used():
    one = np.arange(4, dtype=np.float32)
    size = TextEmbeddingCache.entry_bytes("a cat", one)
    cache = TextEmbeddingCache(max_bytes=2 * size)
    assert cache.get("a cat") is None and cache.misses == 1
    cache.put("a cat", one)
    cache.put("a dog", one + 1)
    np.testing.assert_array_equal(cache.get("a cat"), one)  # now the most recently used
    cache.put("a cow", one + 2)  # over the bound: "a dog" goes
    assert cache.get("a dog") is None and len(cache) == 2 and cache.evictions == 1
    np.testing.assert_array_equal(cache.get("a cow"), one + 2)
    assert (cache.hits, cache.misses) == (2, 2) and cache.size_bytes == 2 * size
    one[:] = 9  # the cache holds a copy
    assert cache.get("a cat")[0] == 0
    cache.put("x" * 10_000, one)  # larger than the whole cache: not kept, nothing evicted
    assert len(cache) == 2 and cache.evictions == 1
    assert len(TextEmbeddingCache(max_bytes=0)) == 0
    with pytest.raises(ValueError, match="0 \\(off\\) or more"):
        TextEmbeddingCache(max_bytes=-1)


def test_export_writes_a_config_the_model_reads(tmp_path):
    """clip_rank's config parses with Triton's schema and gives the model its limits."""
    import json

    from google.protobuf import json_format

    folder = write_rank_model(tmp_path, "clip", max_queries=8, image_batch=8, text_batch=16,
                              encoder_output="embedding", logit_scale=100.0, logit_bias=None,
                              parameters={"tritonlens.family": "clip", "intra_op_thread_count": "2"})
    config = parse_config(folder / "config.pbtxt")
    assert config.max_batch_size == 8 and config.instance_group[0].count == 1
    assert config.HasField("dynamic_batching")
    assert [i.name for i in config.input] == ["image", "text", "templates"]
    assert all(i.allow_ragged_batch for i in config.input) and config.input[2].optional
    assert "intra_op_thread_count" not in config.parameters
    spec = read_model_config(json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)))
    assert RankLimits.from_spec(spec).max_images == 8
    assert spec.number("logit_scale") == 100.0 and "logit_bias" not in spec.parameters
    assert (folder / "1" / "model.py").read_bytes().startswith(b'"""clip_rank')


def test_status_reads_the_text_cache_from_triton_metrics():
    from tritonlens.client.cache_status import describe_text_cache, text_cache_counts

    metrics = ('tritonlens_text_cache_lookups_total{model="clip_rank",outcome="hit"} 120\n'
               'tritonlens_text_cache_lookups_total{model="clip_rank",outcome="miss"} 27\n'
               'tritonlens_text_cache_lookups_total{model="other_rank",outcome="hit"} 5\n'
               'tritonlens_text_cache_bytes{model="clip_rank"} 2097152\n')
    assert text_cache_counts(metrics, "clip_rank") == {"hits": 120, "misses": 27, "bytes": 2097152}
    assert describe_text_cache(metrics, "clip_rank") == "text: 120 hits, 27 misses, 2.0 MiB"
    assert text_cache_counts(metrics, "absent") is None
    assert describe_text_cache("", "clip_rank") == "text cache (metrics not readable)"
