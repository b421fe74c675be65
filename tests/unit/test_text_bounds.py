"""serve/texts.decode_text: a bound on one text's bytes, refused before any tokenizing, and
exact parity with open_clip's tokenizer for every text within the bound."""

from __future__ import annotations

import time

import numpy as np
import open_clip
import pytest

from tritonlens.serve.errors import RequestError
from tritonlens.serve.clip.tokenizer import ClipTokenizer, tokenizer_for
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES, decode_text, decode_texts


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-S-32")


def test_ten_megabyte_text_is_refused_at_once():
    """10 MB held open_clip's tokenizer for 14 s in-process (114 s seen through the server);
    it is refused by its length, before UTF-8 decoding (the invalid byte at the end is not
    what the error names)."""
    data = ("a photo of a cat " * 700_000).encode()[:10_000_000 - 1] + b"\xff"
    with pytest.raises(RequestError, match="10000000 bytes, over the limit of 2048 bytes"):
        decode_text(data)


def test_bound_is_in_bytes_not_characters():
    at_bound = "é" * (DEFAULT_MAX_TEXT_BYTES // 2)  # 2 bytes each in UTF-8
    assert decode_text(at_bound.encode()) == at_bound
    with pytest.raises(RequestError, match="over the limit"):
        decode_text((at_bound + "a").encode())


def test_not_utf8():
    with pytest.raises(RequestError, match="not UTF-8"):
        decode_text(b"caf\xe9")


@pytest.mark.parametrize("text", [
    "a photo of a cat",
    "  Messy   &amp; HTML&lt;3   text\twith\nwhitespace  ",
    "a photo of a " + "very " * 400,  # 2013 bytes: truncated to 77 tokens by open_clip
    "😂" * (DEFAULT_MAX_TEXT_BYTES // 4),  # emoji runs: the longest tokens in the vocabulary
    "Ünïcödé 中文字 кошка " * 60,
])
def test_within_the_bound_tokens_equal_open_clip(tokenizer, text):
    data = text.encode()[:DEFAULT_MAX_TEXT_BYTES]
    text = data.decode("utf-8", errors="ignore")
    ours = tokenizer([decode_text(text.encode())]).numpy()
    np.testing.assert_array_equal(ours, tokenizer([text]).numpy())


def test_worst_case_text_at_the_bound(tokenizer):
    """One 2048-letter word (quadratic BPE) is the slowest text the bound admits: the served
    tokenizer gives open_clip's tokens for it; both times are printed (``pytest -s``), a
    figure, not a pass/fail bound (0.5 s for open_clip on a quiet 2-core host)."""
    rng = np.random.default_rng(0)
    word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), DEFAULT_MAX_TEXT_BYTES))
    text = decode_text(word.encode())
    start = time.perf_counter()
    expected = tokenizer([text]).numpy()
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = ClipTokenizer()([text])
    served_s = time.perf_counter() - start
    np.testing.assert_array_equal(ours, expected)
    print(f"2048-letter word: open_clip {reference_s * 1e3:.0f} ms, served tokenizer "
          f"{served_s * 1e3:.0f} ms")


def test_a_request_of_texts_names_the_refused_one(tokenizer):
    texts = ["a photo of a cat", "Grüße, 東京", "x" * 10]
    decoded = decode_texts([t.encode() for t in texts])
    assert decoded == texts
    # clip_tokenize's tokenizer for ViT-S-32 is the torch-free one, with open_clip's tokens.
    tokenize = tokenizer_for("ViT-S-32", 77)
    assert isinstance(tokenize, ClipTokenizer)
    np.testing.assert_array_equal(tokenize(decoded), tokenizer(decoded).numpy())
    with pytest.raises(RequestError, match="text 1 of the request: text is not UTF-8"):
        decode_texts([b"fine", b"\xff\xfe", b"x" * 5000])
    with pytest.raises(RequestError, match="text 2 of the request: text is 5000 bytes"):
        decode_texts([b"fine", b"ok", b"x" * 5000])
