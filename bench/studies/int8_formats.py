"""Measure every int8 format of :data:`onnx_variants.INT8_FORMATS` on this host's CPU.

    python -m tritonlens.bench.studies.int8_formats [--clip-model ViT-B-32] [--sam2-size 512]

Exports CLIP's image encoder and SAM 2.1 hiera-tiny's image encoder and prompt decoder to
fp32 ONNX (seeded random weights, through the real exports), quantizes the encoders in each
format, and runs fp32 and every format side by side in this process with onnxruntime (same
thread count: the host's cores; rows timed in interleaved turns, median). Prints the host's
ISA (:func:`host_isa`) and one table:

* CLIP: cosine of each image embedding with fp32's (min over the sample photos) and images/s
  (batch 8);
* SAM 2: cosine of the encoder's three feature maps with fp32's (min over photos and maps),
  IoU of the masks that the fp32 prompt decoder makes from those features with the masks it
  makes from fp32's (min and mean over photos x 4 prompts x 3 multimask outputs), and
  images/s (batch 1).

An extra row runs ``s8-per-channel`` with onnxruntime's ``session.x64quantprecision``
session option (a serving-side switch that turns u8 x s8 products into u8 x u8 on x86 hosts
without VNNI; tritonlens does not set it, since an exported graph must be right without it).
Agreement is what decides :data:`onnx_variants.INT8_FORMAT`; docs/precision.md's "CPU hosts, low
memory, and precision" section has this table from the hosts it was run on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tritonlens.export.onnx_variants import INT8_FORMAT, INT8_FORMATS, host_isa, quantize_int8

# Prompts for the SAM 2 decoder, as fractions of the image side (those of tests/server/test_sam2_parity).
PROMPTS = [
    ([(0.5, 0.45)], [1]),
    ([(0.5, 0.45), (0.15, 0.85), (0.7, 0.3)], [1, 0, 1]),
    ([(0.2, 0.15), (0.8, 0.9)], [2, 3]),  # a box: top-left and bottom-right corners
    ([(0.2, 0.15), (0.8, 0.9), (0.5, 0.5), (0.25, 0.2)], [2, 3, 1, 0]),
]
EXTRA = "s8-per-channel+x64quantprecision"


def session(path: Path, threads: int, x64quantprecision: bool = False):
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if x64quantprecision:
        options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def images_per_second(runs: dict, batch: int, seconds: float, rounds: int = 5) -> dict[str, float]:
    """name -> median images/s of ``runs[name]()`` (one batch of ``batch`` images).

    The rows are timed in turn, ``rounds`` times (one warm-up call each first), each turn
    for at least ``seconds / rounds`` and one call, so that load from other processes on a
    shared host falls on every row alike.
    """
    for run in runs.values():
        run()
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            count, start = 0, time.perf_counter()
            while count < 1 or time.perf_counter() - start < seconds / rounds:
                run()
                count += 1
            speeds[name].append(count * batch / (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in speeds.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [N, D] arrays."""
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def variants(fp32: Path, work: Path, formats: list[str]) -> dict[str, tuple[Path, bool]]:
    """row name -> (ONNX file, x64quantprecision): fp32, each format, and the extra row."""
    work.mkdir(parents=True, exist_ok=True)
    rows = {"fp32": (fp32, False)}
    for fmt in formats:
        path = work / f"{fmt}.onnx"
        shutil.copy(fp32, path)
        rows[fmt] = (quantize_int8(path, fmt), False)
    if "s8-per-channel" in rows:
        rows[EXTRA] = (rows["s8-per-channel"][0], True)
    return rows


def measure_clip(model: str, photos: list[Path], work: Path, formats: list[str], threads: int,
                 seconds: float) -> dict[str, dict[str, float]]:
    """CLIP image encoder: row -> {clip cosine min, clip images/s}."""
    from PIL import Image, ImageOps

    from tritonlens.export.clip import ClipExportOptions, export_clip

    repo = work / "clip_repo"
    export_clip(ClipExportOptions(model=model, labels=["a", "b"], text=False, max_batch_size=8), repo)
    fp32 = repo / "clip_image_encoder" / "1" / "model.onnx"
    size = 224
    pixels = np.stack([np.asarray(ImageOps.fit(Image.open(p).convert("RGB"), (size, size),
                                               Image.BICUBIC)) for p in photos])
    batch = np.resize(pixels, (8, *pixels.shape[1:]))  # 8 images: the photos, repeated
    results, expected, runs = {}, None, {}
    for name, (path, flag) in variants(fp32, work / "clip", formats).items():
        sess = session(path, threads, flag)
        (embedding,) = sess.run(None, {"pixels": pixels})
        expected = embedding if expected is None else expected
        runs[name] = lambda sess=sess: sess.run(None, {"pixels": batch})
        results[name] = {"clip cosine min": float(cosine(embedding, expected).min())}
        print(f"  clip {name}: {results[name]}", flush=True)
    for name, speed in images_per_second(runs, len(batch), seconds).items():
        results[name]["clip images/s"] = speed
    return results


