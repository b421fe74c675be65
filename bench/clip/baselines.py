"""In-process baselines, measured in the same run on the same inputs as Triton.

* :func:`torch_encoder`: open_clip in torch, in this process, running exactly the module
  that was exported (``ImageEncoder``: uint8 pixels -> unit-norm embedding), per batch size.
* :func:`onnxruntime_encoder`: a raw onnxruntime session on the exported ONNX file of the
  image encoder (same fp32 precision as served), per batch size.
* :func:`naive_path`: one real subprocess per image (``python -m tritonlens.bench.clip.naive``)
  that loads the model, encodes the label texts and classifies that one image.

Throughputs are images per second; the best batch size is reported with each curve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import psutil


@dataclass
class BatchCurve:
    """Images per second of one in-process engine at each batch size.

    Attributes:
        engine: e.g. ``torch fp32`` or ``onnxruntime fp32``.
        threads: intra-op threads the engine used.
        images_per_s: batch size -> images per second.
        peak_rss_mb: this process's RSS after the runs (MB), for context.
    """

    engine: str
    threads: int
    images_per_s: dict[int, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0

    @property
    def best_batch(self) -> int:
        return max(self.images_per_s, key=self.images_per_s.get)

    @property
    def best(self) -> float:
        return self.images_per_s[self.best_batch]

    def to_dict(self) -> dict:
        return {**asdict(self), "best_batch": self.best_batch, "best_images_per_s": self.best}


def time_batches(run: Callable[[np.ndarray], object], images: list[np.ndarray],
                 batch_sizes: list[int], seconds: float) -> dict[int, float]:
    """Images per second of ``run`` on batches cycled from ``images``.

    For each batch size: two warm-up calls, then calls until ``seconds`` (s) have passed and
    at least two batches ran.
    """
    result = {}
    for size in batch_sizes:
        batch = np.stack([images[i % len(images)] for i in range(size)])
        run(batch)  # warm-up (allocations, thread pools, kernel selection per shape)
        run(batch)
        done, started = 0, time.perf_counter()
        while done < 2 or time.perf_counter() - started < seconds:
            run(batch)
            done += 1
        result[size] = done * size / (time.perf_counter() - started)
    return result


def torch_encoder(model_name: str, pretrained: str, pixels: list[np.ndarray],
                  batch_sizes: list[int], seconds: float, threads: int, seed: int = 0) -> BatchCurve:
    """open_clip's image tower in torch fp32, in-process, on the same pixels as Triton gets."""
    import torch

    from tritonlens.export.clip.export import load_open_clip
    from tritonlens.export.clip.modules import ImageEncoder

    torch.set_num_threads(threads)
    clip, cfg, _ = load_open_clip(model_name, None if pretrained in ("", "none", "random") else pretrained, seed)
    encoder = ImageEncoder(clip, cfg["mean"], cfg["std"]).eval()

    def run(batch: np.ndarray):
        with torch.inference_mode():
            return encoder(torch.from_numpy(batch))

    curve = BatchCurve("torch fp32 (open_clip)", threads,
                       time_batches(run, pixels, batch_sizes, seconds))
    curve.peak_rss_mb = psutil.Process().memory_info().rss / 2**20
    return curve


def onnxruntime_encoder(onnx_path: Path, pixels: list[np.ndarray], batch_sizes: list[int],
                        seconds: float, threads: int) -> BatchCurve:
    """A raw onnxruntime session (CPU EP) on the exported image encoder ONNX file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    curve = BatchCurve("onnxruntime fp32 (raw session)", threads, time_batches(
        lambda batch: session.run(None, {"pixels": batch}), pixels, batch_sizes, seconds))
    curve.peak_rss_mb = psutil.Process().memory_info().rss / 2**20
    return curve


@dataclass
class NaiveRun:
    """The naive path over a few images: one process per image.

    Attributes:
        seconds_per_image: wall time of each process, start to exit (s).
        peak_rss_mb: peak RSS of each process (MB).
        top5: each process's answer (label, probability), to show it really classified.
    """

    images: list[str] = field(default_factory=list)
    seconds_per_image: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    top5: list[list] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return len(self.seconds_per_image) / sum(self.seconds_per_image)

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s,
                "mean_seconds_per_image": sum(self.seconds_per_image) / len(self.seconds_per_image)}


def naive_path(model_name: str, pretrained: str, labels_file: Path, templates_file: Path,
               images: list[Path], threads: int, timeout_s: float = 300.0) -> NaiveRun:
    """Run the naive script once per image, in sequence, as real subprocesses.

    Raises:
        RuntimeError: a process failed (its stderr tail is in the message).
    """
    run = NaiveRun()
    env = dict(os.environ)
    for image in images:
        cmd = [sys.executable, "-m", "tritonlens.bench.clip.naive", "--model", model_name,
               "--pretrained", pretrained, "--labels", str(labels_file),
               "--templates", str(templates_file), "--image", str(image),
               "--threads", str(threads)]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"naive path failed on {image.name} (exit {proc.returncode}): "
                               f"{proc.stderr[-1500:]}")
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        run.images.append(image.name)
        run.seconds_per_image.append(elapsed)
        run.peak_rss_mb.append(answer["peak_rss_mb"])
        run.top5.append(answer["top5"])
    return run
