"""The Python-backend models' preprocessing, in-process against the reference libraries:
clip_preprocess's transform vs open_clip's eval transform, sam2_preprocess's vs sam2's
SAM2Transforms, sam2_frame_preprocess's vs sam2's video frame loader, on real photos.
(tests/server/test_clip_parity.py and test_sam2_parity.py check the served models.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tritonlens.serve.clip.preprocess import FILTERS, ClipPreprocess, clip_transform
from tritonlens.serve.images import ImageError
from tritonlens.serve.sam2.frames import frame_pixels, preprocess_frame
from tritonlens.serve.sam2.preprocess import Sam2Preprocess, one_item, sam2_transform

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAM2_MEAN, SAM2_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalised(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [S, S, 3] -> what ToTensor + Normalize make of it (the encoder graph's first ops)."""
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(torch.float32).div(255)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_clip_transform_equals_open_clip(photos, resize_mode, interpolation):
    from open_clip.transform import image_transform

    reference = image_transform(224, is_train=False, mean=CLIP_MEAN, std=CLIP_STD,
                                resize_mode=resize_mode, interpolation=interpolation)
    for path in photos:
        with Image.open(path) as image:
            image.load()
            ours = clip_transform(image, 224, resize_mode, FILTERS[interpolation])
            expected = reference(image)
        assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
        torch.testing.assert_close(_normalised(ours, CLIP_MEAN, CLIP_STD), expected,
                                   atol=1e-6, rtol=0, msg=f"{path.name}")


def test_clip_preprocess_batch_and_refusal(photos):
    preprocess = ClipPreprocess(size=64)
    data = [p.read_bytes() for p in photos[:3]]
    pixels = preprocess(data)
    assert pixels.shape == (3, 64, 64, 3) and pixels.dtype == np.uint8
    with Image.open(photos[1]) as image:
        np.testing.assert_array_equal(pixels[1], clip_transform(image, 64))
    with pytest.raises(ImageError, match="image 1 of the request: not a JPEG, PNG or WebP"):
        preprocess([data[0], b"plain text", data[2]])


def _jpeg(image: Image.Image, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").resize(size, Image.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_jpeg_draft_scales_large_jpegs_only(photos):
    """jpeg_draft decodes a large JPEG at a DCT scale (both sides still >= 2 S) with pixels
    close to the full decode's; small JPEGs and PNGs come out identical to the exact path."""
    exact, draft = ClipPreprocess(size=64), ClipPreprocess(size=64, jpeg_draft=True)
    with Image.open(next(p for p in photos if p.suffix == ".jpg")) as image:
        large = _jpeg(image, (1200, 900))   # 1/4 scale: 300 x 225 >= 128 x 128
        small = _jpeg(image, (200, 150))    # no scale keeps 150 >= 128 at 1/2: full decode
    from tritonlens.serve.images import decode
    assert decode(large, draft=(128, 128)).size == (300, 225)
    assert decode(small, draft=(128, 128)).size == (200, 150)
    full, scaled = exact([large])[0].astype(int), draft([large])[0].astype(int)
    difference = np.abs(full - scaled)
    print(f"\n1200x900 JPEG at S=64: |exact - draft| mean {difference.mean():.3f}, max {difference.max()}")
    assert 0 < difference.mean() < 1.0 and difference.max() <= 16
    others = [small] + [p.read_bytes() for p in photos if p.suffix != ".jpg"]
    np.testing.assert_array_equal(exact(others), draft(others))


def test_sam2_transform_equals_sam2_transforms(photos):
    from sam2.utils.transforms import SAM2Transforms

    reference = SAM2Transforms(resolution=128, mask_threshold=0.0)
    mean = torch.tensor(SAM2_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM2_STD).view(3, 1, 1)
    for path in photos:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        ours = sam2_transform(rgb, 128, mean, std)
        assert ours.shape == (1, 3, 128, 128) and ours.dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(ours[0]), reference(rgb), atol=1e-5, rtol=0,
                                   msg=f"{path.name}")


def test_sam2_preprocess_gives_pixels_and_original_size(photos):
    preprocess = Sam2Preprocess(size=64, mean=SAM2_MEAN, std=SAM2_STD)
    pixels, orig_size = preprocess(photos[0].read_bytes())
    with Image.open(photos[0]) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert orig_size.tolist() == [rgb.shape[0], rgb.shape[1]] and orig_size.dtype == np.int32
    np.testing.assert_array_equal(pixels, sam2_transform(
        rgb, 64, torch.tensor(SAM2_MEAN).view(3, 1, 1), torch.tensor(SAM2_STD).view(3, 1, 1)))


def test_one_item_refuses_other_counts():
    assert one_item(np.array([b"abc"], dtype=object)) == b"abc"
    with pytest.raises(ImageError, match="send one frame per request, not 2"):
        one_item(np.array([b"a", b"b"], dtype=object), "frame")


def test_frame_pixels_equal_sam2_video_loader(photos, tmp_path):
    from sam2.utils.misc import load_video_frames_from_jpg_images

    frames = []
    for index, path in enumerate(photos[:3]):
        with Image.open(path) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
        (tmp_path / f"{index:05d}.jpg").write_bytes(buffer.getvalue())
        frames.append(buffer.getvalue())
    expected, height, width = load_video_frames_from_jpg_images(
        str(tmp_path), 96, offload_video_to_cpu=True, compute_device=torch.device("cpu"))
    for index, data in enumerate(frames):
        pixels, size = preprocess_frame(data, 96)
        assert pixels.shape == (1, 3, 96, 96) and pixels.dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(pixels[0]), expected[index], atol=1e-6, rtol=0)
        with Image.open(io.BytesIO(data)) as image:
            assert size.tolist() == [image.height, image.width]
            torch.testing.assert_close(frame_pixels(image, 96), expected[index], atol=1e-6, rtol=0)
    # The loader reports the size of the last frame it read.
    assert preprocess_frame(frames[-1], 96)[1].tolist() == [height, width]
