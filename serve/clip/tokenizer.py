"""CLIP's tokenizer without torch: open_clip's ``SimpleTokenizer``, token for token.

open_clip's tokenizer module imports torch (its ``__call__`` returns a torch tensor), so a
Triton stub that tokenizes through it holds all of torch (about 1 GB PSS measured on this
project's host) to run a string algorithm. This module reproduces ``SimpleTokenizer`` (the
tokenizer of OpenAI-style CLIP models, the original ``openai/CLIP`` one) from the same
parts, without torch:

1. cleaning, in Python, as open_clip's ``_clean_lower``: ``ftfy.fix_text``, ``html.unescape``
   twice, whitespace runs -> one space, strip, ``str.lower``;
2. pre-tokenizing with open_clip's own pattern through the same ``regex`` module (words of
   letters, single digits, runs of other non-space characters, English contractions, and
   the two special tokens, which a text may spell out and then gets their ids);
3. byte-level BPE with ``</w>`` word ends, in Hugging Face ``tokenizers`` (Rust), with the
   vocabulary and merges built exactly as ``SimpleTokenizer`` builds them from open_clip's
   own ``bpe_simple_vocab_16e6.txt.gz`` (read from the installed package, not copied);
4. ``<start_of_text>`` + tokens + ``<end_of_text>``, cut to ``context_length`` with the
   end-of-text token kept last, zero padding.

Models whose open_clip config names another tokenizer (``hf_tokenizer_name``, SigLIP's, or
``tokenizer_kwargs`` such as ``clean="canonicalize"``) are not covered:
:func:`uses_simple_tokenizer` says which models are, and the caller keeps open_clip's
tokenizer for the rest. tests/unit/test_clip_tokenizer.py checks parity against
``open_clip.get_tokenizer``.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
from pathlib import Path

import ftfy
import numpy as np
import regex
from tokenizers import Tokenizer, models, pre_tokenizers

# open_clip's DEFAULT_CONTEXT_LENGTH: 77 tokens for OpenAI-style CLIP text towers.
DEFAULT_CONTEXT_LENGTH = 77
SOT, EOT = "<start_of_text>", "<end_of_text>"
# SimpleTokenizer reads merges[1 : 49152 - 256 - 2 + 1] of the BPE file: 48894 merges, so
# that 256 bytes + 256 bytes</w> + merges + 2 special tokens = 49408 = the text towers'
# vocab_size.
_N_MERGES = 49152 - 256 - 2


def open_clip_dir() -> Path:
    """The installed ``open_clip`` package's folder, found without importing it (and torch).

    Raises:
        ModuleNotFoundError: open_clip is not installed.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip (open_clip_torch) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def uses_simple_tokenizer(model_name: str) -> bool:
    """Whether ``open_clip.get_tokenizer(model_name)`` is a plain ``SimpleTokenizer``.

    True for a built-in open_clip architecture (a ``model_configs/<name>.json`` of the
    installed package) whose ``text_cfg`` names no ``hf_tokenizer_name`` and no
    ``tokenizer_kwargs``, and which is not a SigLIP model: the rules of
    ``open_clip.factory.get_tokenizer``. False for everything else (``hf-hub:`` /
    ``local-dir:`` names, unknown names), which then keep open_clip's tokenizer.
    """
    if ":" in model_name or "siglip" in model_name.lower():
        return False
    config_path = open_clip_dir() / "model_configs" / f"{model_name}.json"
    if not config_path.is_file():
        return False
    text_cfg = json.loads(config_path.read_text(encoding="utf-8")).get("text_cfg", {})
    return not text_cfg.get("hf_tokenizer_name") and not text_cfg.get("tokenizer_kwargs")


def clean(text: str) -> str:
    """open_clip's ``_clean_lower``: ftfy, HTML unescape twice, whitespace runs, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """Texts -> CLIP token ids, as ``open_clip``'s ``SimpleTokenizer(context_length)`` does.

    Args:
        context_length: tokens per text, L (77 for OpenAI-style CLIP).
        bpe_path: the BPE merges file; default: open_clip's ``bpe_simple_vocab_16e6.txt.gz``.

    Attributes:
        sot_token_id, eot_token_id: 49406, 49407 with the default vocabulary.
    """

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH, bpe_path: str | Path | None = None):
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (start and end token), got {context_length}")
        self.context_length = context_length
        bpe_path = bpe_path or open_clip_dir() / "bpe_simple_vocab_16e6.txt.gz"
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1:_N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        # The vocabulary in SimpleTokenizer's order: the 256 byte symbols (GPT-2's byte ->
        # unicode table, which pre_tokenizers.ByteLevel uses too) in bytes_to_unicode's order,
        # which is code point order (printable bytes as themselves, the rest as chr(256 + n)),
        # the same with </w>, one token per merge, the special tokens.
        byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)
        vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
        vocab += [SOT, EOT]
        self._ids = {token: index for index, token in enumerate(vocab)}
        self.sot_token_id, self.eot_token_id = self._ids[SOT], self._ids[EOT]
        self._bpe = Tokenizer(models.BPE(self._ids, merges, end_of_word_suffix="</w>"))
        # Each pre-token is one word: bytes -> GPT-2's byte symbols, no splitting of its own.
        self._bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        # open_clip's pattern, flags included (special tokens first).
        self._pattern = regex.compile(
            f"{SOT}|{EOT}" + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)

    def encode(self, text: str) -> list[int]:
        """One text's BPE token ids, without start/end tokens and without truncation."""
        ids: list[int] = []
        words: list[str] = []
        for word in self._pattern.findall(clean(text)):
            if word in (SOT, EOT):   # spelled out in the text: open_clip gives its id
                ids += self._bpe_ids(words)
                words = []
                ids.append(self._ids[word])
            else:
                words.append(word)
        return ids + self._bpe_ids(words)

    def _bpe_ids(self, words: list[str]) -> list[int]:
        if not words:
            return []
        return self._bpe.encode(words, is_pretokenized=True, add_special_tokens=False).ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Texts -> token ids, INT64 [N, context_length].

        Each row: start token, BPE tokens, end token, zeros; a text of more than
        ``context_length - 2`` tokens is cut to ``context_length`` with the end token last.
        """
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(tokens) > self.context_length:
                tokens = tokens[:self.context_length]
                tokens[-1] = self.eot_token_id
            result[row, :len(tokens)] = tokens
        return result



def tokenizer_for(model_name: str, context_length: int):
    """What ``clip_tokenize`` tokenizes with: texts -> INT64 numpy [N, context_length].

    :class:`ClipTokenizer` (no torch) for models on open_clip's SimpleTokenizer
    (:func:`uses_simple_tokenizer`); open_clip's own ``get_tokenizer`` otherwise (imports
    torch, Hugging Face / SigLIP tokenizers).
    """
    if uses_simple_tokenizer(model_name):
        return ClipTokenizer(context_length)
    import open_clip

    tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
    return lambda texts: tokenizer(texts).numpy().astype(np.int64)
