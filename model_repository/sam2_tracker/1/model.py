"""sam2_tracker: SAM 2 video tracking as a stateful model (Triton sequence batcher).

One request is one frame of one stream; the stream is the request's sequence (correlation
ID, numeric or string, read with ``request.correlation_id()``), START/END come from the
sequence flags (control inputs ``START`` and ``END``). The work is done by
``tritonlens.serve.sam2.StreamingTracker`` (memory attention, mask decoder and memory
encoder with sam2's modules, a bounded memory bank per stream); this file only parses the
config, reads tensors and turns errors into per-request error responses.

Inputs (S = image size, E = S / 16): ``image_embedding`` FP32 [1, 256, E, E] (the encoder's
stride-16 level + no_mem_embed), ``high_res_feats_0`` FP32 [1, 32, 4E, 4E],
``high_res_feats_1`` FP32 [1, 64, 2E, 2E], ``orig_size`` INT32 [2] (frame height, width);
optional ``point_coords`` FP32 [P, 2] (pixels), ``point_labels`` INT32 [P] (1/0 clicks,
2/3 box corners), ``point_object_ids`` INT32 [P] (absent: every point is object 1),
``client_frame_index`` INT64 [1] (checked against the stream's next frame). Prompts are
checked by ``tritonlens.serve.sam2.prompts`` (the rules and limits of ``sam2_prompts``).
Outputs (K objects): ``object_ids`` INT32 [K], ``masks`` BOOL [K, H, W], ``mask_logits``
FP32 [K, H, W], ``object_scores`` FP32 [K], ``frame_index`` INT64 [1] (always).

State: START resets the stream (a repeated START too); END frees it after the frame.
Parameters ``max_streams`` and ``stream_idle_seconds`` (written by the export; named in
``tritonlens.serve.parameters`` / ``.sam2.names``): a START beyond ``max_streams`` streams
with state is refused with a message naming the limit;
streams idle longer than ``stream_idle_seconds`` (seconds, finite and above 0; missing or
anything else fails the load with a ``ConfigError`` naming it) are freed by a sweep (on
every ``execute`` and from a timer thread) and logged, and their next frame is told they
were evicted.
The number of streams with state is the Prometheus gauge ``tritonlens_sam2_tracker_streams``
(label ``model``) on Triton's metrics endpoint, set after every ``execute`` and sweep.
Triton's own ``max_sequence_idle_microseconds`` is set longer (the export's
``TRITON_IDLE_FACTOR``), so the tracker, not Triton, is the one that evicts; every refusal
is INVALID_ARG (``tritonlens.serve.errors``).
"""

import math
import threading

from tritonlens.serve.resources import passive_openmp, release_freed_memory, usable_cores

passive_openmp()  # before torch loads libgomp: see tritonlens.serve.resources

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from tritonlens.serve.errors import response_for_exception  # noqa: E402
from tritonlens.serve.model_config import ConfigError, read_model_config  # noqa: E402
from tritonlens.serve.parameters import MAX_STREAMS_PARAMETER, WEIGHTS_PARAMETER  # noqa: E402
from tritonlens.serve.sam2 import (StreamingTracker, build_video_model,  # noqa: E402
                                   parse_prompts)
from tritonlens.serve.sam2 import names  # noqa: E402

