"""serve/clip/tokenizer: token for token equal to ``open_clip.get_tokenizer`` (in-process),
without importing torch.

The corpus covers what the cleaning, the pre-tokenizer and the BPE each handle: ASCII,
punctuation, numbers, contractions, emoji (ZWJ sequences, flags, skin tones), accents
(composed and decomposed), CJK and other scripts, HTML entities (double-escaped too),
mojibake that ftfy fixes, whitespace runs, empty text, the special tokens spelled out,
texts at the 2048-byte bound of serve/texts.py, texts truncated to the context length (end
token kept last), and a seeded random corpus of mixed code points.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import open_clip
import pytest

from tests.helpers import CORPUS, random_texts
from tritonlens.serve.clip.tokenizer import ClipTokenizer, uses_simple_tokenizer


@pytest.fixture(scope="module")
def reference():
    return open_clip.get_tokenizer("ViT-S-32")


@pytest.fixture(scope="module")
def ours():
    return ClipTokenizer(77)


def test_corpus_token_for_token(reference, ours):
    expected = reference(CORPUS).numpy()
    served = ours(CORPUS)
    assert served.dtype == np.int64 and served.shape == (len(CORPUS), 77)
    for text, row, want in zip(CORPUS, served, expected):
        assert row.tolist() == want.tolist(), f"differs on {text[:60]!r}"


def test_random_corpus_token_for_token(reference, ours):
    texts = random_texts(400)
    np.testing.assert_array_equal(ours(texts), reference(texts).numpy())


def test_truncation_keeps_end_token_last(reference, ours):
    """Texts around the cut: 74 to 78 BPE tokens (one token per digit)."""
    texts = [" ".join("7" * n) for n in range(73, 80)]
    served = ours(texts)
    np.testing.assert_array_equal(served, reference(texts).numpy())
    assert (served[-1, -1] == ours.eot_token_id) and (served[-1] != 0).all()


@pytest.mark.parametrize("context_length", [8, 32])
def test_other_context_lengths(context_length):
    reference = open_clip.get_tokenizer("ViT-S-32", context_length=context_length)
    texts = CORPUS[:20]
    np.testing.assert_array_equal(ClipTokenizer(context_length)(texts), reference(texts).numpy())


def test_which_models_use_simple_tokenizer():
    """The test model and the default use SimpleTokenizer; models whose open_clip config
    names another tokenizer keep open_clip's (checked against open_clip's own choice)."""
    for name in ["ViT-S-32", "ViT-B-32", "ViT-L-14", "RN50"]:
        assert uses_simple_tokenizer(name)
        assert type(open_clip.get_tokenizer(name)) is open_clip.SimpleTokenizer
    assert not uses_simple_tokenizer("ViT-B-16-SigLIP")      # SigLipTokenizer
    assert not uses_simple_tokenizer("ViT-SO400M-14-SigLIP")
    assert not uses_simple_tokenizer("roberta-ViT-B-32")     # HFTokenizer
    assert not uses_simple_tokenizer("hf-hub:timm/ViT-B-16-SigLIP")
    assert not uses_simple_tokenizer("no-such-model")


def test_does_not_import_torch(reference):
    """The point of this module: the tokenizer stub stays free of torch (~1 GB)."""
    code = ("import sys\n"
            "from tritonlens.serve.clip.tokenizer import ClipTokenizer\n"
            "ids = ClipTokenizer(77)(['A photo of a cat.'])\n"
            "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules\n"
            "print(' '.join(map(str, ids[0])))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert [int(i) for i in out.split()] == reference(["A photo of a cat."])[0].tolist()
