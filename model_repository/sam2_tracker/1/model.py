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
2/3 box corners), ``point_object_ids`` INT32 [P], ``frame_index`` INT64 [1].
Outputs (K objects): ``object_ids`` INT32 [K], ``masks`` BOOL [K, H, W], ``mask_logits``
FP32 [K, H, W], ``object_scores`` FP32 [K], ``frame_index`` INT64 [1].

State: START resets the stream (a repeated START too); END frees it after the frame;
streams idle longer than the sequence batcher's ``max_sequence_idle_microseconds`` (which
Triton evicts without telling the model) are freed by a sweep, on every ``execute`` and
from a timer thread, and logged.
"""

import json
import threading

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from tritonlens.serve.sam2 import (StreamingTracker, TrackerError, build_video_model,
                                   parse_prompts)

OUTPUTS = ("object_ids", "masks", "mask_logits", "object_scores", "frame_index")


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.name = config["name"]
        torch.set_num_threads(int(params.get("threads", "1")))
        weights = f"{args['model_repository']}/{args['model_version']}/{params['weights_file']}"
        device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        model = build_video_model(params["sam2_config"], int(params["image_size"]), weights,
                                  device=device)
        self.tracker = StreamingTracker(model, compile=params.get("compile", "false") == "true")
        self.tracker.warm_up()
        self.weights_note = params.get("tritonlens.weights", "")
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 0))
        self.idle_s = idle_us / 1e6 if idle_us > 0 else None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if self.idle_s:
            self.sweeper = threading.Thread(target=self._sweep_loop, daemon=True)
            self.sweeper.start()
        pb_utils.Logger.log_info(
            f"{self.name}: SAM 2 tracker ready ({params['sam2_config']}, "
            f"{params['image_size']} px, weights {self.weights_note or 'given'}, "
            f"idle limit {self.idle_s} s)")

    def _sweep(self):
        if not self.idle_s:
            return
        with self.lock:
            # Triton's idle timer starts at the last request; ours at the last response,
            # a little later: it frees state no earlier than Triton evicts the sequence.
            evicted = self.tracker.sweep(self.idle_s)
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
        ready = _optional(request, "READY")
        if ready is not None and not bool(ready.reshape(-1)[0]):
            raise TrackerError("padding slot (READY=0)")
        embedding = torch.from_numpy(_optional(request, "image_embedding").copy())
        high_res_0 = torch.from_numpy(_optional(request, "high_res_feats_0").copy())
        high_res_1 = torch.from_numpy(_optional(request, "high_res_feats_1").copy())
        size = _optional(request, "orig_size").reshape(-1)
        prompts = parse_prompts(_optional(request, "point_coords"),
                                _optional(request, "point_labels"),
                                _optional(request, "point_object_ids"))
        index = _optional(request, "frame_index")
        index = None if index is None else int(index.reshape(-1)[0])
        with self.lock:
            if start:
                self.tracker.start(stream)
            features = self.tracker.features_from_image_embedding(embedding, high_res_0,
                                                                  high_res_1)
            try:
                result = self.tracker.step(stream, features, (int(size[0]), int(size[1])),
                                           prompts, frame_index=index)
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
            except TrackerError as err:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{self.name}: {err}")))
            except Exception as err:  # one bad request must not fail the others
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{self.name}: {type(err).__name__}: {err}")))
        return responses

    def finalize(self):
        self.stop.set()
