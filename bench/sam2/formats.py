"""Measure what ``--format auto`` chooses: each SAM 2 graph in torch, TorchScript and ONNX.

Run on the host that will serve, with nothing else running::

    python -m tritonlens.bench.sam2.formats --image-size 1024 --threads 2

It exports the image encoder and the prompt decoder both ways into a temporary folder, and
prints the median seconds per call of eager torch, TorchScript (``torch.jit.load``) and
onnxruntime (CPU execution provider), one image / one prompt of 3 points, fp32, with the
given intra-op thread count. ``AUTO_FORMAT`` in ``export/sam2/export.py`` records the figures of the
project's 2-core host.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from tritonlens.export.core import save_graph
from tritonlens.export.sam2.export import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS, load_sam2
from tritonlens.export.sam2.modules import ImageEncoder, PromptDecoder


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after 2 warm-up calls
    (TorchScript's profiling executor optimises during its first calls)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(config: str, image_size: int, threads: int, repeats: int) -> dict[str, dict[str, float]]:
    """{graph: {engine: median seconds}} for the image encoder and the prompt decoder."""
    import onnxruntime as ort

    torch.set_num_threads(threads)
    sam, _ = load_sam2(config, None, image_size)
    encoder, decoder = ImageEncoder(sam, image_size).eval(), PromptDecoder(sam).eval()
    pixels = torch.randn(1, 3, image_size, image_size)
    with torch.no_grad():
        features = encoder(pixels)
    low_res = image_size // 4
    prompt = (*features, torch.tensor([[100.0, 120.0], [300.0, 200.0], [50.0, 60.0]]),
              torch.tensor([1, 1, 0], dtype=torch.int32), torch.zeros(1, low_res, low_res),
              torch.zeros(1), torch.tensor([True]), torch.tensor([480, 640], dtype=torch.int32))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, example, inputs, outputs, axes in (
            ("sam2_image_encoder", encoder, (pixels,), ("pixels",), ENCODER_OUTPUTS,
             {n: {0: "batch"} for n in ("pixels", *ENCODER_OUTPUTS)}),
            ("sam2_prompt_decoder", decoder, prompt, DECODER_INPUTS, DECODER_OUTPUTS,
             {"point_coords": {0: "points"}, "point_labels": {0: "points"}}),
        ):
            paths = {}
            for fmt in ("onnx", "torchscript"):
                work = Path(tmp) / f"{name}-{fmt}"
                work.mkdir()
                (paths[fmt],) = save_graph(module, example, inputs, outputs, axes, fmt, 17,
                                           work).values()
            scripted = torch.jit.load(str(paths["torchscript"])).eval()
            session = ort.InferenceSession(str(paths["onnx"]), options,
                                           providers=["CPUExecutionProvider"])
            feed = {n: t.numpy() for n, t in zip(inputs, example)}

            def run_torch(m=module):
                with torch.inference_mode():
                    m(*example)

            def run_script(m=scripted):
                with torch.inference_mode():
                    m(*example)

            results[name] = {
                "torch": median_seconds(run_torch, repeats),
                "torchscript": median_seconds(run_script, repeats),
                "onnxruntime": median_seconds(lambda: session.run(None, feed), repeats),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = measure(args.config, args.image_size, args.threads, args.repeats)
    print(f"{args.config}, {args.image_size} px, {args.threads} threads, fp32, median s/call")
    for graph, times in results.items():
        best = min(times, key=times.get)
        print(f"  {graph:20s} " + "  ".join(f"{k} {v:.4f}" for k, v in times.items())
              + f"  -> fastest: {best}")


if __name__ == "__main__":
    main()
