"""The GPU checks of tritonlens in one command, for a session that has a GPU.

    python -m tritonlens.bench.studies.gpu                        # on a CUDA host: everything
    python -m tritonlens.bench.studies.gpu --device cpu --quick   # the same code path on a CPU (smoke)

What it measures and prints (Markdown tables, the device named in the first line):

1. **fp16 CLIP towers** (in-process torch): cosine of the fp16 image embedding against fp32
   on real photos, and images/s of both at batch 1, 8 and 32.
2. **The compiled SAM 2 tracker**: ``--streams`` interleaved streams of ``--frames`` frames
   each (pan/zoom clips over different real photos), once eager and once with the image
   encoder compiled in ``--compile-mode`` (``reduce-overhead`` = CUDA graphs on a GPU) and
   the tracker's modules compiled (``StreamingTracker(compile=True)``). Passes when no
   "overwritten by a subsequent run" error occurs and every mask equals the eager one (IoU
   >= 0.99 per frame and object; the minimum is printed). Then the same compiled run with
   the clone at the step boundary removed (``StreamingTracker._keep`` made the identity):
   it is expected to fail or disagree on a GPU, which shows that the clone is what makes
   the compiled path safe (sam2 issue #460). Also frames/s of both runs.
3. **Served on the device**: CLIP (TorchScript, ``--device gpu`` export) through a real
   tritonserver vs the same model in-process, images/s at batch 1/8/32 per request.

Exit status 0 when every check passed, 1 otherwise. Nothing here is a test-suite timing
assertion: the figures are for the docs' GPU table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat", "horse", "immunohistochemistry")


def describe(device: str) -> str:
    """One line naming the device, torch and CUDA versions."""
    if device.startswith("cuda"):
        return (f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}")
    from tritonlens.export.onnx_variants import host_isa

    return f"CPU ({host_isa()}), torch {torch.__version__}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def photo(i: int) -> np.ndarray:
    """The ``i``-th real photo of PHOTOS (scikit-image, cycling), RGB HWC uint8."""
    import skimage.data

    image = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]


def photos_uint8(size: int, count: int) -> list[np.ndarray]:
    """``count`` real photos resized to size x size, HWC uint8."""
    from PIL import Image

    return [np.asarray(Image.fromarray(photo(i)).resize((size, size))) for i in range(count)]


def images_per_s(run, batch: torch.Tensor, device: str, repeats: int) -> float:
    """Images per second of ``run(batch)`` (one warm-up call, then ``repeats`` timed)."""
    run(batch)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run(batch)
    sync(device)
    return repeats * batch.shape[0] / (time.perf_counter() - start)


# -- 1. fp16 CLIP ----------------------------------------------------------------------------
def clip_fp16(model_name: str, device: str, batches: list[int], repeats: int) -> tuple[bool, str]:
    """fp16 vs fp32 image tower of ``model_name`` (seeded random weights) on ``device``."""
    from tritonlens.export.clip.export import load_open_clip
    from tritonlens.export.clip.modules import ImageEncoder

    clip, cfg, _ = load_open_clip(model_name, None, seed=0)
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    fp32 = ImageEncoder(clip, cfg["mean"], cfg["std"], torch.float32).to(device).eval()
    fp16 = ImageEncoder(copy.deepcopy(clip), cfg["mean"], cfg["std"], torch.float16).to(device).eval()
    pixels = torch.from_numpy(np.stack(photos_uint8(size, max(batches)))).to(device)
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(fp32(pixels), fp16(pixels).float(), dim=-1)
        rows = ["| batch | fp32 images/s | fp16 images/s | fp16 / fp32 |", "|---|---|---|---|"]
        for b in batches:
            a = images_per_s(fp32, pixels[:b], device, repeats)
            h = images_per_s(fp16, pixels[:b], device, repeats)
            rows.append(f"| {b} | {a:.1f} | {h:.1f} | {h / a:.2f}x |")
    ok = float(cos.min()) >= 0.999
    text = (f"fp16 vs fp32 image embedding cosine: min {float(cos.min()):.5f}, mean "
            f"{float(cos.mean()):.5f} over {len(cos)} photos (needs >= 0.999): "
            f"{'PASS' if ok else 'FAIL'}\n\n" + "\n".join(rows))
    return ok, text


# -- 2. the compiled tracker --------------------------------------------------------------------
def stream_frames(streams: int, frames: int) -> list[list[np.ndarray]]:
    """One pan/zoom clip per stream, each over a different real photo (HWC uint8)."""
    from tritonlens.client.sam2.video import pan_zoom_frames

    return [pan_zoom_frames(photo(s), frames) for s in range(streams)]


def run_tracker(weights: dict, image_size: int, clips: list[list[np.ndarray]], device: str,
                compile_mode: str | None, keep_clone: bool = True):
    """Track one centre click per stream through ``clips`` with frames interleaved
    (frame t of every stream before frame t+1 of any).

    Returns ``(masks, frames_per_s, error)``: masks[stream][t] is a bool [H, W] array (the
    object's mask); frames/s counts from the third frame of each stream on (the first two
    include compilation and the first prompt); ``error`` the text of an exception that
    stopped the run (None if none).
    """
    from tritonlens.export.sam2.modules import ImageEncoder
    from tritonlens.serve.sam2 import ObjectPrompt, StreamingTracker
    from tritonlens.serve.sam2.build import build_video_model
    from tritonlens.serve.sam2.frames import frame_pixels
    from PIL import Image

    model = build_video_model(SAM2_CONFIG, image_size, weights, device=device)
    encoder = ImageEncoder(model, image_size).to(device).eval()
    if compile_mode:
        encoder = torch.compile(encoder, mode=compile_mode, dynamic=False)
    tracker = StreamingTracker(model, compile=compile_mode is not None)
    saved_keep = StreamingTracker._keep
    if not keep_clone:
        StreamingTracker._keep = lambda self, out: out  # the clone at the step boundary removed
    masks: list[list[np.ndarray]] = [[] for _ in clips]
    error = None
    count, start = 0, time.perf_counter()
    try:
        with torch.inference_mode():
            for s in range(len(clips)):
                tracker.start(s)
            for t in range(len(clips[0])):
                if t == min(2, len(clips[0]) - 1):  # frames/s after compilation and warm-up
                    sync(device)
                    count, start = 0, time.perf_counter()
                for s, clip in enumerate(clips):
                    frame = clip[t]
                    if compile_mode:
                        torch.compiler.cudagraph_mark_step_begin()
                    pixels = frame_pixels(Image.fromarray(frame), image_size).unsqueeze(0).to(device)
                    features = tracker.features_from_image_embedding(*encoder(pixels))
                    h, w = frame.shape[:2]
                    prompts = None
                    if t == 0:
                        prompts = OrderedDict([(1, ObjectPrompt(
                            torch.tensor([[w / 2, h / 2]]), torch.tensor([1], dtype=torch.int32)))])
                    result = tracker.step(s, features, (h, w), prompts)
                    masks[s].append(np.asarray(result.masks[0]).astype(bool).reshape(h, w))
                    count += 1
            sync(device)
    except Exception as err:  # noqa: BLE001 - reported, the run is a measurement
        error = f"{type(err).__name__}: {err}"
    finally:
        StreamingTracker._keep = saved_keep
    return masks, count / (time.perf_counter() - start), error


def compiled_tracker(image_size: int, streams: int, frames: int, device: str,
                     compile_mode: str) -> tuple[bool, str]:
    """Eager vs compiled tracker on the same interleaved streams (see the module docstring)."""
    from tritonlens.client.sam2 import mask_iou
    from tritonlens.serve.sam2.build import build_video_model

    torch.manual_seed(7)
    weights = build_video_model(SAM2_CONFIG, image_size).state_dict()
    clips = stream_frames(streams, frames)
    eager, eager_fps, eager_err = run_tracker(weights, image_size, clips, device, None)
    compiled, fps, err = run_tracker(weights, image_size, clips, device, compile_mode)
    ious = [mask_iou(a, b) for se, sc in zip(eager, compiled) for a, b in zip(se, sc)]
    complete = len(ious) == streams * frames
    ok = eager_err is None and err is None and complete and min(ious) >= 0.99
    unsafe, _, unsafe_err = run_tracker(weights, image_size, clips, device, compile_mode,
                                        keep_clone=False)
    unsafe_ious = [mask_iou(a, b) for se, sc in zip(eager, unsafe) for a, b in zip(se, sc)]
    lines = [
        f"{streams} interleaved streams x {frames} frames at {image_size} px, compile mode "
        f"{compile_mode!r}: {'PASS' if ok else 'FAIL'}",
        f"- eager: {eager_fps:.2f} frames/s" + (f", error: {eager_err}" if eager_err else ""),
        f"- compiled: {fps:.2f} frames/s, mask IoU vs eager min "
        f"{min(ious) if ious else float('nan'):.4f} over {len(ious)} masks"
        + (f", error: {err}" if err else ""),
        f"- compiled without the clone at the step boundary: "
        + (f"error: {unsafe_err}" if unsafe_err else
           f"no error, mask IoU vs eager min {min(unsafe_ious) if unsafe_ious else float('nan'):.4f}")
        + " (on a GPU with CUDA graphs an error or disagreement here shows the clone is needed)",
    ]
    return ok, "\n".join(lines)


# -- 3. served CLIP on the device ----------------------------------------------------------------
def served_clip(model_name: str, device: str, batches: list[int], repeats: int) -> tuple[bool, str]:
    """CLIP exported as TorchScript for ``device`` and served by a real tritonserver vs the
    same model in-process (open_clip preprocess + encode): images/s at each batch size, and
    the cosine between the served and in-process embeddings."""
    import io

    import open_clip
    from PIL import Image

    from tritonlens.client.clip import ClipClient
    from tritonlens.export.clip import ClipExportOptions, export_clip
    from tritonlens.launcher import TritonServer

    torch.manual_seed(0)
    clip = open_clip.create_model(model_name, pretrained=None)
    photos = photos_uint8(320, max(batches))
    jpegs = []
    for photo in photos:
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="JPEG", quality=95)
        jpegs.append(buffer.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "clip.pt"
        torch.save(clip.state_dict(), checkpoint)
        reference, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=str(checkpoint))
        reference = reference.to(device).eval()
        repo = Path(tmp) / "repo"
        export_clip(ClipExportOptions(model=model_name, pretrained=str(checkpoint), labels=["a", "b"],
                                      templates=["a photo of a {}."], fmt="torchscript",
                                      device="gpu" if device.startswith("cuda") else "cpu",
                                      max_batch_size=max(batches)), repo)
        rows = ["| batch | served images/s | in-process images/s | served / in-process |",
                "|---|---|---|---|"]
        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                          log_file=Path(tmp) / "server.log") as server:
            client = ClipClient(server.grpc_url)
            served = client.embed_images(jpegs)

            def in_process(items):
                batch = torch.stack([preprocess(Image.open(io.BytesIO(j)).convert("RGB"))
                                     for j in items]).to(device)
                with torch.inference_mode():
                    emb = reference.encode_image(batch)
                return torch.nn.functional.normalize(emb, dim=-1).float().cpu().numpy()

            local = in_process(jpegs)
            cos = (served * local).sum(-1) / (np.linalg.norm(served, axis=-1) * np.linalg.norm(local, axis=-1))
            for b in batches:
                rates = []
                for run in (client.embed_images, in_process):
                    run(jpegs[:b])
                    start = time.perf_counter()
                    for _ in range(repeats):
                        run(jpegs[:b])
                    sync(device)
                    rates.append(repeats * b / (time.perf_counter() - start))
                rows.append(f"| {b} | {rates[0]:.1f} | {rates[1]:.1f} | {rates[0] / rates[1]:.2f}x |")
    ok = float(cos.min()) >= 0.9999
    return ok, (f"served vs in-process embedding cosine min {float(cos.min()):.6f} (needs >= 0.9999): "
                f"{'PASS' if ok else 'FAIL'}\n\n" + "\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (smoke run)")
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--image-size", type=int, default=1024, help="SAM 2 input size (px)")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--frames", type=int, default=300, help="frames per stream")
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        help="torch.compile mode of the image encoder (reduce-overhead = CUDA graphs)")
    parser.add_argument("--quick", action="store_true",
                        help="ViT-S-32, SAM 2 at 256 px, 2 streams x 6 frames, batches 1 and 4")
    parser.add_argument("--skip", action="append", default=[], choices=["fp16", "tracker", "served"])
    args = parser.parse_args(argv)
    batches, repeats = [1, 8, 32], 10
    if args.quick:
        args.clip_model, args.image_size, args.streams, args.frames = "ViT-S-32", 256, 2, 6
        batches, repeats = [1, 4], 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device: use --device cpu for a smoke run")
    print(f"# tritonlens GPU checks on {describe(args.device)}\n")
    results = []
    steps = [("fp16", "1. fp16 CLIP image tower vs fp32 (in-process)",
              lambda: clip_fp16(args.clip_model, args.device, batches, repeats)),
             ("tracker", "2. Compiled SAM 2 tracker over interleaved streams",
              lambda: compiled_tracker(args.image_size, args.streams, args.frames, args.device,
                                       args.compile_mode)),
             ("served", "3. CLIP served on this device vs in-process",
              lambda: served_clip(args.clip_model, args.device, batches, repeats))]
    for key, title, step in steps:
        if key in args.skip:
            continue
        print(f"## {title}\n", flush=True)
        ok, text = step()
        results.append(ok)
        print(text + "\n", flush=True)
    print("all checks passed" if results and all(results) else "SOME CHECKS FAILED")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
