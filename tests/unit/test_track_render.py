"""client/sam2/render.draw_prompts: the tracked video's frames show the clicks and boxes."""

from __future__ import annotations

import numpy as np

from tritonlens.client.sam2.render import POINT_COLOURS, draw_prompts
from tritonlens.client.sam2.track import Box, Point
from tritonlens.client.sam2.track_cli import COLOURS


def test_points_and_boxes_are_drawn_in_their_objects_colours():
    frame = np.full((120, 160, 3), 40, dtype=np.uint8)
    out = draw_prompts(frame, [Point(30, 40, 1, object_id=1), Point(100, 90, 0, object_id=2),
                               Box(60, 10, 150, 60, object_id=3)], COLOURS)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert tuple(out[40, 30]) == tuple(int(c) for c in COLOURS[1])  # dot centre: object 1
    assert tuple(out[90, 100]) == tuple(int(c) for c in COLOURS[2])
    ring = out[90 - 10:90 + 11, 100 - 10:100 + 11].reshape(-1, 3)  # background click: red ring
    assert any(tuple(px) == POINT_COLOURS[0] for px in ring)
    assert tuple(out[10, 100]) == tuple(int(c) for c in COLOURS[3])  # the box's top edge
    assert tuple(out[35, 100]) == (40, 40, 40)  # inside the box: untouched
    assert np.array_equal(frame, np.full_like(frame, 40))  # the input frame is not modified


def test_no_prompts_leaves_the_frame():
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    assert draw_prompts(frame, [], COLOURS) is frame
