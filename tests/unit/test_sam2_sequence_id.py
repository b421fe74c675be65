"""Sequence IDs as Sam2VideoClient sends them (no server: tests/server/test_sam2_track_server.py
sends the extremes to a real one)."""

import numpy as np
import pytest

from tritonlens.client.sequences import MAX_SEQUENCE_ID, wire_sequence_id


def test_full_uint64_range():
    assert wire_sequence_id(1, "grpc") == 1 and wire_sequence_id(1, "http") == 1
    assert wire_sequence_id(2 ** 63 - 1, "grpc") == 2 ** 63 - 1
    # gRPC's int64 field carries the upper half as two's complement; HTTP's JSON as is.
    assert wire_sequence_id(2 ** 63, "grpc") == -2 ** 63
    assert wire_sequence_id(MAX_SEQUENCE_ID, "grpc") == -1
    assert wire_sequence_id(MAX_SEQUENCE_ID, "http") == 2 ** 64 - 1
    assert wire_sequence_id(np.uint64(2 ** 64 - 1), "grpc") == -1
    assert wire_sequence_id("video-1", "grpc") == "video-1"


@pytest.mark.parametrize("bad", [0, -1, 2 ** 64, True, 1.5, ""])
def test_outside_the_range_is_refused(bad):
    with pytest.raises(ValueError):
        wire_sequence_id(bad, "grpc")
