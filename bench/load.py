"""Closed-loop load from Python clients: a fixed number of requests in flight for a while.

perf_analyzer drives Triton's own protocols; this drives what only a Python client reaches
(the OpenAI gateway, tritonlens' client classes through a proxy), the same way for every arm
of a side-by-side comparison.
"""

from __future__ import annotations

import threading
import time


def closed_loop(make_call, items: list, concurrency: int, seconds: float) -> tuple[int, float, list[float]]:
    """``concurrency`` threads, each with its own ``make_call()``, send ``items`` in turn for
    ``seconds``; returns (requests done, wall seconds, latencies in s)."""
    calls = [make_call() for _ in range(concurrency)]
    for call in calls:
        call(items[0])  # connections open, models warm
    done, latencies, lock = [0], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(k: int):
        i = k
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            calls[k](items[i % len(items)])
            took = time.perf_counter() - start
            with lock:
                done[0] += 1
                latencies.append(took)
            i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0], time.perf_counter() - start, latencies