def measure_sam2(size: int, photos: list[Path], work: Path, formats: list[str], threads: int,
                 seconds: float) -> dict[str, dict[str, float]]:
    """SAM 2.1 hiera-tiny image encoder at ``size`` px: row -> {sam2 feature cosine min,
    sam2 mask IoU min, sam2 mask IoU mean, sam2 images/s}."""
    from PIL import Image

    from tritonlens.client.sam2 import mask_iou
    from tritonlens.export.sam2 import Sam2ExportOptions, export_sam2
    from tritonlens.serve.sam2.frames import frame_pixels

    repo = work / "sam2_repo"
    export_sam2(Sam2ExportOptions(config="sam2.1_hiera_t", checkpoint=None, image_size=size,
                                  fmt="onnx", video=False), repo)
    fp32 = repo / "sam2_image_encoder" / "1" / "model.onnx"
    decoder = session(repo / "sam2_prompt_decoder" / "1" / "model.onnx", threads)
    low_res = size // 4
    images = [frame_pixels(Image.open(p), size).numpy()[None] for p in photos]

    def masks(features: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for points, labels in PROMPTS:
            feeds = dict(zip(("image_embedding", "high_res_feats_0", "high_res_feats_1"), features))
            feeds.update(point_coords=np.array(points, np.float32) * size,
                         point_labels=np.array(labels, np.int32),
                         mask_input=np.zeros((1, low_res, low_res), np.float32),
                         has_mask_input=np.zeros(1, np.float32),
                         multimask_output=np.ones(1, bool),
                         orig_size=np.array([size, size], np.int32))
            out += list(decoder.run(["masks"], feeds)[0])
        return out

    results, expected, runs = {}, None, {}
    for name, (path, flag) in variants(fp32, work / "sam2", formats).items():
        sess = session(path, threads, flag)
        features = [sess.run(None, {"pixels": x}) for x in images]
        got = [(f, masks(f)) for f in features]
        expected = got if expected is None else expected
        cosines = [cosine(a.reshape(1, -1), b.reshape(1, -1))[0]
                   for (fa, _), (fb, _) in zip(got, expected) for a, b in zip(fa, fb)]
        ious = [mask_iou(a, b) for (_, ma), (_, mb) in zip(got, expected) for a, b in zip(ma, mb)]
        runs[name] = lambda sess=sess: sess.run(None, {"pixels": images[0]})
        results[name] = {"sam2 feature cosine min": float(min(cosines)),
                         "sam2 mask IoU min": float(min(ious)),
                         "sam2 mask IoU mean": float(np.mean(ious))}
        print(f"  sam2 {name}: {results[name]}", flush=True)
    for name, speed in images_per_second(runs, 1, seconds).items():
        results[name]["sam2 images/s"] = speed
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture ('' skips CLIP)")
    parser.add_argument("--sam2-size", type=int, default=512, help="SAM 2 input size in px (0 skips SAM 2)")
    parser.add_argument("--formats", default=",".join(INT8_FORMATS), help="comma-separated formats")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="timing per row and model, in 5 interleaved turns")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    for fmt in formats:
        if fmt not in INT8_FORMATS:
            parser.error(f"unknown format {fmt!r}; one of {', '.join(INT8_FORMATS)}")

    import onnxruntime

    from tritonlens.client.demo import write_sample_photos

    isa = host_isa()
    print(f"ISA: {isa}; onnxruntime {onnxruntime.__version__}; {args.threads} threads; "
          f"load average before {os.getloadavg()[0]:.2f}; default format {INT8_FORMAT}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = write_sample_photos(work / "photos")
        rows: dict[str, dict[str, float]] = {}
        if args.clip_model:
            for name, values in measure_clip(args.clip_model, photos, work, formats, args.threads,
                                             args.seconds).items():
                rows.setdefault(name, {}).update(values)
        if args.sam2_size:
            for name, values in measure_sam2(args.sam2_size, photos, work, formats, args.threads,
                                             args.seconds).items():
                rows.setdefault(name, {}).update(values)
    columns = sorted({c for values in rows.values() for c in values},
                     key=lambda c: (not c.startswith("clip"), c.endswith("images/s"), c))
    print(f"\nint8 formats vs fp32 on ISA: {isa} (onnxruntime {onnxruntime.__version__}, "
          f"{args.threads} threads, CLIP {args.clip_model or '-'}, SAM 2 {args.sam2_size or '-'} px; "
          f"load average after {os.getloadavg()[0]:.2f})\n")
    print("| format | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, values in rows.items():
        cells = ["" if c not in values else f"{values[c]:.2f}" if c.endswith("images/s")
                 else f"{values[c]:.4f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
