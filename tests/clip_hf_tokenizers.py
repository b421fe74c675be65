"""Small Hugging Face tokenizer folders made locally, standing in for the ones open_clip
downloads from the Hub (no hub is reachable from the tests).

Each is trained with the ``tokenizers`` package on a short corpus and saved as a folder that
``transformers.AutoTokenizer`` loads (``tokenizer.json`` + ``tokenizer_config.json``), shaped
like the real ones:

* :func:`t5_like`: SigLIP's (``timm/ViT-B-16-SigLIP``): SentencePiece Unigram with Metaspace
  pre-tokenizing, ``</s>`` appended, pad token ``</s>`` (id 1), class ``T5Tokenizer``;
* :func:`bert_like`: CLIPA's (``bert-base-uncased``): lower-casing WordPiece,
  ``[CLS] ... [SEP]``, pad ``[PAD]`` (id 0), class ``BertTokenizer``;
* :func:`bpe_left_padded`: a byte-level BPE with ``<s> ... </s>``, class
  ``PreTrainedTokenizerFast`` (tokenizer.json taken as is), padded and truncated on the left,
  to exercise the sides.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SENTENCES = [
    "a photo of a cat", "a photo of a dog", "a blurry photo of a bee on a flower",
    "a diagram of a rocket", "a chart of the galaxy", "the quick brown fox jumps over the lazy dog",
    "an astronaut riding a horse on the moon", "a cup of coffee on a wooden table",
    "it's a close-up photo, isn't it? yes: 3.14 and 42!", "naïve café résumé straße",
    "日本語のテキスト 中文字 кошка ελληνικά", "Tom & Jerry <3 (really) [yes] {no} #tag @user",
]


def _corpus() -> list[str]:
    return SENTENCES * 20 + [s.upper() for s in SENTENCES] * 5


def _save(tokenizer: Tokenizer, folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


def t5_like(folder: Path, vocab_size: int = 300) -> Path:
    """SigLIP-style tokenizer folder (ids: <pad> 0, </s> 1, <unk> 2)."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" +", " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(_corpus(), trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return _save(tokenizer, folder, {"tokenizer_class": "T5Tokenizer", "extra_ids": 0,
                                     "pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>",
                                     "model_max_length": 64})


def bert_like(folder: Path, vocab_size: int = 300) -> Path:
    """CLIPA-style tokenizer folder ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(_corpus(), trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return _save(tokenizer, folder, {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                     "pad_token": "[PAD]", "sep_token": "[SEP]", "cls_token": "[CLS]",
                                     "unk_token": "[UNK]", "mask_token": "[MASK]"})


def bpe_left_padded(folder: Path, vocab_size: int = 400) -> Path:
    """Byte-level BPE folder (<pad> 0, <s> 1, </s> 2), padded and truncated on the left."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return _save(tokenizer, folder, {"tokenizer_class": "PreTrainedTokenizerFast",
                                     "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>",
                                     "padding_side": "left", "truncation_side": "left"})
