"""SAM 2 video tracking, streamed one frame at a time (the core of the ``sam2_tracker`` model).

Pure torch over sam2's own modules; importable and testable without Triton.
"""

from tritonlens.serve.sam2.build import build_video_model, tracker_state_dict
from tritonlens.serve.sam2.frames import FrameError, decode_frame, frame_pixels
from tritonlens.serve.sam2.tracker import (
    FrameFeatures, FrameOrderError, FrameResult, ObjectPrompt, PromptError, StreamingTracker,
    TrackerError, UnknownStreamError, parse_prompts)

__all__ = ["build_video_model", "tracker_state_dict", "FrameError", "decode_frame",
           "frame_pixels", "FrameFeatures", "FrameOrderError", "FrameResult", "ObjectPrompt",
           "PromptError", "StreamingTracker", "TrackerError", "UnknownStreamError",
           "parse_prompts"]
