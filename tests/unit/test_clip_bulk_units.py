"""Bulk input without a server: chunk bounds, ordered bounded concurrency, folder and
text-file input of the clip commands."""

from __future__ import annotations

import threading
import time

import pytest

from tritonlens.client.base import TritonLensError
from tritonlens.client.clip import chunk_bounds, imap_concurrent
from tritonlens.client.clip.plugin import expand_images, read_texts


def test_chunk_bounds_cover_every_item_once_within_the_size():
    for count, size in [(0, 8), (1, 8), (8, 8), (9, 8), (40, 16), (10_000, 16)]:
        bounds = chunk_bounds(count, size)
        assert [i for a, b in bounds for i in range(a, b)] == list(range(count))
        assert all(0 < b - a <= size for a, b in bounds)
    with pytest.raises(ValueError, match="at least 1"):
        chunk_bounds(5, 0)


def test_imap_concurrent_keeps_order_and_bounds_in_flight():
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def work(i):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        with lock:
            state["now"] -= 1
        if i == 5:
            raise TritonLensError("item 5 is bad")
        return i * i

    results = list(imap_concurrent(work, range(40), concurrency=3))
    assert [r for i, r in enumerate(results) if i != 5] == [i * i for i in range(40) if i != 5]
    assert isinstance(results[5], TritonLensError)
    assert 1 < state["peak"] <= 3


def test_closing_imap_concurrent_early_cancels_what_was_not_started():
    started = []

    def work(i):
        started.append(i)
        time.sleep(0.01)
        return i

    results = imap_concurrent(work, range(1000), concurrency=2)
    assert next(results) == 0
    results.close()
    assert len(started) <= 8  # the look-ahead window, not all 1000


def test_expand_images_walks_folders_recursively_sorted(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ["b/deep/z.PNG", "b/a.jpg", "c.webp", "d.bmp", "e.jpeg", "notes.txt", "b/x.gif"]:
        (tmp_path / name).write_bytes(b"x")
    single = tmp_path / "missing.png"
    files = expand_images([tmp_path, single])
    names = [p.relative_to(tmp_path).as_posix() for p in files]
    # only what the server decodes (no .bmp, .gif, .txt); a named file is kept as given
    assert names == ["b/a.jpg", "b/deep/z.PNG", "c.webp", "e.jpeg", "missing.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TritonLensError, match="no image files"):
        expand_images([tmp_path / "empty"])


def test_read_texts_one_per_line_and_refuses_empty_lines(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("a cat\nun chien\n猫\n", encoding="utf-8")
    assert read_texts(path) == ["a cat", "un chien", "猫"]
    path.write_text("a cat\n\na dog\n", encoding="utf-8")
    with pytest.raises(TritonLensError, match="line 2 is empty"):
        read_texts(path)
    with pytest.raises(TritonLensError, match="--text-file"):
        read_texts(tmp_path / "missing.txt")
