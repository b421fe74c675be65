"""serve/batching.run_batched: one bad request in a dynamic batch fails alone."""

from __future__ import annotations

import numpy as np

from tritonlens.serve.batching import TensorSpec, check_input, run_batched


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


def test_run_batched_groups_by_shape_and_splits_back():
    calls = []

    def run(inputs):
        calls.append(inputs["x"].shape)
        return {"y": inputs["x"].sum(axis=-1, keepdims=True)}

    requests = [{"x": np.ones((2, 3))}, {"x": np.ones((1, 5))}, {"x": 2 * np.ones((3, 3))}]
    results = run_batched(requests, run)
    assert sorted(calls) == [(1, 5), (5, 3)]  # the two [*, 3] requests ran as one batch
    assert [r["y"].shape for r in results] == [(2, 1), (1, 1), (3, 1)]
    assert results[2]["y"][0, 0] == 6 and results[1]["y"][0, 0] == 5


def test_run_batched_reports_errors_per_group():
    def run(inputs):
        if inputs["x"].shape[1] == 4:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    results = run_batched([{"x": np.ones((1, 4))}, {"x": np.ones((1, 2))}], run)
    assert isinstance(results[0], RuntimeError) and results[1]["y"].shape == (1, 2)


def test_check_input_names_the_problem():
    spec = TensorSpec("pixels", np.uint8, (224, 224, 3))
    assert check_input(spec, np.zeros((1, 224, 224, 3), np.uint8), True) is None
    assert "dtype float32" in check_input(spec, np.zeros((1, 224, 224, 3), np.float32), True)
    assert "expected [batch, 224, 224, 3]" in check_input(spec, np.zeros((1, 2, 2, 3), np.uint8), True)
