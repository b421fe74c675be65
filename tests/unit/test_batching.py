"""serve/batching.run_batched: one bad request in a dynamic batch fails alone."""

from __future__ import annotations

import numpy as np

from tritonlens.serve.batching import run_batched


def embed(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A real lookup that refuses ids outside its table, as an embedding layer does."""
    ids = inputs["ids"]
    if (ids < 0).any() or (ids >= 10).any():
        raise ValueError(f"ids must be in [0, 10), got {ids.min()}..{ids.max()}")
    table = np.arange(10, dtype=np.float32) * 2
    return {"out": table[ids]}


def test_a_bad_request_does_not_fail_its_batch_neighbours():
    requests = [{"ids": np.array([[1, 2]])}, {"ids": np.array([[3, 99]])},
                {"ids": np.array([[4, 5], [6, 7]])}]
    results = run_batched(requests, embed)
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0]["out"], [[2, 4]])
    np.testing.assert_array_equal(results[2]["out"], [[8, 10], [12, 14]])


def test_good_requests_run_as_one_batch():
    calls = []

    def counting(inputs):
        calls.append(inputs["ids"].shape[0])
        return embed(inputs)

    results = run_batched([{"ids": np.array([[1]])}, {"ids": np.array([[2], [3]])}], counting)
    assert calls == [3]
    np.testing.assert_array_equal(results[1]["out"], [[4], [6]])
