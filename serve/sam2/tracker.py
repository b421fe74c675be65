"""The streaming SAM 2 tracker: per-stream state, a bounded memory bank, one step per frame.

SAM 2 (Ravi et al. 2024, "SAM 2: Segment Anything in Images and Videos") tracks an object
through a video by conditioning each frame's image features on a **memory bank**: the
**memory encoder**'s output for the last ``num_maskmem - 1`` frames (6 for the released
configs), the prompted ("conditioning") frames, and the **object pointers** (one 256-d
token per object per frame, from the mask decoder's output token) of the last
``max_obj_ptrs_in_encoder - 1`` frames (15). **Memory attention** fuses them into the
current frame's stride-16 feature, the **mask decoder** predicts the mask, and the memory
encoder turns the (image, mask) pair into the next frame's memory.

sam2's offline ``SAM2VideoPredictor`` loads the whole video up front (``init_state``) and
keeps every frame's outputs, so memory grows with video length and frames cannot be
streamed. :class:`StreamingTracker` runs exactly the same per-frame computation with
sam2's own modules (``SAM2Base.track_step``, ``_encode_new_memory``,
``fill_holes_in_mask_scores``), frame by frame, and keeps only what tracking reads:

* per object, the outputs of the last ``num_maskmem - 1`` frames with their memory
  features, and of the last ``max_obj_ptrs_in_encoder - 1`` frames with only the object
  pointer (everything older is never read by ``_prepare_memory_conditioned_features``);
* the conditioning frames (the object's first prompt, and corrections when the model sets
  ``add_all_frames_to_correct_as_cond``), at most ``max_cond_frames`` per object.

So a stream's state is bounded by the memory-bank size, not by the video's length, and the
results equal the offline predictor's driven frame by frame ("propagate to t-1, add the
prompt at t, propagate from t"; see ``tests/server/test_sam2_track_parity.py``).

Prompt semantics (as ``SAM2VideoPredictor.add_new_points_or_box`` with
``clear_old_points=True`` and the subsequent ``propagate_in_video``):

* a prompt for a **new** object makes this frame its initial conditioning frame: SAM-like
  prediction without memory (``is_init_cond_frame=True``), then the memory encoder on the
  binarised mask (``is_mask_from_pts=True``);
* a prompt for an object that is **already tracked** corrects this frame: the frame is
  tracked normally first, then the mask decoder runs again with the clicks and the first
  result's logits (clamped to +-32) as mask input; the corrected mask is what is returned
  and what goes into memory.

No aliasing across steps: every tensor kept in a stream's state is cloned at the step
boundary (see :meth:`StreamingTracker.step`), so nothing kept can be a view of a buffer a
later run overwrites (CUDA-graph outputs of a compiled module, sam2 issue #460). With
``compile=True`` the memory attention, memory encoder and mask decoder are wrapped with
``torch.compile`` and each step starts with ``torch.compiler.cudagraph_mark_step_begin()``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable

import numpy as np
import torch
import torch.nn.functional as F

from tritonlens.serve.errors import RequestError
from tritonlens.serve.sam2.prompts import MAX_OBJECTS_PER_STREAM, PromptError, group_prompts

log = logging.getLogger("tritonlens.sam2.tracker")

# SAM2VideoPredictor.add_new_points_or_box / propagate_in_video: the previous mask logits
# fed back with corrective clicks are clamped to [-32, 32]; masks are logits > 0.
PREV_LOGITS_CLAMP = 32.0
MASK_THRESHOLD = 0.0
# SAM 2's temporal scale ``num_frames`` for live streams: any value >= 16 gives the same
# results (it caps the object-pointer window at max_obj_ptrs_in_encoder = 16 and stops the
# pointer loop at frame indices >= num_frames, which a stream never reaches with this).
STREAM_NUM_FRAMES = 2 ** 62


class TrackerError(RequestError):
    """A request the tracker refuses; the message is meant for the client (INVALID_ARG)."""


class UnknownStreamError(TrackerError):
    """A frame for a stream that has no state (never started, ended, or evicted as idle)."""


class StreamLimitError(TrackerError):
    """A START beyond ``max_streams`` streams with state."""


class FrameOrderError(TrackerError):
    """A frame whose index is not the stream's next one (out of order or a duplicate)."""


