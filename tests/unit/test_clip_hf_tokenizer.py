"""Hugging Face tokenizers (SigLIP, CLIPA, MetaCLIP 2) from a local folder: the tokenizer
``tritonlens export clip --tokenizer DIR`` writes and ``clip_tokenize`` serves
(serve/clip/hf_tokenizer.py, no torch, no transformers) gives token for token what
open_clip's ``HFTokenizer`` gives over the same folder, with each model config's context
length and ``tokenizer_kwargs`` (``open_clip.get_tokenizer``'s construction, the Hub name
replaced by the folder). Folders are trained locally (tests/helpers.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import open_clip
import pytest
from open_clip.tokenizer import HFTokenizer

from tests.helpers import TEXTS, bert_like, bpe_left_padded, t5_like
from tritonlens.export.clip.hf_tokenizer import prepare_hf_tokenizer
from tritonlens.export.core import ExportError
from tritonlens.serve.clip.hf_tokenizer import clean_text
from tritonlens.serve.clip.names import CLEAN_MODES

pytest.importorskip("transformers")  # open_clip's HFTokenizer, the reference, needs it

# model -> the tokenizer folder shaped like its Hub tokenizer
FAMILIES = {
    "ViT-B-16-SigLIP": t5_like,       # canonicalize, 64 tokens
    "ViT-L-14-CLIPA": bert_like,      # strip_sep_token, 32 tokens
    "ViT-H-14-worldwide": bpe_left_padded,  # whitespace, 77, left sides
}


def reference_tokenizer(model: str, folder) -> HFTokenizer:
    """What open_clip.get_tokenizer(model) builds, reading ``folder`` instead of the Hub."""
    text_cfg = open_clip.get_model_config(model)["text_cfg"]
    return HFTokenizer(str(folder), context_length=text_cfg["context_length"],
                       **text_cfg.get("tokenizer_kwargs", {}))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    folder = FAMILIES[request.param](tmp_path_factory.mktemp("tokenizer"))
    return request.param, folder


def test_token_for_token_equal_to_open_clip(family):
    model, folder = family
    exported = prepare_hf_tokenizer(model, folder)
    reference = reference_tokenizer(model, folder)
    expected = reference(TEXTS).numpy()
    served = exported.tokenizer(TEXTS)
    assert served.dtype == np.int64 and served.shape == expected.shape
    for text, row, want in zip(TEXTS, served, expected):
        assert row.tolist() == want.tolist(), f"{model}: differs on {text[:60]!r}"
    # the corpus reaches both the cut (at most one pad id: SigLIP pads with </s>) and padding
    pads = (expected == reference.tokenizer.pad_token_id).sum(axis=1)
    assert (pads <= 1).any() and (pads > expected.shape[1] // 2).any()


def test_settings_come_from_the_model_config(tmp_path):
    siglip = prepare_hf_tokenizer("ViT-B-16-SigLIP", t5_like(tmp_path / "t5"))
    assert siglip.tokenizer.context_length == 64 and siglip.parameters["clean"] == "canonicalize"
    assert "strip_token_id" not in siglip.parameters
    clipa = prepare_hf_tokenizer("ViT-L-14-CLIPA", bert_like(tmp_path / "bert"))
    assert clipa.tokenizer.context_length == 32 and clipa.parameters["strip_token_id"] == "3"
    assert siglip.parameters["tritonlens.tokenizer_source"].startswith("timm/ViT-B-16-SigLIP from ")


@pytest.mark.parametrize("mode", CLEAN_MODES)
def test_clean_modes_equal_open_clip(mode):
    from open_clip.tokenizer import get_clean_fn

    reference = get_clean_fn(mode)
    for text in TEXTS:
        assert clean_text(text, mode) == reference(text), text[:60]


def test_served_tokenizer_imports_neither_torch_nor_transformers(tmp_path):
    """The clip_tokenize stub's path: load the exported tokenizer.json and tokenize."""
    exported = prepare_hf_tokenizer("ViT-B-16-SigLIP", t5_like(tmp_path / "t5"))
    (tmp_path / "1").mkdir()
    for name, content in exported.files.items():
        (tmp_path / "1" / name).write_bytes(content)
    code = ("import sys, json\n"
            "from tritonlens.serve.clip.hf_tokenizer import hf_tokenizer_from_config\n"
            f"tok = hf_tokenizer_from_config(json.loads(sys.argv[1]), {str(tmp_path / '1')!r})\n"
            "ids = tok(['A photo of a cat.'])\n"
            "assert not {'torch', 'transformers', 'open_clip'} & set(sys.modules), sys.modules.keys()\n"
            "print(' '.join(map(str, ids[0])))\n")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(exported.parameters)], check=True,
                         timeout=120, capture_output=True, text=True).stdout
    assert [int(i) for i in out.split()] == exported.tokenizer(["A photo of a cat."])[0].tolist()


