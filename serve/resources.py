"""CPU and memory hygiene for the engine stubs: cores this process may use, OpenMP's waiting,
and the heap an engine freed while loading.

PyTorch's CPU kernels run on OpenMP (libgomp in the PyPI wheels). libgomp's default
``OMP_WAIT_POLICY`` makes a thread that reaches the end of a parallel region spin for a
while before sleeping. When another process (a second model instance, the tracker beside
the image encoder, another job on the host) holds the cores, every parallel region then
waits on a descheduled sibling while the spinning threads take the CPU it needs. Measured
on the 2-core host with other jobs running (load average 6.5; SAM 2.1 tiny, 256 px, one
frame): image encoder 2193 ms with 2 spinning threads, 546 ms with 2 passive threads, 572 ms
with 1 thread; the tracker's step 1133 / 352 / 208 ms. With passive waiting, the SAM 2 image
encoder and the video tracker each take every core (``export.sam2.tracker.encoder_threads``).

:func:`passive_openmp` must run before ``import torch`` (libgomp reads the variable once,
when it is loaded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os


def usable_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``: a container's or
    taskset's limit, not the machine's count), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on this platform
        return max(1, os.cpu_count() or 1)


def passive_openmp() -> None:
    """Make OpenMP threads sleep, not spin, when they wait (``OMP_WAIT_POLICY=PASSIVE``),
    unless the environment already sets a policy. Call before importing torch."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def release_freed_memory() -> bool:
    """Give the heap memory freed so far back to the operating system (glibc ``malloc_trim``).

    Loading a model frees large temporaries (onnxruntime: the parsed ONNX protobuf with
    every weight, and the originals of pre-packed weights), but glibc keeps freed heap
    pages in the process. Measured for the CLIP ViT-B-32 image encoder (fp32, 351 MB
    file, pre-packing on): 568 MB PSS after ``InferenceSession`` and 370 MB after this
    call, with the same speed. Returns False where there is no glibc (nothing is done).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return False
    if trim is None:
        return False
    trim(0)
    return True
