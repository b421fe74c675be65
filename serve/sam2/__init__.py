"""SAM 2 video tracking, streamed one frame at a time (the core of the ``sam2_tracker`` model),
and the prompt validator shared by the image and video paths (:mod:`.prompts`).

Pure torch over sam2's own modules; importable and testable without Triton. Names are
imported lazily (PEP 562), so ``tritonlens.serve.sam2.prompts`` (numpy only, used by the
``sam2_prompts`` model) does not pull torch and sam2 into its process.
"""

import importlib

_NAMES = {
    "build_video_model": "build", "tracker_state_dict": "build",
    "FrameError": "frames", "decode_frame": "frames", "frame_pixels": "frames",
    "FrameFeatures": "tracker", "FrameOrderError": "tracker", "FrameResult": "tracker",
    "ObjectPrompt": "tracker", "StreamingTracker": "tracker", "StreamLimitError": "tracker",
    "TrackerError": "tracker", "UnknownStreamError": "tracker", "parse_prompts": "tracker",
    "PromptError": "prompts",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
