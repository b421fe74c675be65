"""Hugging Face tokenizers of CLIP text towers (SigLIP, SigLIP 2, CLIPA, MetaCLIP 2
"worldwide"), served without torch and without ``transformers``.

open_clip tokenizes these models with its ``HFTokenizer`` (``open_clip/tokenizer.py``):
``transformers.AutoTokenizer.from_pretrained(hf_tokenizer_name)``, then for each batch

1. cleaning, in Python (``clean`` of the model config's ``tokenizer_kwargs``): ftfy,
   ``html.unescape`` twice, strip (``basic_clean``), then ``whitespace`` (runs of
   whitespace -> one space, HFTokenizer's default), ``lower`` (the same, lower-cased) or
   ``canonicalize`` (SigLIP's: ``_`` -> space, ASCII punctuation removed, lower-cased,
   whitespace runs -> one space; big_vision's ``canonicalize_text``);
2. ``tokenizer(texts, max_length=L, padding="max_length", truncation=True)``: the Rust
   ``tokenizers`` pipeline with the special tokens of its post-processor (SigLIP: ``</s>``
   last), truncated to ``L`` (longest-first, on the tokenizer's truncation side, special
   tokens kept) and padded to ``L`` with the tokenizer's pad token on its padding side;
3. with ``strip_sep_token`` (CLIPA), the separator token's id replaced by 0.

The exporter (``tritonlens.export.clip.hf_tokenizer``) lets ``transformers`` read the
user's tokenizer folder once, as open_clip does, and writes the resulting Rust tokenizer
(``AutoTokenizer(...).backend_tokenizer``, with steps 2's truncation and padding set) as
``tokenizer.json`` into ``clip_tokenize``'s version folder; this module loads that file
with the ``tokenizers`` package and adds steps 1 and 3. tests/unit/test_clip_hf_tokenizer.py
checks parity with open_clip's ``HFTokenizer`` over the same folder.
"""

from __future__ import annotations

import html
import string
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Tokenizer

from tritonlens.serve.clip.names import CLEAN, CLEAN_MODES, STRIP_TOKEN_ID, TOKENIZER_FILE

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, mode: str) -> str:
    """open_clip's cleaning ``mode`` (``_clean_whitespace``, ``_clean_lower``,
    ``_clean_canonicalize``) of one text.

    Raises:
        ValueError: ``mode`` is not one of CLEAN_MODES.
    """
    if mode not in CLEAN_MODES:
        raise ValueError(f"clean must be one of {', '.join(CLEAN_MODES)}, not {mode!r}")
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()  # basic_clean
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_NO_PUNCTUATION).lower()
    text = " ".join(text.split()).strip()
    return text.lower() if mode == "lower" else text


class HFClipTokenizer:
    """Texts -> token ids as open_clip's ``HFTokenizer`` gives them, from the exported
    ``tokenizer.json`` (truncation and padding to the context length are in the file).

    Args:
        tokenizer_file: the ``tokenizer.json`` written by the exporter.
        clean: one of CLEAN_MODES.
        strip_token_id: the separator id that ``strip_sep_token`` replaces by 0, or None.

    Attributes:
        context_length: L, the length every row is padded or truncated to.

    Raises:
        ValueError: the file has no padding to a fixed length (not written by the exporter)
            or ``clean`` is unknown.
    """

    def __init__(self, tokenizer_file: str | Path, clean: str, strip_token_id: int | None = None):
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        padding = self._tokenizer.padding
        if not padding or not padding.get("length"):
            raise ValueError(f"{tokenizer_file}: no padding to a fixed length (export it with "
                             "tritonlens export clip --tokenizer)")
        clean_text("", clean)  # refuse an unknown mode now, not on the first request
        self.context_length = int(padding["length"])
        self.clean = clean
        self.strip_token_id = strip_token_id

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Texts -> INT64 [N, context_length]: special tokens, truncation and padding as the
        tokenizer's post-processor and the exported settings give them."""
        encodings = self._tokenizer.encode_batch([clean_text(t, self.clean) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)
        if self.strip_token_id is not None:
            ids[ids == self.strip_token_id] = 0
        return ids


def hf_tokenizer_from_config(parameters: dict[str, str], version_dir: str | Path) -> HFClipTokenizer:
    """The tokenizer a ``clip_tokenize`` config with ``tokenizer: huggingface`` describes:
    ``<version_dir>/tokenizer.json`` with the ``clean`` and ``strip_token_id`` parameters."""
    strip = parameters.get(STRIP_TOKEN_ID)
    return HFClipTokenizer(Path(version_dir) / TOKENIZER_FILE, parameters.get(CLEAN, "whitespace"),
                           None if strip in (None, "") else int(strip))
