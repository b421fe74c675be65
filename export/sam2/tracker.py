"""Export the SAM 2 video tracker: ``sam2_frame_preprocess``, ``sam2_tracker`` and the
``sam2_track`` ensemble, beside the image models of ``export_sam2`` (it reuses their
``sam2_image_encoder``, so frames of concurrent streams batch together in the encoder).

================== ======== ===============================================================
model              backend  what it does
================== ======== ===============================================================
sam2_frame_        python   frame bytes -> FP32 [1, 3, S, S] as SAM2VideoPredictor loads
preprocess                  frames, and the frame's (height, width)
sam2_tracker       python   sequence batcher (``oldest``): per-stream memory bank, memory
                            attention, mask decoder, memory encoder (sam2's torch modules)
sam2_track         ensemble frame bytes + optional prompts -> per-object masks (one request
                            per frame on a Triton sequence)
================== ======== ===============================================================
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from tritonclient.grpc import model_config_pb2 as mc

from tritonlens.export.config import (Step, Tensor, add_warmup, ensemble_config, instance_kind,
                                      model_config, parse_config, warmup_image, write_model)
from tritonlens.export.repository import python_model_source
from tritonlens.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from tritonlens.serve.parameters import MAX_STREAMS_PARAMETER
from tritonlens.serve.sam2 import names

WEIGHTS_FILE = "sam2_tracker.pt"
# Triton's own limits, relative to the tracker's (see sequence_batching): its idle eviction
# comes after the tracker's, so a frame of a stream the tracker evicted still reaches the
# tracker, which says why; its candidate slots leave room for streams the tracker refused
# or evicted until Triton frees them, so a new stream is answered at once, never queued.
TRITON_IDLE_FACTOR = 2
CANDIDATE_FACTOR = 4
ENCODER = "sam2_image_encoder"
ENCODER_OUTPUTS = ("image_embedding", "high_res_feats_0", "high_res_feats_1")


@dataclass
class TrackerExportOptions:
    """How the tracker is served.

    Attributes:
        sam2_config: the sam2 packaged config name, e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``
            (the tracker rebuilds the video model with ``build_sam2_video_predictor``).
        image_size: S, the same as the image encoder's.
        idle_us: a stream with no frame for this long is evicted by the tracker (its state
            freed; its next frame is told so). Triton's ``max_sequence_idle_microseconds``
            is ``TRITON_IDLE_FACTOR`` times longer.
        max_streams: streams with state at once; the tracker refuses a START beyond it with
            a message naming the limit (Triton's ``max_candidate_sequences`` is
            ``CANDIDATE_FACTOR`` times larger, so nothing waits in Triton's queue).
        threads: torch intra-op threads of the tracker (0: every core the serving process
            may use, ``usable_cores()``, found when it loads; see :func:`encoder_threads`
            for why the tracker and the image encoder both take every core).
        compile: ``torch.compile`` the tracker's modules and mark CUDA-graph steps (GPU hosts).
        tracker: the tracker model's name; ensemble: the ensemble's name (tests export a
            second pair with a short idle limit).
    """

    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    image_size: int = 1024
    idle_us: int = 60_000_000
    max_streams: int = 64
    threads: int = 0
    compile: bool = False
    instance_kind: str = "KIND_CPU"
    tracker: str = "sam2_tracker"
    ensemble: str = "sam2_track"


def encoder_threads(instances: int) -> int:
    """Intra-op threads per image-encoder instance when the export's ``threads`` is 0: the
    usable cores (``os.sched_getaffinity``) split between the encoder's instances.

    With the video tracker exported, the tracker also takes every usable core (its
    ``threads`` "0"): one stream's frame alternates between the encoder and the tracker, so
    each gets the whole CPU while the other waits, and with several streams both run at once
    and share it. That is safe because the torch stubs wait passively
    (``OMP_WAIT_POLICY=PASSIVE``, ``tritonlens.serve.resources``); with libgomp's spinning
    default, oversubscribed threads collapsed throughput. Measured side by side on the
    2-core AVX2 host, SAM 2.1 tiny, 8 frames per stream (``python -m
    tritonlens.bench.sam2.streams``), half the cores each vs all the cores each: 256 px, 1 / 2 /
    4 / 8 streams 3.07 / 4.11 / 4.24 / 4.14 -> 5.05 / 5.15 / 5.50 / 5.41 frames/s; 512 px,
    1 / 2 / 4 streams 0.72 / 1.05 / 1.03 -> 1.29 / 1.34 / 1.34 frames/s.
    """
    from tritonlens.serve import resources

    return max(1, resources.usable_cores() // max(1, instances))


def sequence_batching(idle_us: int, max_streams: int) -> mc.ModelSequenceBatching:
    """Triton's sequence batcher for a stateful model, ``oldest`` strategy.

    ``idle_us`` and ``max_streams`` are the tracker's limits; Triton's are set
    ``TRITON_IDLE_FACTOR`` and ``CANDIDATE_FACTOR`` times larger (see those constants): with
    one instance, the capacity of ``oldest`` is ``max_candidate_sequences``, and a stream
    beyond it would wait silently in Triton's queue until another ends or is evicted.

    ``oldest`` rather than ``direct``: no padding slots (``direct`` fills empty slots below
    the highest busy one with READY=0 requests of uninitialised data), and one ``execute``
    never holds two frames of the same sequence, so frames stay in order per stream.
    Control inputs ``START`` and ``END`` (INT32 0/1) carry the request's sequence flags.
    No CORRID control input: the model reads ``request.correlation_id()``, which works for
    numeric and string IDs alike (a STRING CORRID input is broken in Triton 2.51 and a
    UINT64 one silently truncates string IDs).
    """
    control = mc.ModelSequenceBatching.Control
    return mc.ModelSequenceBatching(
        max_sequence_idle_microseconds=TRITON_IDLE_FACTOR * idle_us,
        oldest=mc.ModelSequenceBatching.StrategyOldest(
            max_candidate_sequences=CANDIDATE_FACTOR * max_streams,
                                                       max_queue_delay_microseconds=0),
        control_input=[
            mc.ModelSequenceBatching.ControlInput(name=name, control=[control(
                kind=kind, int32_false_true=[0, 1])])
            for name, kind in (("START", control.CONTROL_SEQUENCE_START),
                               ("END", control.CONTROL_SEQUENCE_END))])


def tracker_tensors(image_size: int) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of ``sam2_tracker``; E = S / 16."""
    e = image_size // 16
    inputs = [Tensor("image_embedding", "fp32", (1, 256, e, e)),
              Tensor("high_res_feats_0", "fp32", (1, 32, 4 * e, 4 * e)),
              Tensor("high_res_feats_1", "fp32", (1, 64, 2 * e, 2 * e)),
              Tensor("orig_size", "int32", (2,)), *prompt_tensors()]
    outputs = [Tensor("object_ids", "int32", (-1,)), Tensor("masks", "bool", (-1, -1, -1)),
               Tensor("mask_logits", "fp32", (-1, -1, -1)),
               Tensor("object_scores", "fp32", (-1,)), Tensor("frame_index", "int64", (1,))]
    return inputs, outputs


def prompt_tensors() -> list[Tensor]:
    """The optional per-frame inputs of ``sam2_tracker`` and ``sam2_track``: prompts (rules
    in ``tritonlens.serve.sam2.prompts``) and the client's frame index. The index is named
    ``client_frame_index``, not ``frame_index``: an ensemble input and output of one name
    are one tensor, and the output went missing when the request did not send it."""
    return [Tensor("point_coords", "fp32", (-1, 2), optional=True),
            Tensor("point_labels", "int32", (-1,), optional=True),
            Tensor("point_object_ids", "int32", (-1,), optional=True),
            Tensor("client_frame_index", "int64", (1,), optional=True)]


def export_sam2_tracker(sam: torch.nn.Module, repo: Path, options: TrackerExportOptions,
                        parameters: dict[str, str] | None = None) -> dict[str, str]:
    """Write ``sam2_frame_preprocess``, the tracker and its ensemble into ``repo``.

    Args:
        sam: the SAM 2 model whose image encoder ``export_sam2`` exported (its weights,
            without the Hiera trunk, are saved for the tracker as ``sam2_tracker.pt``).
        repo: the model repository; ``sam2_image_encoder`` must already be in it (its
            output names are read from its config, whatever its format).
        parameters: extra string parameters for every config (family, weights note ...).

    Raises:
        FileNotFoundError: no ``sam2_image_encoder`` in ``repo``.
    """
    from tritonlens.serve.sam2 import tracker_state_dict

    encoder_config = parse_config(repo / ENCODER / "config.pbtxt")
    encoder_outputs = [o.name for o in encoder_config.output]
    common = {**(parameters or {}), "image_size": str(options.image_size)}
    # 0: the tracker takes the cores it finds when it loads (the serving host's, which may
    # not be this one), as the image encoder does (encoder_threads).
    threads = max(0, int(options.threads))

    frame = Tensor("image", "bytes", (1,))
    s = options.image_size
    frame_config = model_config(
        "sam2_frame_preprocess", "python", [frame],
        [Tensor("pixels", "fp32", (1, 3, s, s)), Tensor("orig_size", "int32", (2,))],
        batching="none", instance_count=1,
        parameters={**common, "max_image_pixels": str(DEFAULT_MAX_PIXELS),
                    "max_image_bytes": str(DEFAULT_MAX_BYTES)})
    # model_warmup for the frame decoder only: the tracker warms itself in initialize
    # (StreamingTracker.warm_up, on its own streams' state), and an ensemble runs nothing
    # of its own (its steps' models are warmed).
    write_model(repo, frame_config, {"model.py": python_model_source("sam2_frame_preprocess")},
                extra=add_warmup(frame_config, {"image": warmup_image()}))

    inputs, outputs = tracker_tensors(s)
    config = model_config(
        options.tracker, "python", inputs, outputs,
        batching=sequence_batching(options.idle_us, options.max_streams),
        instance_kind=options.instance_kind,
        parameters={**common, "sam2_config": options.sam2_config, "weights_file": WEIGHTS_FILE,
                    "threads": str(threads), "compile": str(options.compile).lower(),
                    MAX_STREAMS_PARAMETER: str(options.max_streams),
                    names.STREAM_IDLE_SECONDS: f"{options.idle_us / 1e6:g}"})
    buffer = io.BytesIO()
    torch.save(tracker_state_dict(sam), buffer)
    write_model(repo, config, {"model.py": python_model_source("sam2_tracker"),
                               WEIGHTS_FILE: buffer.getvalue()})

    steps = [Step("sam2_frame_preprocess", {"image": "image"},
                  {"pixels": "pixels", "orig_size": "orig_size"}),
             Step(ENCODER, {encoder_config.input[0].name: "pixels"},
                  dict(zip(encoder_outputs, ENCODER_OUTPUTS))),
             Step(options.tracker,
                  {**{n: n for n in (*ENCODER_OUTPUTS, "orig_size")},
                   **{t.name: t.name for t in prompt_tensors()}},
                  {t.name: t.name for t in outputs})]
    write_model(repo, ensemble_config(options.ensemble, [frame, *prompt_tensors()], outputs,
                                      steps, max_batch_size=0))
    return {"tracker": options.tracker, "ensemble": options.ensemble,
            "idle_seconds": f"{options.idle_us / 1e6:g}", "max_streams": str(options.max_streams)}


def export_tracker_beside_image_models(sam: torch.nn.Module, repo: Path, options,
                                       parameters: dict[str, str]) -> dict[str, str]:
    """What ``export_sam2`` calls: the tracker at the image export's config, size and
    threads (``options`` is its ``Sam2ExportOptions``). Configs given as a YAML path
    outside sam2's package are not supported by the tracker yet (it rebuilds the video
    model by config name): it is skipped, and the summary says so."""
    from tritonlens.export.sam2.export import resolve_config

    name, directory = resolve_config(options.config)
    if directory is not None:
        return {"tracker": f"skipped: the tracker needs a config packaged with sam2, not {name}"}
    return export_sam2_tracker(sam, repo, TrackerExportOptions(
        sam2_config=name, image_size=options.image_size, threads=options.threads,
        max_streams=options.max_streams, idle_us=int(options.stream_idle_seconds * 1e6),
        instance_kind=instance_kind(options.device)), parameters)

