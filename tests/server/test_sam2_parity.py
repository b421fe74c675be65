"""SAM 2 through Triton equals sam2's SAM2ImagePredictor in-process, on real photos.

Same weights on both sides (the session's seeded checkpoint, loaded through build_sam2).
Tolerances: mask IoU >= 0.99 for every returned mask, predicted IoU scores
within 1e-3, low-res logits within 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import CASES, PHOTOS, reference, rgb, scaled
from tritonlens.client.clip import bytes_tensor
from tritonlens.client.sam2 import Sam2Client, Segmentation, mask_iou


def assert_parity(served: Segmentation, expected) -> None:
    masks, scores, low_res = expected
    assert served.masks.dtype == np.bool_
    assert served.masks.shape == masks.shape
    assert served.low_res_masks.shape == low_res.shape
    for i in range(len(masks)):
        assert mask_iou(served.masks[i], masks[i] > 0) >= 0.99, f"mask {i}"
    np.testing.assert_allclose(served.iou_scores, scores, atol=1e-3, rtol=0)
    np.testing.assert_allclose(served.low_res_masks, low_res, atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def references(sam2_reference, photos):
    """photo name -> (photo path, a predictor whose image is set); set_image runs once."""
    import copy

    out = {}
    for path in photos:
        if path.name in PHOTOS:
            predictor = copy.copy(sam2_reference)
            predictor.set_image(rgb(path))
            out[path.name] = (path, predictor)
    return out


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single-mask"])
@pytest.mark.parametrize("case", list(CASES))
def test_segment_matches_predictor(server, references, case, multimask):
    """Every prompt kind, both mask modes; each case runs on both photos across the pair
    (multimask on one, single-mask on the other), to keep the image encoder runs few."""
    client = Sam2Client(server.grpc_url, "grpc")
    photo = PHOTOS[(list(CASES).index(case) + multimask) % len(PHOTOS)]
    path, predictor = references[photo]
    height, width = predictor._orig_hw[0]
    prompt = scaled(CASES[case], width, height)
    served = client.segment(path, multimask_output=multimask, **prompt)
    assert len(served.iou_scores) == (3 if multimask else 1)
    assert_parity(served, reference(predictor, prompt, multimask))


def test_segment_over_both_protocols(server, references, protocol):
    path, predictor = references["chelsea_cat.jpg"]
    height, width = predictor._orig_hw[0]
    prompt = scaled(CASES["one point"], width, height)
    served = Sam2Client(server.url(protocol), protocol).segment(path, **prompt)
    assert_parity(served, reference(predictor, prompt, True))
    areas = served.masks.reshape(len(served.masks), -1).mean(axis=1)
    print(f"\n{path.name} one click: mask areas {np.round(areas, 3)} of the image, "
          f"predicted IoU {np.round(served.iou_scores, 3)}")


def test_preprocess_matches_sam2_transform(server, sam2_reference, photos):
    """sam2_preprocess on every sample photo (JPEG/PNG/WebP, grey and colour) equals
    SAM2Transforms on the RGB array, and reports the original size."""
    client = Sam2Client(server.grpc_url, "grpc")
    for path in photos:
        result = client.infer("sam2_preprocess",
                              {"image": bytes_tensor([path.read_bytes()]).reshape(1)})
        image = rgb(path)
        expected = sam2_reference._transforms(image)[None].numpy()
        np.testing.assert_allclose(result.as_numpy("pixels"), expected, atol=1e-5, rtol=0,
                                   err_msg=path.name)
        assert result.as_numpy("orig_size").tolist() == list(image.shape[:2])


def test_image_features_match_set_image(server, references):
    path, predictor = references["astronaut.webp"]
    features = Sam2Client(server.http_url, "http").embed_image(path)
    expected = predictor._features
    np.testing.assert_allclose(features.image_embedding, expected["image_embed"].numpy(),
                               atol=1e-4, rtol=0)
    for served, ref in zip((features.high_res_feats_0, features.high_res_feats_1),
                           expected["high_res_feats"]):
        np.testing.assert_allclose(served, ref.numpy(), atol=1e-4, rtol=0)
    assert features.orig_size.tolist() == list(predictor._orig_hw[0])


def test_decode_refines_with_mask_input(server, references, protocol):
    """Encode once, then a second click with the first answer's low-res logits as the mask
    prompt, as interactive tools do; equal to the predictor doing the same."""
    path, predictor = references["chelsea_cat.jpg"]
    height, width = predictor._orig_hw[0]
    client = Sam2Client(server.url(protocol), protocol)
    features = client.embed_image(path)
    first_prompt = scaled(CASES["one point"], width, height)
    first = client.decode(features, **first_prompt)
    assert_parity(first, reference(predictor, first_prompt, True))
    second_prompt = scaled(CASES["several points"], width, height)
    mask = first.low_res_masks[first.best]
    second = client.decode(features, multimask_output=False, mask_input=mask, **second_prompt)
    assert_parity(second, reference(predictor, second_prompt, False, mask_input=mask[None]))