OUTPUTS = ("object_ids", "masks", "mask_logits", "object_scores", "frame_index")


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        spec = read_model_config(args["model_config"])
        params = spec.parameters
        self.name = spec.name
        # Checked before the model is built, so a bad config fails the load at once.
        self.idle_s = spec.number(names.STREAM_IDLE_SECONDS)  # ConfigError: missing, not a number
        if not (math.isfinite(self.idle_s) and self.idle_s > 0):
            raise ConfigError(f"{self.name}: config parameter '{names.STREAM_IDLE_SECONDS}' must be a "
                              f"finite number of seconds above 0, not {self.idle_s:g}")
        # "0" (or a config written before the parameter): every usable core, as the image
        # encoder (tritonlens.export.sam2.tracker.encoder_threads says why).
        threads = int(params.get("threads", "0") or 0) or usable_cores()
        torch.set_num_threads(threads)
        weights = f"{args['model_repository']}/{args['model_version']}/{params['weights_file']}"
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":  # the GPU Triton gave this instance
            device = f"cuda:{int(args.get('model_instance_device_id', 0))}"
        model = build_video_model(params["sam2_config"], int(params["image_size"]), weights,
                                  device=device)
        max_streams = int(params.get(MAX_STREAMS_PARAMETER, "0")) or None
        self.tracker = StreamingTracker(model, compile=params.get("compile", "false") == "true",
                                        max_streams=max_streams, idle_seconds=self.idle_s)
        self.tracker.warm_up()
        release_freed_memory()  # what building the model freed (see tritonlens.serve.resources)
        self.weights_note = params.get(WEIGHTS_PARAMETER, "")
        self.lock = threading.Lock()
        # The family must outlive its metric (the stub refuses to set an orphaned metric).
        self.streams_family = pb_utils.MetricFamily(
            name="tritonlens_sam2_tracker_streams",
            description="Video streams the SAM 2 tracker holds tracking state for",
            kind=pb_utils.MetricFamily.GAUGE)
        self.streams_gauge = self.streams_family.Metric(labels={"model": self.name})
        self.stop = threading.Event()
        self.sweeper = threading.Thread(target=self._sweep_loop, daemon=True)
        self.sweeper.start()
        pb_utils.Logger.log_info(
            f"{self.name}: SAM 2 tracker ready ({params['sam2_config']}, "
            f"{params['image_size']} px, weights {self.weights_note or 'given'}, "
            f"idle limit {self.idle_s} s, at most {max_streams} streams)")

    def _sweep(self):
        with self.lock:
            evicted = self.tracker.sweep(self.idle_s)
            self.streams_gauge.set(len(self.tracker.streams))
        for stream in evicted:
            pb_utils.Logger.log_warn(f"{self.name}: stream {stream!r} idle for more than "
                                     f"{self.idle_s:g} s: evicted, its tracking state freed")

    def _sweep_loop(self):
        while not self.stop.wait(max(0.2, self.idle_s / 4)):
            self._sweep()

    def _frame(self, request):
        stream = request.correlation_id()
        start = bool(_optional(request, "START").reshape(-1)[0])
        end = bool(_optional(request, "END").reshape(-1)[0])
        embedding = torch.from_numpy(_optional(request, "image_embedding").copy())
        high_res_0 = torch.from_numpy(_optional(request, "high_res_feats_0").copy())
        high_res_1 = torch.from_numpy(_optional(request, "high_res_feats_1").copy())
        size = _optional(request, "orig_size").reshape(-1)
        frame_size = (int(size[0]), int(size[1]))
        prompts = parse_prompts(_optional(request, "point_coords"),
                                _optional(request, "point_labels"),
                                _optional(request, "point_object_ids"), frame_size)
        index = _optional(request, "client_frame_index")
        index = None if index is None else int(index.reshape(-1)[0])
        with self.lock:
            if start:
                self.tracker.start(stream)
            features = self.tracker.features_from_image_embedding(embedding, high_res_0,
                                                                  high_res_1)
            try:
                result = self.tracker.step(stream, features, frame_size, prompts,
                                           frame_index=index)
            finally:
                if end:
                    self.tracker.end(stream)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("object_ids", result.object_ids),
            pb_utils.Tensor("masks", result.masks),
            pb_utils.Tensor("mask_logits", result.mask_logits.astype(np.float32)),
            pb_utils.Tensor("object_scores", result.object_scores.astype(np.float32)),
            pb_utils.Tensor("frame_index", np.array([result.frame_index], dtype=np.int64))])

    def execute(self, requests):
        self._sweep()
        responses = []
        for request in requests:
            try:
                responses.append(self._frame(request))
            except Exception as err:  # one bad request must not fail the others
                responses.append(response_for_exception(pb_utils, self.name, err))
        with self.lock:
            self.streams_gauge.set(len(self.tracker.streams))
        return responses

    def finalize(self):
        self.stop.set()
