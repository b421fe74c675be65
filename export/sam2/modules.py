"""The torch modules tritonlens exports for SAM 2 images: thin wrappers over a ``SAM2Base``.

Names follow the SAM 2 paper (Ravi et al. 2024): the **image encoder** (Hiera trunk + FPN
neck) runs once per image; the **prompt encoder** embeds points/boxes/masks and the **mask
decoder** turns image features + prompt embeddings into masks. The wrappers reproduce
``SAM2ImagePredictor`` step for step, so what Triton serves equals what the predictor
computes in-process:

* :class:`ImageEncoder`: the image path of ``SAM2ImagePredictor.set_image``
  (``forward_image`` with the ``conv_s0``/``conv_s1`` projections of the two
  high-resolution levels, ``_prepare_backbone_features``, adding ``no_mem_embed``);
* :class:`PromptDecoder`: ``SAM2ImagePredictor.predict`` from the image features and the
  prompts (coordinate transform, prompt encoder, mask decoder with its stability-based
  single-mask selection, upscaling to the original size, thresholding at 0, clamping the
  low-res logits to +-32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# SAM2ImagePredictor.predict's defaults: masks are logits > mask_threshold (0.0); the low-res
# logits it returns are clamped to [-32, 32] (sam2_image_predictor.py, _predict).
MASK_THRESHOLD = 0.0
LOW_RES_CLAMP = 32.0


class ImageEncoder(nn.Module):
    """``pixels`` fp32 [B, 3, S, S] -> image features, as ``set_image`` computes them.

    ``pixels`` is the output of sam2's transform (``SAM2Transforms``: ToTensor, bilinear
    antialiased resize to S x S, ImageNet mean/std normalisation), i.e. what
    ``sam2_preprocess`` returns. S is the model's ``image_size`` (1024 for the released
    checkpoints). Outputs, E = S / 16:

    * ``image_embedding`` fp32 [B, 256, E, E]: the stride-16 FPN level plus ``no_mem_embed``;
    * ``high_res_feats_0`` fp32 [B, 32, 4E, 4E]: stride 4, projected by the mask decoder's
      ``conv_s0`` (done once here instead of on every prompt, as sam2 does);
    * ``high_res_feats_1`` fp32 [B, 64, 2E, 2E]: stride 8, projected by ``conv_s1``.

    The Hiera trunk's absolute position embedding (``_get_pos_embed``: the bicubic
    interpolation of ``pos_embed`` to the stride-4 grid plus the tiled window embedding)
    depends only on S, so it is computed once here and held as a constant buffer instead of
    being recomputed on every call. The FPN neck's sine position encodings are not computed
    at all: ``set_image`` discards them (only the video tracker uses them).
    """

    def __init__(self, sam: nn.Module, image_size: int):
        super().__init__()
        encoder = sam.image_encoder
        self.trunk, self.neck, self.scalp = encoder.trunk, encoder.neck, encoder.scalp
        if not sam.use_high_res_features_in_sam:
            raise ValueError("this SAM 2 config has no high-resolution features in the decoder")
        with torch.no_grad():
            grid = image_size // 4  # patch embedding: kernel 7, stride 4, padding 3
            self.register_buffer("trunk_pos_embed", self.trunk._get_pos_embed((grid, grid)).clone())
        self.conv_s0 = sam.sam_mask_decoder.conv_s0
        self.conv_s1 = sam.sam_mask_decoder.conv_s1
        self.directly_add_no_mem_embed = bool(sam.directly_add_no_mem_embed)
        self.register_buffer("no_mem_embed", sam.no_mem_embed.detach().reshape(1, -1, 1, 1).clone())

    def _trunk(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Hiera.forward with the position embedding as a constant."""
        x = self.trunk.patch_embed(pixels) + self.trunk_pos_embed
        outputs = []
        for i, block in enumerate(self.trunk.blocks):
            x = block(x)
            if i == self.trunk.stage_ends[-1] or (
                    i in self.trunk.stage_ends and self.trunk.return_interm_layers):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs

    def _neck(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """FpnNeck.forward without the (unused) sine position encodings."""
        neck = self.neck
        out: list[torch.Tensor] = [xs[0]] * len(neck.convs)
        n = len(neck.convs) - 1
        prev = None
        for i in range(n, -1, -1):
            lateral = neck.convs[n - i](xs[i])
            if i in neck.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.to(dtype=torch.float32), scale_factor=2.0, mode=neck.fpn_interp_model,
                    align_corners=None if neck.fpn_interp_model == "nearest" else False,
                    antialias=False)
                prev = lateral + top_down
                if neck.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
        return out[: len(out) - self.scalp] if self.scalp > 0 else out

    def forward(self, pixels: torch.Tensor):
        fpn = self._neck(self._trunk(pixels))
        high_res_0 = self.conv_s0(fpn[0])
        high_res_1 = self.conv_s1(fpn[1])
        embedding = fpn[-1]
        if self.directly_add_no_mem_embed:
            embedding = embedding + self.no_mem_embed
        return embedding, high_res_0, high_res_1


