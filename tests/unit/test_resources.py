"""serve/resources.py: usable cores, OpenMP's wait policy, freed heap given back; the SAM 2
export's thread budget (the encoder's instances share the usable cores)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tritonlens.export.sam2 import tracker as sam2_tracker_export
from tritonlens.serve import resources


def test_usable_cores_is_the_affinity_mask():
    assert resources.usable_cores() == len(os.sched_getaffinity(0))


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=120, check=True)
    return result.stdout.strip()


def test_passive_openmp_sets_the_policy_unless_one_is_given():
    code = """
        import os
        from tritonlens.serve.resources import passive_openmp
        passive_openmp()
        print(os.environ["OMP_WAIT_POLICY"])
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, check=True).stdout.strip() == "PASSIVE"
    assert run_python(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_freed_memory_gives_freed_heap_pages_back():
    """64 KiB blocks come from glibc's heap (below its mmap threshold); one block kept at the
    top pins the heap's end, so only malloc_trim can return the freed pages below it."""
    code = """
        import ctypes, psutil
        from tritonlens.serve.resources import release_freed_memory
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        blocks = [libc.malloc(64 << 10) for _ in range(4096)]   # 256 MiB
        for b in blocks:
            ctypes.memset(b, 1, 64 << 10)
        for b in blocks[:-1]:
            libc.free(b)
        rss = lambda: psutil.Process().memory_info().rss / 2**20
        before = rss()
        assert release_freed_memory()
        print(before - rss())
    """
    assert float(run_python(code)) > 200


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 16])
@pytest.mark.parametrize("instances", [1, 2])
def test_sam2_encoder_instances_share_the_cores(monkeypatch, cores, instances):
    monkeypatch.setattr(resources, "usable_cores", lambda: cores)
    threads = sam2_tracker_export.encoder_threads(instances)
    assert threads == max(1, cores // instances)
    assert threads * instances <= max(cores, instances)
