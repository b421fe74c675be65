"""Decoding untrusted texts for CLIP's tokenizer, with a bound on the work one text costs.

CLIP reads a text's first ``context_length`` tokens (77: start token, 75 BPE tokens, end
token) and open_clip truncates the rest, but only *after* cleaning (ftfy, HTML unescape) and
BPE-encoding the whole text, whose BPE is quadratic in a word's length: measured on this
project's host, one 16 KiB word took 17 s and a 10 MB text held the tokenizer for minutes.
serve/clip/tokenizer.py (same tokens, BPE in Rust) takes 7 ms for that word, but its
cleaning and pre-tokenizing still take 10 s for 10 MB. Cutting a text to a prefix is not
provably the same tokens (ftfy fixes a line as a whole; BPE merges within a word depend on
the whole word), so a text over ``max_bytes`` is refused, never silently changed; texts
within the bound are tokenized exactly as open_clip tokenizes them.
"""

from __future__ import annotations

from tritonlens.serve.errors import RequestError

# 75 BPE tokens of ordinary text fit with a wide margin: English reaches 75 tokens at about
# 270 characters (measured on the README); the longest token in CLIP's vocabulary is 32 bytes
# (a run of 8 emoji), so only texts of emoji runs could need more. Worst case measured at
# this bound with open_clip's tokenizer: 0.5 s (2048 random letters, one word; 2 ms with
# serve/clip/tokenizer.py); ordinary text: about 10 ms.
DEFAULT_MAX_TEXT_BYTES = 2048


def decode_text(data: bytes, max_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> str:
    """One text's UTF-8 bytes -> str, refused when longer than ``max_bytes`` bytes.

    Raises:
        RequestError: more than ``max_bytes`` bytes (checked before decoding), or not UTF-8.
    """
    if len(data) > max_bytes:
        raise RequestError(
            f"text is {len(data)} bytes, over the limit of {max_bytes} bytes (max_text_bytes); "
            "CLIP reads only its first 77 tokens (about 270 characters of English): send a "
            "shorter text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"text is not UTF-8: {err}") from None


def decode_texts(items, max_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> list[str]:
    """A request's texts (UTF-8 bytes each) -> str, each bounded as :func:`decode_text`.

    Raises:
        RequestError: naming the first refused text, "text <index> of the request: <why>".
    """
    texts = []
    for index, data in enumerate(items):
        try:
            texts.append(decode_text(bytes(data), max_bytes))
        except RequestError as err:
            raise RequestError(f"text {index} of the request: {err}") from None
    return texts
