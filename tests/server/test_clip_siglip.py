"""A SigLIP model exported with a local Hugging Face tokenizer (``--tokenizer DIR``) and
served by a real tritonserver equals open_clip in-process: token ids, text embeddings,
image embeddings and the sigmoid zero-shot head.

The model is a small SigLIP architecture (ViT-B-16-SigLIP is 203 M parameters, too large for
a fast test on 2 cores): open_clip's ViT-B-16-SigLIP config with a timm ViT-Tiny trunk and
MAP pooling (SigLIP's attention-pool head) for the image tower, a 2-layer SigLIP text tower
(no causal mask, last-token pooling, projection bias), the sigmoid logit bias, and SigLIP's
tokenizer settings (64 tokens, ``clean: canonicalize``), registered with
``open_clip.add_model_config``, seeded random weights. The tokenizer is a T5-style Unigram
folder trained locally (tests/helpers.py); the reference is open_clip's
``HFTokenizer`` over the same folder (``transformers.AutoTokenizer``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from tests.helpers import TEXTS, cosine, t5_like
from tritonlens.client.base import InferenceError
from tritonlens.client.clip import ClipClient, bytes_tensor
from tritonlens.export.clip import ClipExportOptions, export_clip
from tritonlens.launcher import TritonServer
from tritonlens.launcher.health import stub_of

pytest.importorskip("transformers")  # the reference (open_clip's HFTokenizer) and the export

MODEL = "ViT-Ti-16-SigLIP-test"
CONFIG = {
    "embed_dim": 192,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224",
                   "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 64, "vocab_size": 512, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                 "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 192, "heads": 3,
                 "layers": 2, "no_causal_mask": True, "proj_bias": True, "pool_type": "last",
                 "norm_kwargs": {"eps": 1e-6}},
}
LABELS = ["cat", "dog", "cup of coffee", "rocket", "astronaut"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}."]


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    """(served repository, server, open_clip model, preprocess, HFTokenizer)."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    work = tmp_path_factory.mktemp("siglip")
    (work / f"{MODEL}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(work / f"{MODEL}.json")
    torch.manual_seed(2024)
    checkpoint = work / "weights.pt"
    torch.save(open_clip.create_model(MODEL, pretrained=None).state_dict(), checkpoint)
    folder = t5_like(work / "tokenizer")
    repo = work / "repository"
    export_clip(ClipExportOptions(model=MODEL, pretrained=str(checkpoint), tokenizer=str(folder),
                                  labels=LABELS, templates=TEMPLATES, max_batch_size=4,
                                  instance_count=1), repo)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=str(checkpoint))
    model.eval()
    reference = HFTokenizer(str(folder), context_length=64, clean="canonicalize")
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                      log_file=work / "server.log") as server:
        yield repo, server, model, preprocess, reference


def test_repository_holds_the_tokenizer(siglip):
    repo = siglip[0]
    assert (repo / "clip_tokenize" / "1" / "tokenizer.json").is_file()
    config = (repo / "clip_tokenize" / "config.pbtxt").read_text()
    assert "huggingface" in config and "canonicalize" in config


def test_token_ids_equal_open_clip(siglip):
    _, server, _, _, reference = siglip
    client = ClipClient(server.grpc_url, "grpc")
    for start in range(0, len(TEXTS), 8):  # clip_tokenize's max_batch_size
        chunk = TEXTS[start:start + 8]
        served = client.infer("clip_tokenize", {"text": bytes_tensor([t.encode() for t in chunk])})
        np.testing.assert_array_equal(served.as_numpy("token_ids"), reference(chunk).numpy())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_text_embeddings_equal_open_clip(siglip, protocol):
    _, server, model, _, reference = siglip
    texts = ["a photo of a cat", "A_Rocket, on the LAUNCH pad!", "", "naïve café ☕ " * 30]
    served = ClipClient(server.url(protocol), protocol).embed_texts(texts)
    with torch.no_grad():
        expected = model.encode_text(reference(texts), normalize=True).numpy()
    assert served.shape == expected.shape == (4, 192)
    assert cosine(served, expected).min() >= 0.9999


def reference_image_embeddings(model, preprocess, photos) -> np.ndarray:
    batch = torch.stack([preprocess(Image.open(p)) for p in photos])
    with torch.no_grad():
        return model.encode_image(batch, normalize=True).numpy()


def test_image_embeddings_equal_open_clip(siglip, photos):
    _, server, model, preprocess, _ = siglip
    served = ClipClient(server.grpc_url, "grpc").embed_images(photos)
    assert cosine(served, reference_image_embeddings(model, preprocess, photos)).min() >= 0.9999


def test_sigmoid_zero_shot_equals_open_clip(siglip, photos):
    """SigLIP's head: sigmoid(exp(logit_scale) * cosine + logit_bias) per label, with the
    label embeddings built by open_clip's recipe over open_clip's tokens."""
    import open_clip

    _, server, model, preprocess, reference = siglip
    served = ClipClient(server.http_url, "http").probabilities(photos)
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, reference, LABELS, TEMPLATES,
                                                          device="cpu")
        features = torch.from_numpy(reference_image_embeddings(model, preprocess, photos))
        expected = torch.sigmoid(model.logit_scale.exp() * features @ classifier
                                 + model.logit_bias).numpy()
    assert served.shape == expected.shape == (len(photos), len(LABELS))
    assert np.abs(served - expected).max() <= 1e-4


def test_tokenize_stub_maps_no_torch(siglip):
    """clip_tokenize's stub maps no libtorch (it loaded tokenizer.json from the repository;
    no hub is reachable from this host)."""
    repo, server = siglip[:2]
    stubs = [proc for proc in psutil.Process(server.process.pid).children(recursive=True)
             if (stub := stub_of(proc.cmdline(), server.model_repository))
             and stub.model == "clip_tokenize"]
    assert stubs
    for proc in stubs:
        assert not [m.path for m in proc.memory_maps() if "libtorch" in Path(m.path).name]


def test_bad_text_fails_alone(siglip):
    """A text that is not UTF-8 fails its request with a message naming it; the next
    request is served."""
    _, server, _, _, reference = siglip
    client = ClipClient(server.grpc_url, "grpc")
    with pytest.raises(InferenceError, match="UTF-8"):
        client.infer("clip_embed_text", {"text": bytes_tensor([b"a cat", b"\xff\xfe bad"])})
    with pytest.raises(InferenceError, match="over the limit of 2048 bytes"):
        client.embed_texts(["a cat", "x" * 2049])
    served = client.infer("clip_tokenize", {"text": bytes_tensor([b"a photo of a cat"])})
    np.testing.assert_array_equal(served.as_numpy("token_ids"), reference(["a photo of a cat"]).numpy())