def test_missing_folder_says_what_to_supply():
    with pytest.raises(ExportError, match=r"--tokenizer DIR.*AutoTokenizer.from_pretrained\('timm/ViT-B-16-SigLIP'\)"):
        prepare_hf_tokenizer("ViT-B-16-SigLIP", None)
    with pytest.raises(ExportError, match="no such folder"):
        prepare_hf_tokenizer("ViT-B-16-SigLIP2", "/nonexistent/tokenizer")


@pytest.mark.parametrize("model, phrase", [
    ("roberta-ViT-B-32", "transformers model 'roberta-base'"),
    ("xlm-roberta-base-ViT-B-32", "Hugging Face Hub"),
    ("ViT-S-32", "open_clip's own BPE tokenizer"),
])
def test_families_without_this_path_are_refused_clearly(tmp_path, model, phrase):
    with pytest.raises(ExportError, match=phrase):
        prepare_hf_tokenizer(model, t5_like(tmp_path / "t5"))


def test_open_clip_tokenizer_models_need_no_folder():
    assert prepare_hf_tokenizer("ViT-S-32", None) is None


def test_bad_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="transformers could not read a tokenizer"):
        prepare_hf_tokenizer("ViT-B-16-SigLIP", tmp_path / "empty")
    folder = bpe_left_padded(tmp_path / "nopad")
    config = (folder / "tokenizer_config.json")
    config.write_text(config.read_text().replace('"pad_token": "<pad>",', ""))
    with pytest.raises(ExportError, match="no pad token"):
        prepare_hf_tokenizer("ViT-H-14-worldwide", folder)
    # more tokens than SigLIP's text tower embeds (32000)
    big = t5_like(tmp_path / "big")
    tokenizer = json.loads((big / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"] += [[f"extra{i}", -20.0] for i in range(40000)]
    (big / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ExportError, match="not this model's tokenizer"):
        prepare_hf_tokenizer("ViT-B-16-SigLIP", big)


def test_missing_transformers_is_named(tmp_path, monkeypatch):
    folder = t5_like(tmp_path / "t5")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ExportError, match="pip install transformers"):
        prepare_hf_tokenizer("ViT-B-16-SigLIP", folder)


def test_cli_names_the_missing_tokenizer_instead_of_a_bug(tmp_path):
    """Issue 22: ``export clip --model ViT-B-16-SigLIP`` ended in "unexpected
    ModuleNotFoundError ... (a tritonlens bug ...)"; now the missing folder is named, with
    the command that makes it, before anything is written."""
    from pathlib import Path

    labels = Path(__file__).resolve().parents[2] / "examples" / "labels.txt"
    run = subprocess.run([Path(sys.executable).parent / "tritonlens", "export", "clip", "--model",
                          "ViT-B-16-SigLIP", "--labels", str(labels), "--repo", str(tmp_path / "repo")],
                         capture_output=True, text=True, timeout=300)
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 1, output
    assert "--tokenizer DIR" in output and "timm/ViT-B-16-SigLIP" in output
    assert "bug" not in output and not (tmp_path / "repo").exists()
