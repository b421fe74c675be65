"""The SAM 2 prompt validator (serve/sam2/prompts.py), shared by sam2_prompts and the tracker."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tritonlens.serve.errors import RequestError
from tritonlens.serve.sam2.prompts import (DEFAULT_OBJECT_ID, MAX_OBJECTS_PER_REQUEST,
                                           MAX_POINTS_PER_OBJECT, PromptError, decoder_prompt,
                                           group_prompts, image_prompt)

SIZE = (240, 320)  # (height, width)


def arrays(points, ids=None):
    coords = np.array([p[:2] for p in points], np.float32).reshape(-1, 2)
    labels = np.array([p[2] for p in points], np.int32)
    return coords, labels, None if ids is None else np.array(ids, np.int32)


@pytest.mark.parametrize("points, ids, phrase", [
    ([(321, 10, 1)], None, "outside the 320x240 frame"),
    ([(10, -1, 1)], None, "outside the 320x240 frame"),
    ([(10, 241, 1)], None, "y in [0, 240]"),
    ([(float("nan"), 1, 1)], None, "non-finite"),
    ([(10, 10, 7)], None, "point label 7"),
    ([(10, 10, -1)], None, "point label -1"),
    ([(10, 10, 2)], None, "lone box corner"),
    ([(200, 10, 2), (100, 100, 3)], None, "x0 <= x1 and y0 <= y1"),
    ([(10, 100, 2), (100, 50, 3)], None, "x0 <= x1 and y0 <= y1"),
    ([(1, 1, 2), (5, 5, 3), (6, 6, 2), (9, 9, 3)], None, "more than one box"),
    ([(1, 1, 1), (2, 2, 1)], [1], "2 point(s) in point_coords but 1 ID(s)"),
])
def test_bad_prompts_are_refused_with_the_reason(points, ids, phrase):
    with pytest.raises(PromptError) as err:
        group_prompts(*arrays(points, ids), SIZE)
    assert phrase in str(err.value)
    assert isinstance(err.value, RequestError)  # INVALID_ARG through serve/errors.py


def test_shapes_and_counts():
    with pytest.raises(PromptError, match=r"must be \[P, 2\]"):
        group_prompts(np.zeros((3, 3), np.float32), np.ones(3, np.int32), None, SIZE)
    with pytest.raises(PromptError, match="2 point.* but 1 label"):
        group_prompts(np.zeros((2, 2), np.float32), np.ones(1, np.int32), None, SIZE)
    with pytest.raises(PromptError, match="go together"):
        group_prompts(np.zeros((2, 2), np.float32), None, None, SIZE)
    with pytest.raises(PromptError, match="positive"):
        group_prompts(*arrays([(1, 1, 1)]), (0, 10))


def test_edges_of_the_frame_are_inside():
    got = group_prompts(*arrays([(0, 0, 2), (320, 240, 3), (320, 0, 1)]), SIZE)
    assert list(got) == [DEFAULT_OBJECT_ID]


def test_grouping_moves_the_box_first_and_defaults_the_object_id():
    got = group_prompts(*arrays([(5, 5, 1), (50, 60, 3), (7, 8, 0), (10, 20, 2), (9, 9, 1)],
                                [4, 4, 4, 4, 9]), SIZE)
    assert list(got) == [4, 9]
    coords, labels = got[4]
    assert labels.tolist() == [2, 3, 1, 0]
    assert coords.tolist() == [[10, 20], [50, 60], [5, 5], [7, 8]]
    assert labels.dtype == np.int32 and coords.dtype == np.float32
    # No object IDs: one object, DEFAULT_OBJECT_ID.
    assert list(group_prompts(*arrays([(1, 1, 1), (2, 2, 0)]), SIZE)) == [DEFAULT_OBJECT_ID]
    # No prompt at all is a plain tracked frame on the video path ...
    assert group_prompts(None, None, None, SIZE) == {}
    # ... and an error on the image path.
    with pytest.raises(PromptError, match="no prompt"):
        image_prompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), np.array(SIZE))


def test_image_prompt_is_one_object_box_first():
    coords, labels = image_prompt(*arrays([(5, 5, 1), (10, 10, 2), (50, 50, 3)])[:2],
                                  np.array(SIZE, np.int32))
    assert labels.tolist() == [2, 3, 1]
    assert coords[0].tolist() == [10, 10]
    with pytest.raises(PromptError, match="outside the 320x240 image"):
        image_prompt(*arrays([(400, 5, 1)])[:2], SIZE)


def test_limits():
    ok = [(float(i % 300), float(i % 200), 1) for i in range(MAX_POINTS_PER_OBJECT)]
    assert len(group_prompts(*arrays(ok), SIZE)[DEFAULT_OBJECT_ID][0]) == MAX_POINTS_PER_OBJECT
    with pytest.raises(PromptError, match=f"at most {MAX_POINTS_PER_OBJECT} per object"):
        group_prompts(*arrays(ok + [(1, 1, 1)]), SIZE)
    with pytest.raises(PromptError, match=f"at most {MAX_POINTS_PER_OBJECT} points per object"):
        image_prompt(*arrays(ok + [(1, 1, 1)])[:2], SIZE)
    many = [(1.0, 1.0, 1)] * (MAX_OBJECTS_PER_REQUEST + 1)
    with pytest.raises(PromptError, match=f"at most {MAX_OBJECTS_PER_REQUEST}"):
        group_prompts(*arrays(many, list(range(len(many)))), SIZE)
    assert len(group_prompts(*arrays(many, list(range(len(many)))), SIZE,
                             max_objects=len(many))) == len(many)


def test_a_huge_request_is_refused_at_once():
    """[20000, 2] points (the request that crashed the server) is refused by its count,
    before any per-point check: the points are out of bounds and NaN too, and the count
    is what the error names."""
    coords = np.full((20000, 2), np.nan, np.float32)
    labels = np.full(20000, 7, np.int32)  # not a valid label either
    with pytest.raises(PromptError, match="20000 points in one request"):
        image_prompt(coords, labels, SIZE)
    with pytest.raises(PromptError, match="20000 points in one request"):
        group_prompts(coords, labels, None, SIZE)


def test_validator_imports_without_torch():
    """sam2_prompts' stub imports the validator: it must not pull torch/sam2 in (memory)."""
    code = ("import sys; import tritonlens.serve.sam2.prompts; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_decoder_prompt_fills_the_optional_inputs():
    coords, labels, _ = arrays([(10, 20, 1), (5, 5, 2), (50, 60, 3)])
    checked = decoder_prompt(coords, labels, np.array(SIZE, np.int32), None, None, 16)
    assert list(checked) == ["checked_point_coords", "checked_point_labels", "checked_mask_input",
                             "checked_has_mask_input", "checked_multimask_output"]
    assert checked["checked_point_labels"].tolist() == [2, 3, 1]  # the box first
    assert checked["checked_mask_input"].shape == (1, 16, 16) and not checked["checked_mask_input"].any()
    assert checked["checked_has_mask_input"].tolist() == [0.0]
    assert checked["checked_multimask_output"].tolist() == [True]
    mask = np.full((1, 16, 16), 0.5, np.float32)
    given = decoder_prompt(coords, labels, SIZE, np.array([False]), mask, 16)
    assert given["checked_has_mask_input"].tolist() == [1.0]
    assert given["checked_multimask_output"].tolist() == [False]
    np.testing.assert_array_equal(given["checked_mask_input"], mask)
    mask[0, 3, 4] = np.nan
    with pytest.raises(PromptError, match="mask_input has non-finite values"):
        decoder_prompt(coords, labels, SIZE, None, mask, 16)
    with pytest.raises(PromptError, match="no prompt"):
        decoder_prompt(None, None, SIZE, None, None, 16)
