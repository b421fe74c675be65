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

from tritonlens.serve.clip.tokenizer import ClipTokenizer, uses_simple_tokenizer
from tritonlens.serve.texts import DEFAULT_MAX_TEXT_BYTES

BOUND = DEFAULT_MAX_TEXT_BYTES


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Texts of random code points from mixed ranges (ASCII, Latin-1, combining marks,
    Cyrillic, CJK, Hangul, emoji, spaces, controls), 0 to 60 characters."""
    rng = np.random.default_rng(seed)
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0xFF), (0x300, 0x36F), (0x400, 0x4FF),
              (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F), (0x2000, 0x206F),
              (0x30, 0x39), (0xFF01, 0xFF5E)]
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.integers(0, 60)):
            low, high = ranges[rng.integers(len(ranges))]
            chars.append(chr(int(rng.integers(low, high + 1))))
        texts.append("".join(chars))
    return texts


def at_bound(unit: str) -> str:
    """``unit`` repeated to exactly BOUND bytes of UTF-8 (cut at a character edge)."""
    data = (unit * (BOUND // len(unit.encode()) + 1)).encode()[:BOUND]
    return data.decode("utf-8", errors="ignore")


CORPUS = [
    "", " ", "\t\n \u3000\u00a0 ", "a", "A photo of a CAT.", "a photo of a cat",
    "Hello, world!!! (really?) [yes] {no} <b>bold</b> #tag @user ~/path_to/file.txt",
    "it's IT'S we'll they'd I'm you're we've don't CAN'T",
    "3.14159 2024-01-01 1,000,000 $5 50% 0x1F 42nd ½ ² ٣ 七",
    "😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ☕ 🏳️‍🌈 😂😂😂😂😂😂😂😂😂",
    "naïve café résumé Ångström Ünïcödé São Paulo Œuvre straße ß İstanbul ΣΑΣ ǅ",
    "cafe\u0301 nai\u0308ve",  # decomposed accents
    "日本語のテキスト 中文字 한국어 텍스트 ไทย العربية हिन्दी кошка ελληνικά",
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &amp;amp; &nbsp;x &eacute;",
    "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",  # ftfy fixes this mojibake
    "Ã©tÃ© Ã  la plage",
    "spaces    and\ttabs\n\nand\r\nnewlines   ",
    "<start_of_text> <END_OF_TEXT> a<end_of_text>b",
    "\x00\x01 control \x7f chars \u200b zero width \ufeff",
    "https://example.com/a?b=c&d=e#frag user@example.com",
    "a photo of a " + "very " * 400,
    "x " * 200,
    "supercalifragilisticexpialidocious" * 20,
    at_bound("a photo of a cat, "), at_bound("é"), at_bound("😂"), at_bound("中"),
    at_bound("abcdefghijklmnopqrstuvwxyz"), at_bound("&amp; "), at_bound("1"),
]


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
