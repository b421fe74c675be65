"""The torch modules tritonlens exports for CLIP: thin wrappers over an open_clip model.

Each wrapper puts into the graph what a hand-rolled service does around the model, so a
client sends plain tensors and gets finished results:

* :class:`ImageEncoder`: uint8 pixels in, ``ToTensor`` + ``Normalize`` inside the graph,
  L2-normalised embedding out (open_clip ``encode_image(normalize=True)``);
* :class:`TextEncoder`: token ids in, L2-normalised embedding out;
* :class:`ZeroShotHead`: image embedding in, label probabilities out, with the label
  embeddings and the logit scale as graph constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImageEncoder(nn.Module):
    """``pixels`` uint8 [B, S, S, 3] (RGB, HWC) -> ``embedding`` fp32 [B, D], unit L2 norm.

    Normalisation is open_clip's: ``x / 255`` (torchvision ``ToTensor``), then
    ``(x - mean) / std`` per channel with the model's ``preprocess_cfg`` mean and std
    (OpenAI's CLIP constants for ViT-B-32).

    With ``dtype=torch.float16`` (GPU hosts) the tower computes in fp16 from the
    normalised pixels on, and the embedding is normalised in fp32: the contract's dtypes
    do not change.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32).div(255)
        x = ((x - self.mean) / self.std).to(self.dtype)
        return F.normalize(self.model.encode_image(x).to(torch.float32), dim=-1)


class TextEncoder(nn.Module):
    """``token_ids`` int64 [B, L] -> ``embedding`` fp32 [B, D], unit L2 norm.

    ``dtype=torch.float16`` computes the tower in fp16 (GPU hosts); the output stays fp32.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model.to(dtype)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(token_ids).to(torch.float32), dim=-1)


class ZeroShotHead(nn.Module):
    """``embedding`` fp32 [B, D] -> ``probabilities`` fp32 [B, C].

    ``probabilities = softmax(exp(logit_scale) * embedding @ label_embeddings)``, CLIP's
    zero-shot classifier (Radford et al. 2021; open_clip ``zero_shot_classifier``) with the
    model's own learned temperature. Models trained with a sigmoid loss (SigLIP: the model
    has ``logit_bias``) get ``sigmoid(scale * logits + bias)`` instead, as they are scored.

    Args:
        label_embeddings: fp32 [D, C], one unit-norm column per label (class names x prompt
            templates, encoded, averaged, renormalised).
        logit_scale: exp(model.logit_scale), a float (100 for OpenAI's trained CLIP).
        logit_bias: SigLIP's bias, or None.
    """

    def __init__(self, label_embeddings: torch.Tensor, logit_scale: float,
                 logit_bias: float | None = None):
        super().__init__()
        self.register_buffer("label_embeddings", label_embeddings.to(torch.float32).contiguous())
        self.logit_scale = float(logit_scale)
        self.logit_bias = None if logit_bias is None else float(logit_bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale * embedding @ self.label_embeddings
        if self.logit_bias is not None:
            return torch.sigmoid(logits + self.logit_bias)
        return logits.softmax(dim=-1)
