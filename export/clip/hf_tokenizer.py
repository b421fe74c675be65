"""A CLIP model's Hugging Face tokenizer from a local folder (``--tokenizer DIR``), for export.

open_clip tokenizes the families whose model config names ``text_cfg.hf_tokenizer_name``
(SigLIP and SigLIP 2: T5 / Gemma SentencePiece vocabularies; CLIPA: BERT's WordPiece;
MetaCLIP 2 "worldwide": XLM-V, mT5) with ``HFTokenizer``, which has ``transformers``
download the tokenizer from the Hugging Face Hub. tritonlens takes it from a folder
instead (what ``AutoTokenizer.from_pretrained(name).save_pretrained(DIR)`` writes where the
Hub is reachable), lets ``transformers`` read it once at export, as open_clip would, and
writes the resulting Rust tokenizer, with truncation and padding to the context length, as
``clip_tokenize/1/tokenizer.json``: the server tokenizes with the ``tokenizers`` package
alone (serve/clip/hf_tokenizer.py) and never reaches a hub. Taking ``transformers``'
reading rather than the folder's own ``tokenizer.json`` matters: transformers 5 rebuilds the
normalizer and pre-tokenizer of model-specific classes (``T5Tokenizer``, ``BertTokenizer``
...) from the class, not from the file.

Families whose *text tower* is a ``transformers`` model (``text_cfg.hf_model_name``:
roberta, xlm-roberta, mT5, NLLB) are built by open_clip from the Hub's model config and
cannot be exported offline; :func:`prepare_hf_tokenizer` says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from tritonlens.export.core import ExportError
from tritonlens.serve.clip.hf_tokenizer import HFClipTokenizer
from tritonlens.serve.clip.names import CLEAN, CLEAN_MODES, HUGGINGFACE, STRIP_TOKEN_ID, TOKENIZER, TOKENIZER_FILE
from tritonlens.serve.parameters import TOKENIZER_READ_BY_PARAMETER, TOKENIZER_SOURCE_PARAMETER

# open_clip's defaults (open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH, model.CLIPTextCfg.vocab_size).
DEFAULT_CONTEXT_LENGTH = 77
DEFAULT_VOCAB_SIZE = 49408


def fetch_hint(hf_name: str) -> str:
    """The command that makes a tokenizer folder where the Hugging Face Hub is reachable."""
    return (f"python -c \"from transformers import AutoTokenizer; "
            f"AutoTokenizer.from_pretrained('{hf_name}').save_pretrained('DIR')\"")


@dataclass(frozen=True)
class ExportedTokenizer:
    """A Hugging Face tokenizer ready for ``clip_tokenize``.

    Attributes:
        files: version-folder files (``tokenizer.json``: the Rust tokenizer with truncation
            and padding to the context length).
        parameters: ``clip_tokenize`` config parameters (``tokenizer``, ``clean``,
            ``strip_token_id``, and where the tokenizer came from).
        tokenizer: the same tokenizer in-process (texts -> INT64 [N, L]), for the labels.
    """

    files: dict[str, bytes]
    parameters: dict[str, str]
    tokenizer: HFClipTokenizer


def prepare_hf_tokenizer(model: str, folder: str | Path | None) -> ExportedTokenizer | None:
    """The tokenizer of open_clip architecture ``model`` from ``folder``, or None for models
    on open_clip's own BPE tokenizer (and for unknown names, which the model loading refuses).

    Its settings are the model config's, as ``open_clip.get_tokenizer`` reads them:
    ``context_length``, ``tokenizer_kwargs`` ``clean`` (default ``whitespace``) and
    ``strip_sep_token``.

    Raises:
        ExportError: naming what is missing and how to supply it: the folder (for models
            with a Hugging Face tokenizer), ``transformers`` (reads the folder at export), a
            folder ``transformers`` cannot read, a tokenizer without a pad token, one larger
            than the text tower's vocabulary; a ``--tokenizer`` for a model that has none;
            the families that cannot be exported offline at all.
    """
    import open_clip

    config = open_clip.get_model_config(model)
    if config is None:
        return None
    text_cfg = config.get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name")
    if text_cfg.get("hf_model_name"):
        raise ExportError(
            f"{model}'s text tower is the Hugging Face transformers model "
            f"{text_cfg['hf_model_name']!r}: open_clip builds it from the model's config on the "
            "Hugging Face Hub, which tritonlens does not do offline (it exports open_clip's own "
            "text towers: OpenAI-style CLIP, SigLIP, SigLIP 2, CLIPA, MetaCLIP 2)")
    if not hf_name:
        if "siglip" in model.lower():  # open_clip's SigLipTokenizer downloads a SentencePiece file
            raise ExportError(f"{model} names no hf_tokenizer_name: open_clip would download a "
                              "SentencePiece vocabulary from storage.googleapis.com; not supported")
        if folder is not None:
            raise ExportError(f"--tokenizer: {model} uses open_clip's own BPE tokenizer, not a "
                              "Hugging Face one; leave --tokenizer out")
        return None
    if folder is None:
        raise ExportError(
            f"{model} tokenizes with the Hugging Face tokenizer {hf_name!r}, which open_clip "
            "downloads from the Hugging Face Hub. Give its files as --tokenizer DIR (tritonlens "
            f"copies them into the model repository); make DIR where the Hub is reachable with: "
            f"{fetch_hint(hf_name)}")
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    clean, strip_sep = kwargs.pop("clean", "whitespace"), kwargs.pop("strip_sep_token", False)
    if kwargs or text_cfg.get("tokenizer_mode") or clean not in CLEAN_MODES:
        raise ExportError(f"{model}: tokenizer settings {kwargs or text_cfg.get('tokenizer_mode') or clean!r} "
                          "are not supported by tritonlens' served tokenizer")
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"--tokenizer {folder}: no such folder (it holds {hf_name}'s "
                          f"tokenizer.json and tokenizer_config.json; make it with: {fetch_hint(hf_name)})")
    try:
        import transformers
    except ModuleNotFoundError:
        raise ExportError(f"{model}'s tokenizer is read, as open_clip reads it, by the transformers "
                          "package, needed at export only: pip install transformers "
                          "(the server tokenizes with the tokenizers package)") from None
    try:
        auto = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError... per file kind
        raise ExportError(f"--tokenizer {folder}: transformers could not read a tokenizer there "
                          f"({type(err).__name__}: {err}); it needs tokenizer.json (or the "
                          f"vocabulary files) and tokenizer_config.json of {hf_name}") from None
    backend = getattr(auto, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"--tokenizer {folder}: {type(auto).__name__} is not backed by the "
                          "tokenizers package (no tokenizer.json); save it with a fast tokenizer")
    if auto.pad_token_id is None:
        raise ExportError(f"--tokenizer {folder}: no pad token; open_clip pads every text to the "
                          "context length: set \"pad_token\" in tokenizer_config.json")
    if strip_sep and auto.sep_token_id is None:
        raise ExportError(f"--tokenizer {folder}: {model} strips the separator token, and this "
                          "tokenizer has none (\"sep_token\" in tokenizer_config.json)")
    if auto.split_special_tokens:
        raise ExportError(f"--tokenizer {folder}: split_special_tokens=True is not supported")
    vocab_size = int(text_cfg.get("vocab_size", DEFAULT_VOCAB_SIZE))
    if len(auto) > vocab_size:
        raise ExportError(f"--tokenizer {folder}: {len(auto)} tokens, but {model}'s text tower "
                          f"embeds {vocab_size}: not this model's tokenizer ({hf_name})")
    context_length = int(text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH))
    served = Tokenizer.from_str(backend.to_str())  # a copy: transformers' object stays as read
    served.enable_truncation(max_length=context_length, stride=0, strategy="longest_first",
                             direction=auto.truncation_side)
    served.enable_padding(direction=auto.padding_side, pad_id=auto.pad_token_id,
                          pad_type_id=auto.pad_token_type_id, pad_token=auto.pad_token,
                          length=context_length)
    parameters = {TOKENIZER: HUGGINGFACE, CLEAN: clean,
                  TOKENIZER_SOURCE_PARAMETER: f"{hf_name} from {folder.resolve()}",
                  TOKENIZER_READ_BY_PARAMETER: f"transformers {transformers.__version__} "
                                                  f"{type(auto).__name__}"}
    if strip_sep:
        parameters[STRIP_TOKEN_ID] = str(auto.sep_token_id)
    files = {TOKENIZER_FILE: served.to_str().encode("utf-8")}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / TOKENIZER_FILE).write_bytes(files[TOKENIZER_FILE])
        tokenizer = HFClipTokenizer(Path(tmp) / TOKENIZER_FILE, clean,
                                    auto.sep_token_id if strip_sep else None)
    return ExportedTokenizer(files, parameters, tokenizer)