@dataclass(frozen=True)
class FrameFeatures:
    """The image encoder's output for one frame (S = model image size, E = S / 16).

    Attributes:
        vision_features: fp32 [1, 256, E, E], the stride-16 FPN level **without**
            ``no_mem_embed`` (``backbone_fpn[-1]`` of ``SAM2Base.forward_image``).
        high_res_0: fp32 [1, 32, 4E, 4E], stride 4, after the mask decoder's ``conv_s0``.
        high_res_1: fp32 [1, 64, 2E, 2E], stride 8, after ``conv_s1``.
    """

    vision_features: torch.Tensor
    high_res_0: torch.Tensor
    high_res_1: torch.Tensor


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompt for one object on one frame, in pixels of the frame.

    Attributes:
        coords: fp32 [P, 2], (x, y) pixels; a box is two points labelled 2 and 3.
        labels: int32 [P], values 0-3 (``prompts.LABELS``); box corners come first.
    """

    coords: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class FrameResult:
    """What one step returns for one frame (K objects, H x W the frame's size).

    Attributes:
        frame_index: the frame's index in its stream (0 for the START frame).
        object_ids: int32 [K], the client's object IDs, in the order objects were added.
        mask_logits: fp32 [K, H, W], mask logits bilinearly upscaled to the frame's size
            (``SAM2VideoPredictor._get_orig_video_res_output``).
        masks: bool [K, H, W], ``mask_logits > 0``.
        object_scores: fp32 [K], the object-score logits (> 0: object visible).
    """

    frame_index: int
    object_ids: np.ndarray
    mask_logits: np.ndarray
    masks: np.ndarray
    object_scores: np.ndarray


@dataclass
class _ObjectState:
    """One object's memory bank: sam2's per-object ``output_dict``."""

    cond: dict = field(default_factory=dict)       # frame -> out ("cond_frame_outputs")
    non_cond: dict = field(default_factory=dict)   # frame -> out ("non_cond_frame_outputs")

    def output_dict(self) -> dict:
        return {"cond_frame_outputs": self.cond, "non_cond_frame_outputs": self.non_cond}


@dataclass
class _StreamState:
    objects: "OrderedDict[int, _ObjectState]" = field(default_factory=OrderedDict)
    next_frame: int = 0
    last_seen: float = 0.0


def parse_prompts(coords: np.ndarray | None, labels: np.ndarray | None,
                  object_ids: np.ndarray | None,
                  frame_size: tuple[int, int]) -> "OrderedDict[int, ObjectPrompt]":
    """Check one frame's prompts and group them by object: object ID -> :class:`ObjectPrompt`.

    Args:
        coords: fp32 [P, 2] (x, y) pixels of the frame, or None / P = 0 for no prompt.
        labels: int32 [P], 1 foreground, 0 background, 2/3 box corners.
        object_ids: int32 [P], the client's object ID of each point, or None (all
            ``prompts.DEFAULT_OBJECT_ID``).
        frame_size: (height, width) of the frame in pixels.

    The checks and limits are those of the image path (``tritonlens.serve.sam2.prompts``);
    a box is moved before its object's clicks, as ``add_new_points_or_box`` places it.

    Raises:
        PromptError: from :func:`tritonlens.serve.sam2.prompts.group_prompts`.
    """
    return OrderedDict(
        (obj, ObjectPrompt(torch.from_numpy(c), torch.from_numpy(lab)))
        for obj, (c, lab) in group_prompts(coords, labels, object_ids, frame_size).items())


class StreamingTracker:
    """SAM 2 video tracking over many independent streams, one frame per call.

    Args:
        model: a ``SAM2VideoPredictor`` (built by ``build_sam2_video_predictor``, which sets
            ``fill_hole_area``, ``binarize_mask_from_pts_for_mem_enc`` and the stability
            fallback exactly as the offline predictor runs), in eval mode.
        num_frames: SAM 2's ``num_frames`` (temporal scale of the object pointers). Leave
            the default for live streams; give a clip's length to reproduce the offline
            predictor on a clip shorter than 16 frames.
        max_cond_frames: conditioning frames kept per object (the first prompt is always
            kept). Only reached when the model adds corrections as conditioning frames
            (``add_all_frames_to_correct_as_cond``); past it the oldest correction is
            dropped, where the offline predictor would keep attending to all of them.
        compile: wrap memory attention (``dynamic=True``: the memory length varies), the
            memory encoder and the mask decoder in ``torch.compile`` (meant for GPU hosts),
            and mark each step with ``torch.compiler.cudagraph_mark_step_begin()``.
        max_streams: most streams with state at once; a START beyond it raises
            :class:`StreamLimitError` (None: no limit).
        idle_seconds: the idle limit :meth:`sweep` is run with (named in the errors; the
            model's sweep passes it); None when streams are not swept.
        max_objects: most objects one stream tracks (``MAX_OBJECTS_PER_STREAM``).

    Errors: :meth:`step` raises :class:`UnknownStreamError`, :class:`FrameOrderError` or
    :class:`PromptError` without touching any stream's state.
    """

    # Evicted stream IDs remembered so that their next frame is told why (bounded).
    EVICTED_MEMORY = 4096

    def __init__(self, model, *, num_frames: int = STREAM_NUM_FRAMES, max_cond_frames: int = 16,
                 compile: bool = False, max_streams: int | None = None,
                 idle_seconds: float | None = None, max_objects: int = MAX_OBJECTS_PER_STREAM):
        self.model = model
        self.device = next(model.parameters()).device
        self.image_size = int(model.image_size)
        self.num_frames = int(num_frames)
        self.max_cond_frames = max(1, int(max_cond_frames))
        self.compile = bool(compile)
        # Memory bank windows (SAM2Base._prepare_memory_conditioned_features): memories of
        # frames t-1 .. t-(num_maskmem-1); object pointers of t-1 .. t-(max_ptrs-1).
        self.mem_window = max(1, model.num_maskmem - 1) * model.memory_temporal_stride_for_eval
        self.ptr_window = max(1, min(self.num_frames, model.max_obj_ptrs_in_encoder) - 1)
        self.streams: dict[Hashable, _StreamState] = {}
        self.max_streams = max_streams
        self.idle_seconds = idle_seconds
        self.max_objects = int(max_objects)
        self.evicted: OrderedDict[Hashable, float] = OrderedDict()  # stream -> idle seconds
        embed = self.image_size // 16
        neck = model.image_encoder.neck
        with torch.inference_mode():
            # The FPN neck's sine position encodings depend only on the feature shapes:
            # computed once (fresh tensors, never a compiled graph's output buffer).
            self.pos_embeds = [
                neck.position_encoding(torch.zeros(1, neck.d_model, embed * s, embed * s,
                                                   device=self.device)).clone()
                .flatten(2).permute(2, 0, 1)
                for s in (4, 2, 1)]
        self.feat_sizes = [(embed * 4, embed * 4), (embed * 2, embed * 2), (embed, embed)]
        self.no_mem_embed = model.no_mem_embed.detach().reshape(1, -1, 1, 1).clone()
        if self.compile:
            model.memory_attention = torch.compile(model.memory_attention, dynamic=True)
            model.memory_encoder = torch.compile(model.memory_encoder, dynamic=False)
            model.sam_mask_decoder = torch.compile(model.sam_mask_decoder, dynamic=False)

    # -- features -----------------------------------------------------------------------
    def features_from_image_embedding(self, image_embedding: torch.Tensor,
                                      high_res_0: torch.Tensor,
                                      high_res_1: torch.Tensor) -> FrameFeatures:
        """Recover the raw stride-16 feature from ``sam2_image_encoder``'s output.

        ``sam2_image_encoder`` returns the image predictor's embedding, the stride-16 FPN
        level plus ``no_mem_embed`` (``directly_add_no_mem_embed``); the tracker needs the
        level itself, so the constant is subtracted. In fp32 that is exact up to one
        rounding of the sum: |error| <= ulp(|feature + no_mem_embed|) / 2 (about 6e-8
        relative), far below the tolerances the parity tests use.
        """
        raw = image_embedding - self.no_mem_embed.to(image_embedding.dtype)
        return FrameFeatures(raw, high_res_0, high_res_1)

    def _vision(self, features: FrameFeatures):
        maps = (features.high_res_0, features.high_res_1, features.vision_features)
        feats = [m.to(self.device, torch.float32).flatten(2).permute(2, 0, 1) for m in maps]
        return feats, self.pos_embeds, self.feat_sizes

    def warm_up(self) -> None:
        """Run two steps (a prompted frame, then a tracked one) on zero features of a
        private stream and drop it, so the first real frame does not pay for lazy
        initialisation (or compilation with ``compile=True``)."""
        e = self.image_size // 16
        zeros = FrameFeatures(torch.zeros(1, 256, e, e), torch.zeros(1, 32, 4 * e, 4 * e),
                              torch.zeros(1, 64, 2 * e, 2 * e))
        stream = object()
        self.start(stream)
        prompt = ObjectPrompt(torch.tensor([[8.0, 8.0]]), torch.tensor([1], dtype=torch.int32))
        try:
            self.step(stream, zeros, (16, 16), OrderedDict([(1, prompt)]))
            self.step(stream, zeros, (16, 16))
        finally:
            self.end(stream)

    # -- stream lifecycle ---------------------------------------------------------------
    def start(self, stream: Hashable) -> None:
        """Start (or restart: a repeated START resets) ``stream`` with no objects.

        Raises:
            StreamLimitError: ``max_streams`` other streams have state.
        """
        if stream in self.streams:
            log.info("stream %r restarted: its previous state was dropped", stream)
        elif self.max_streams is not None and len(self.streams) >= self.max_streams:
            idle = (f"idle streams are evicted after {self.idle_seconds:g} s"
                    if self.idle_seconds else "streams are freed by their END frame")
            raise StreamLimitError(
                f"{len(self.streams)} streams active (limit {self.max_streams}); {idle}: "
                f"end a stream (END flag) or retry later")
        self.evicted.pop(stream, None)
        self.streams[stream] = _StreamState(last_seen=time.monotonic())

    def end(self, stream: Hashable) -> bool:
        """Free ``stream``'s state; False when it had none."""
        return self.streams.pop(stream, None) is not None

    def sweep(self, idle_seconds: float, now: float | None = None) -> list:
        """Free the state of streams not seen for more than ``idle_seconds``; returns their
        IDs. (Triton evicts idle sequences without telling the model.)"""
        now = time.monotonic() if now is None else now
        stale = [s for s, st in self.streams.items() if now - st.last_seen > idle_seconds]
        for s in stale:
            del self.streams[s]
            self.evicted[s] = idle_seconds
            if len(self.evicted) > self.EVICTED_MEMORY:
                self.evicted.popitem(last=False)
        return stale

    def __contains__(self, stream: Hashable) -> bool:
        return stream in self.streams

    # -- one frame ----------------------------------------------------------------------
    def step(self, stream: Hashable, features: FrameFeatures, frame_size: tuple[int, int],
             prompts: "OrderedDict[int, ObjectPrompt] | None" = None, *,
             frame_index: int | None = None) -> FrameResult:
        """Track every object of ``stream`` on its next frame; apply this frame's prompts.

        Args:
            stream: the stream's ID (Triton's correlation ID).
            features: the frame's image-encoder output (:class:`FrameFeatures`).
            frame_size: (height, width) of the frame in pixels: the output size, and the
                space of the prompts' coordinates.
            prompts: object ID -> :class:`ObjectPrompt` (see :func:`parse_prompts`).
            frame_index: the client's index of this frame; when given it must be the
                stream's next index (0 after START).

        Returns: :class:`FrameResult`.

        Raises:
            UnknownStreamError: no state for ``stream``.
            FrameOrderError: ``frame_index`` is not the next index.
            PromptError: more than ``max_objects`` objects for the stream (the prompts
                themselves are checked by :func:`parse_prompts`).
        """
        state = self.streams.get(stream)
        if state is None and stream in self.evicted:
            raise UnknownStreamError(
                f"stream {stream!r} was evicted after being idle for more than "
                f"{self.evicted[stream]:g} s and its tracking state freed: start the stream "
                "again (send a frame with the START flag)")
        if state is None:
            raise UnknownStreamError(
                f"stream {stream!r} has no tracking state (never started, ended, or evicted "
                "after being idle): send its first frame again with the START flag")
        t = state.next_frame
        if frame_index is not None and int(frame_index) != t:
            what = "a duplicate or an earlier frame" if frame_index < t else "a frame ahead"
            raise FrameOrderError(f"stream {stream!r} expects frame {t}, got frame "
                                  f"{int(frame_index)} ({what}); frames must arrive in order")
        height, width = int(frame_size[0]), int(frame_size[1])
        if height <= 0 or width <= 0:
            raise TrackerError(f"frame size must be positive, not {height}x{width}")
        prompts = prompts or OrderedDict()
        objects = len(state.objects) + sum(o not in state.objects for o in prompts)
        if objects > self.max_objects:
            raise PromptError(f"stream {stream!r} would track {objects} objects: at most "
                              f"{self.max_objects} per stream")
        if self.compile:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            feats, pos, sizes = self._vision(features)
            low_res: dict[int, torch.Tensor] = {}
            scores: dict[int, torch.Tensor] = {}
            new_outputs: dict[int, tuple[str, dict]] = {}
            for obj_id, obj in state.objects.items():
                out, pred = self._track(t, feats, pos, sizes, obj, None, False,
                                        run_mem_encoder=obj_id not in prompts)
                key = "non_cond"
                if obj_id in prompts:  # a corrective click on a tracked object
                    prev = torch.clamp(pred, -PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
                    out, pred = self._track(t, feats, pos, sizes, obj,
                                            self._points(prompts[obj_id], height, width),
                                            False, run_mem_encoder=False, prev_logits=prev)
                    self._memory_from_points(out, pred, feats, sizes)
                    if self.model.add_all_frames_to_correct_as_cond:
                        key = "cond"
                new_outputs[obj_id] = (key, out)
                low_res[obj_id], scores[obj_id] = pred, out["object_score_logits"]
            for obj_id, prompt in prompts.items():
                if obj_id in state.objects:
                    continue
                obj = _ObjectState()
                out, pred = self._track(t, feats, pos, sizes, obj,
                                        self._points(prompt, height, width), True,
                                        run_mem_encoder=False)
                self._memory_from_points(out, pred, feats, sizes)
                new_outputs[obj_id] = ("cond", out)
                low_res[obj_id], scores[obj_id] = pred, out["object_score_logits"]
            order = list(state.objects) + [o for o in prompts if o not in state.objects]
            if order:
                logits = torch.cat([low_res[o] for o in order], dim=0)
                video = F.interpolate(logits.float(), size=(height, width), mode="bilinear",
                                      align_corners=False)[:, 0]
                object_scores = torch.cat([scores[o].reshape(1) for o in order]).float()
            else:
                video = torch.zeros(0, height, width)
                object_scores = torch.zeros(0)
        # Commit: only now is the stream's state changed (any error above left it as it was).
        for obj_id, (key, out) in new_outputs.items():
            obj = state.objects.setdefault(obj_id, _ObjectState())
            getattr(obj, key)[t] = self._keep(out)
            self._prune(obj, t)
        state.next_frame = t + 1
        state.last_seen = time.monotonic()
        video_np = video.cpu().numpy()
        return FrameResult(t, np.asarray(order, dtype=np.int32), video_np,
                           video_np > MASK_THRESHOLD, object_scores.cpu().numpy())

    # -- internals ----------------------------------------------------------------------
    def _points(self, prompt: ObjectPrompt, height: int, width: int) -> dict:
        """Pixels -> the model's S x S space, as add_new_points_or_box(normalize_coords=True)."""
        points = prompt.coords.reshape(1, -1, 2).to(torch.float32)
        points = points / torch.tensor([width, height])
        points = points * self.image_size
        return {"point_coords": points.to(self.device),
                "point_labels": prompt.labels.reshape(1, -1).to(torch.int32).to(self.device)}

    def _track(self, t, feats, pos, sizes, obj: _ObjectState, point_inputs, is_init: bool, *,
               run_mem_encoder: bool, prev_logits=None):
        """``SAM2Base.track_step`` + hole filling, as ``_run_single_frame_inference``."""
        from sam2.utils.misc import fill_holes_in_mask_scores

        out = self.model.track_step(
            frame_idx=t, is_init_cond_frame=is_init, current_vision_feats=feats,
            current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=point_inputs,
            mask_inputs=None, output_dict=obj.output_dict(), num_frames=self.num_frames,
            track_in_reverse=False, run_mem_encoder=run_mem_encoder,
            prev_sam_mask_logits=prev_logits)
        pred = out["pred_masks"]
        if self.model.fill_hole_area > 0:
            pred = fill_holes_in_mask_scores(pred, self.model.fill_hole_area)
        out["pred_masks"] = pred
        return out, pred

    def _memory_from_points(self, out: dict, pred, feats, sizes) -> None:
        """Memory of a prompted frame, as ``propagate_in_video_preflight`` encodes it: the
        hole-filled low-res logits upscaled to S x S, binarised (``is_mask_from_pts``)."""
        high_res = F.interpolate(pred, size=(self.image_size, self.image_size),
                                 mode="bilinear", align_corners=False)
        out["maskmem_features"], out["maskmem_pos_enc"] = self.model._encode_new_memory(
            current_vision_feats=feats, feat_sizes=sizes, pred_masks_high_res=high_res,
            object_score_logits=out["object_score_logits"], is_mask_from_pts=True)

    def _keep(self, out: dict) -> dict:
        """The compact output kept in the memory bank, cloned (no aliasing across steps).

        As ``_run_single_frame_inference`` stores it: memory features in bfloat16; the
        memory's position encoding is the same for every frame and object, so one shared
        constant is kept (cloned once) instead of a copy per frame.
        """
        pos = out["maskmem_pos_enc"]
        if not hasattr(self, "_maskmem_pos_enc"):
            self._maskmem_pos_enc = [p[0:1].clone() for p in pos]
        return {"maskmem_features": out["maskmem_features"].to(torch.bfloat16).clone(),
                "maskmem_pos_enc": self._maskmem_pos_enc,
                "pred_masks": None,
                "obj_ptr": out["obj_ptr"].clone(),
                "object_score_logits": out["object_score_logits"].clone()}

    def _prune(self, obj: _ObjectState, t: int) -> None:
        """Drop what frame t+1 and later can no longer read (the bounded memory bank)."""
        for frame in list(obj.non_cond):
            age = t - frame  # frame t+1 reads memories of t .. t+1-mem_window
            if age >= self.ptr_window:
                del obj.non_cond[frame]
            elif age >= self.mem_window and obj.non_cond[frame]["maskmem_features"] is not None:
                obj.non_cond[frame] = {**obj.non_cond[frame], "maskmem_features": None}
        if len(obj.cond) > self.max_cond_frames:
            frames = sorted(obj.cond)
            for frame in frames[1:len(frames) - self.max_cond_frames + 1]:
                del obj.cond[frame]

    # -- measurement --------------------------------------------------------------------
    def state_bytes(self, stream: Hashable | None = None) -> int:
        """Bytes of tensors held in the state of ``stream`` (all streams when None); the
        shared memory position encoding is not counted (one copy per tracker)."""
        streams = [self.streams[stream]] if stream is not None else list(self.streams.values())
        total = 0
        for st in streams:
            for obj in st.objects.values():
                for outputs in (obj.cond, obj.non_cond):
                    for out in outputs.values():
                        for key in ("maskmem_features", "obj_ptr", "object_score_logits",
                                    "pred_masks"):
                            value = out.get(key)
                            if isinstance(value, torch.Tensor):
                                total += value.numel() * value.element_size()
        return total