class PromptDecoder(nn.Module):
    """Prompts + image features -> masks, as ``SAM2ImagePredictor.predict`` computes them.

    Inputs (one image; the leading 1 is that image):

    * ``image_embedding`` fp32 [1, 256, E, E], ``high_res_feats_0`` fp32 [1, 32, 4E, 4E],
      ``high_res_feats_1`` fp32 [1, 64, 2E, 2E]: :class:`ImageEncoder`'s outputs;
    * ``point_coords`` fp32 [N, 2]: (x, y) in pixels of the original image;
    * ``point_labels`` int32 [N]: 1 foreground, 0 background, 2 and 3 the top-left and
      bottom-right corners of a box (placed first, as the predictor does with ``box=``);
    * ``mask_input`` fp32 [1, 4E, 4E]: low-res logits from a previous prediction
      (``low_res_masks``), used when ``has_mask_input`` fp32 [1] is 1 (ignored when 0);
    * ``multimask_output`` bool [1]: True returns the 3 multimask outputs; False returns one
      mask, the single-mask token's unless its stability score (IoU of the mask at logit
      thresholds +-0.05) is under 0.98, then the best multimask output (the
      ``dynamic_multimask_via_stability`` setting ``build_sam2`` turns on);
    * ``orig_size`` int32 [2]: (height, width) of the original image in pixels.

    Outputs, M = 3 or 1:

    * ``masks`` bool [M, H, W]: logits upscaled bilinearly to the original size, > 0;
    * ``iou_scores`` fp32 [M]: the mask decoder's IoU predictions;
    * ``low_res_masks`` fp32 [M, 4E, 4E]: logits clamped to [-32, 32] (feed one back as
      ``mask_input`` to refine).

    The point coordinates are mapped to the model's S x S input frame exactly as
    ``SAM2Transforms.transform_coords`` does (x / W * S, y / H * S); the prompt encoder pads
    the points with one "not a point" (label -1) entry, as the predictor does for points
    without a separate box argument.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.image_size = int(sam.image_size)
        self.prompt_encoder = sam.sam_prompt_encoder
        self.mask_decoder = sam.sam_mask_decoder
        with torch.no_grad():
            # get_dense_pe() depends only on the embedding size: a constant of the graph.
            self.register_buffer("image_pe", self.prompt_encoder.get_dense_pe().clone())

    def forward(self, image_embedding, high_res_feats_0, high_res_feats_1, point_coords,
                point_labels, mask_input, has_mask_input, multimask_output, orig_size):
        size = orig_size.to(torch.float32)
        # SAM2Transforms.transform_coords(normalize=True): x / w, y / h, then * resolution.
        x = point_coords[:, 0] / size[1]
        y = point_coords[:, 1] / size[0]
        coords = torch.stack([x, y], dim=-1) * self.image_size
        sparse = self.prompt_encoder._embed_points(coords[None], point_labels[None], pad=True)
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(image_embedding)
        mask_embedding = self.prompt_encoder._embed_masks(mask_input[None])
        has_mask = has_mask_input.reshape(1, 1, 1, 1)
        dense = has_mask * mask_embedding + (1.0 - has_mask) * no_mask

        decoder = self.mask_decoder
        all_logits, all_iou, _, _ = decoder.predict_masks(
            image_embeddings=image_embedding, image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            repeat_image=False, high_res_features=[high_res_feats_0, high_res_feats_1])
        if decoder.dynamic_multimask_via_stability:
            single_logits, single_iou = decoder._dynamic_multimask_via_stability(all_logits, all_iou)
        else:
            single_logits, single_iou = all_logits[:, 0:1], all_iou[:, 0:1]
        # Candidates [single, multi 1, multi 2, multi 3]; keep the single one or the three.
        logits = torch.cat([single_logits, all_logits[:, 1:]], dim=1)[0]
        iou = torch.cat([single_iou, all_iou[:, 1:]], dim=1)[0]
        multi = multimask_output.reshape(1)
        keep = torch.cat([~multi, multi.expand(3)])
        logits, iou = logits[keep], iou[keep]

        height, width = orig_size[0], orig_size[1]
        upscaled = F.interpolate(logits[None], size=(height, width), mode="bilinear",
                                 align_corners=False)[0]
        masks = upscaled > MASK_THRESHOLD
        low_res = torch.clamp(logits, -LOW_RES_CLAMP, LOW_RES_CLAMP)
        return masks, iou, low_res
