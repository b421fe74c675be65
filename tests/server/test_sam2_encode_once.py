"""Encode once, prompt many times: same answers as sam2_segment, without re-encoding.

The saving is printed (run with -s to see it); nothing here asserts on time.
"""

from __future__ import annotations

import time

import numpy as np

from tritonlens.client.sam2 import Sam2Client

CLICKS = [(200, 150), (120, 80), (300, 200)]


def test_encode_once_equals_segment_and_saves_time(server, photos):
    cat = next(p for p in photos if p.name == "chelsea_cat.jpg")
    client = Sam2Client(server.grpc_url, "grpc")
    client.decode(client.embed_image(cat), points=[CLICKS[0]])  # warm up

    start = time.perf_counter()
    each = [client.segment(cat, points=[click]) for click in CLICKS]
    segment_s = time.perf_counter() - start

    start = time.perf_counter()
    features = client.embed_image(cat)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    once = [client.decode(features, points=[click]) for click in CLICKS]
    decode_s = time.perf_counter() - start

    for a, b in zip(each, once):
        assert np.array_equal(a.masks, b.masks)
        np.testing.assert_allclose(a.iou_scores, b.iou_scores, atol=1e-5)
        np.testing.assert_allclose(a.low_res_masks, b.low_res_masks, atol=1e-4)
    n = len(CLICKS)
    print(f"\n{n} clicks on one image: sam2_segment each time {segment_s:.2f} s "
          f"({segment_s / n * 1000:.0f} ms/click); encode once {embed_s * 1000:.0f} ms + "
          f"sam2_decode {decode_s / n * 1000:.0f} ms/click = {embed_s + decode_s:.2f} s "
          f"({segment_s / (embed_s + decode_s):.1f}x less time); features sent per click "
          f"{features.nbytes / 1e6:.1f} MB")
