"""Build the SAM 2 video model the tracker runs, from the weights an export wrote."""

from __future__ import annotations

from pathlib import Path

import torch

# Keys of the image encoder's Hiera trunk: the tracker never runs the trunk (frames arrive
# already encoded by sam2_image_encoder), so export leaves them out of the tracker's weights.
TRUNK_PREFIX = "image_encoder.trunk."


def build_video_model(config: str, image_size: int, weights: str | Path | dict | None = None,
                      device: str = "cpu"):
    """A ``SAM2VideoPredictor`` built by sam2's ``build_sam2_video_predictor``.

    Args:
        config: a sam2 packaged config name, e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``.
        image_size: S, passed as the Hydra override ``++model.image_size=S``.
        weights: a state dict (or a ``torch.save``d one, ``{"model": ...}`` or bare), or None
            for sam2's random initialisation. Trunk keys may be missing (see TRUNK_PREFIX).
        device: ``cpu`` or ``cuda``.

    Raises:
        RuntimeError: the weights miss keys other than the trunk's, or have unknown keys.
    """
    from sam2.build_sam import build_sam2_video_predictor

    model = build_sam2_video_predictor(config, ckpt_path=None, device="cpu",
                                       hydra_overrides_extra=[f"++model.image_size={image_size}"])
    if weights is not None:
        if not isinstance(weights, dict):
            weights = torch.load(str(weights), map_location="cpu", weights_only=True)
        weights = weights.get("model", weights)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.startswith(TRUNK_PREFIX)]
        if missing or unexpected:
            raise RuntimeError(f"SAM 2 weights do not fit {config}: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
    return model.to(device).eval()


def tracker_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict without the Hiera trunk (what the tracker needs)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.startswith(TRUNK_PREFIX)}
